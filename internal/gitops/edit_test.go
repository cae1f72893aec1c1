package gitops

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rollback-dev/rollback/internal/image"
)

func mustRef(t testing.TB, s string) image.Ref {
	t.Helper()
	r, err := image.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Exactly the fields naming the bad image change; every other byte
// (comments, quoting, other images, other documents) stays.
func TestEditImages(t *testing.T) {
	for _, tc := range []struct {
		name, bad, good, in, want string
		edits                     int
	}{
		{"manifest", "registry.local:5000/shop/web:v1.2.0", "registry.local:5000/shop/web:v1.1.5",
			"apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: web # the app\n        image: registry.local:5000/shop/web:v1.2.0\n      - name: proxy\n        image: envoy:v1.2.0\n",
			"apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: web # the app\n        image: registry.local:5000/shop/web:v1.1.5\n      - name: proxy\n        image: envoy:v1.2.0\n", 1},
		{"manifest quoted, second document", "web:v1.2.0", "web:v1.1.5",
			"kind: Service\n---\n# ünïcode before\nspec: {containers: [{name: a, image: \"web:v1.2.0\"}, {name: b, image: 'docker.io/library/web:v1.2.0'}]}\n",
			"kind: Service\n---\n# ünïcode before\nspec: {containers: [{name: a, image: \"web:v1.1.5\"}, {name: b, image: 'docker.io/library/web:v1.1.5'}]}\n", 2},
		{"digest", "ghcr.io/acme/web@sha256:" + strings.Repeat("b", 64), "ghcr.io/acme/web@sha256:" + strings.Repeat("a", 64),
			"image: ghcr.io/acme/web@sha256:" + strings.Repeat("b", 64) + "\n",
			"image: ghcr.io/acme/web@sha256:" + strings.Repeat("a", 64) + "\n", 1},
		{"kustomize images", "registry.local:5000/shop/web:v1.2.0", "registry.local:5000/shop/web:v1.1.5",
			"resources: [deployment.yaml]\nimages:\n- name: web\n  newName: registry.local:5000/shop/web\n  newTag: v1.2.0 # released 2026-12-01\n- name: other\n  newTag: v1.2.0\n",
			"resources: [deployment.yaml]\nimages:\n- name: web\n  newName: registry.local:5000/shop/web\n  newTag: v1.1.5 # released 2026-12-01\n- name: other\n  newTag: v1.2.0\n", 1},
		{"helm values", "registry.local:5000/shop/web:v1.2.0", "registry.local:5000/shop/web:v1.1.5",
			"replicaCount: 3\nimage:\n  repository: registry.local:5000/shop/web\n  tag: \"v1.2.0\"\n  pullPolicy: IfNotPresent\nsidecar:\n  repository: busybox\n  tag: v1.2.0\n",
			"replicaCount: 3\nimage:\n  repository: registry.local:5000/shop/web\n  tag: \"v1.1.5\"\n  pullPolicy: IfNotPresent\nsidecar:\n  repository: busybox\n  tag: v1.2.0\n", 1},
		{"a port is not a tag", "registry.local:5000/web:v1.2.0", "registry.local:5000/web:v1.1.5",
			"image: registry.local:5000/web\n", "image: registry.local:5000/web\n", 0},
		{"nothing to do", "web:v1.2.0", "web:v1.1.5", "image: web:v1.1.5\n", "image: web:v1.1.5\n", 0},
		{"a tag that reads as a number is quoted", "web:1.11", "web:1.10", "image:\n  repository: web\n  tag: 1.11\n", "image:\n  repository: web\n  tag: \"1.10\"\n", 1},
		{"kustomize digest beside the tag follows it", "web:v2@sha256:" + strings.Repeat("b", 64), "web:v1@sha256:" + strings.Repeat("a", 64),
			"images:\n- name: web\n  newTag: v2\n  digest: sha256:" + strings.Repeat("b", 64) + "\n",
			"images:\n- name: web\n  newTag: v1\n  digest: sha256:" + strings.Repeat("a", 64) + "\n", 2},
	} {
		got, edits, err := EditImages("f.yaml", []byte(tc.in), mustRef(t, tc.bad), mustRef(t, tc.good))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if string(got) != tc.want || len(edits) != tc.edits {
			t.Errorf("%s: got %d edits %v\n%s\nwant %d\n%s", tc.name, len(edits), edits, got, tc.edits, tc.want)
		}
	}
	for _, tc := range []struct{ name, bad, good, in, want string }{
		{"broken YAML", "web:v2", "web:v1", "a: [\n", "bad.yaml: not YAML"},
		// A digest the good image lacks cannot be emptied in place: the
		// bad bits would still be pulled.
		{"digest without a good digest", "web:v2@sha256:" + strings.Repeat("b", 64), "web:v1",
			"images:\n- name: web\n  newTag: v2\n  digest: sha256:" + strings.Repeat("b", 64) + "\n", "digest sha256:bbbb"},
		{"an anchor before the tag", "web:v2", "web:v1", "image:\n  repository: web\n  tag: &t v2\n", "edit by hand"},
	} {
		if _, _, err := EditImages("bad.yaml", []byte(tc.in), mustRef(t, tc.bad), mustRef(t, tc.good)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// Whatever the file, an edit either fails or yields YAML in which the bad
// image's fields now name the good one and nothing else moved: re-reading
// the output finds no field left to edit.
func FuzzEditImages(f *testing.F) {
	for _, s := range []string{"image: web:v2\n", "images:\n- name: web\n  newTag: v2\n", "image:\n  repository: web\n  tag: 'v2'\n",
		"a: \"image: web:v2\"\nimage: \"web:v2\" # c\n", "- {image: web:v2, x: [1, 2]}\n---\nimage: web:v2\n", "k: |\n  image: web:v2\n"} {
		f.Add(s)
	}
	bad, good := mustRef(f, "web:v2"), mustRef(f, "web:v1")
	f.Fuzz(func(t *testing.T, in string) {
		out, edits, err := EditImages("f.yaml", []byte(in), bad, good)
		if err != nil {
			return
		}
		if len(edits) == 0 {
			if string(out) != in {
				t.Fatalf("no edits but the file changed:\n%q\n%q", in, out)
			}
			return
		}
		var v any
		if err := yaml.Unmarshal(out, &v); err != nil {
			t.Fatalf("edited output is not YAML: %v\n%q", err, out)
		}
		again, more, err := EditImages("f.yaml", out, bad, good)
		if err != nil || len(more) != 0 || string(again) != string(out) {
			t.Fatalf("a second edit found more: %v %v\n%q", more, err, out)
		}
	})
}
