package gitops

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/rollback-dev/rollback/internal/kube/kubetest"
)

// Where each owner reads Git, from its own objects; what it cannot say
// (a tag, HEAD, an OCI source) is an error naming the rollback.yaml field.
func TestFindSource(t *testing.T) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git-push", Namespace: "flux-system"}, Data: map[string][]byte{"username": []byte("bot"), "password": []byte("s3cret")}}
	cs, _ := kubetest.Clients(t, fake.NewClientset(secret), `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: shop}
spec: {path: ./deploy/prod, sourceRef: {kind: GitRepository, name: fleet, namespace: flux-system}}
status: {lastAppliedRevision: "main@sha1:aaa"}
`, `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: flux-system}
spec: {url: "https://git.example.com/fleet.git", ref: {branch: main}, secretRef: {name: git-push}}
status: {artifact: {revision: "main@sha1:bbb"}}
`, `apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web, namespace: shop}
spec: {chart: {spec: {chart: ./charts/web, reconcileStrategy: Revision, sourceRef: {kind: GitRepository, name: charts}}}}
`, `apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: versioned, namespace: shop}
spec: {chart: {spec: {chart: ./charts/web, sourceRef: {kind: GitRepository, name: charts}}}}
`, `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: charts, namespace: shop}
spec: {url: "https://git.example.com/charts.git"}
`, `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: oci, namespace: shop}
spec: {path: ./, sourceRef: {kind: OCIRepository, name: app}}
`, `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: tagged, namespace: shop}
spec: {path: ./, sourceRef: {kind: GitRepository, name: tagged}}
`, `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: tagged, namespace: shop}
spec: {url: "https://git.example.com/x.git", ref: {tag: v1.2.0}}
`, `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web, namespace: argocd}
spec: {source: {repoURL: "https://git.example.com/apps.git", targetRevision: release, path: web}}
status: {sync: {revision: ccc}}
`, `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: head, namespace: argocd}
spec: {source: {repoURL: "https://git.example.com/apps.git", targetRevision: HEAD, path: web}}
`)
	ctx := context.Background()
	for _, tc := range []struct {
		owner Owner
		want  Source
		err   string
	}{
		{Owner{Tool: "flux", Kind: "Kustomization", Namespace: "shop", Name: "apps"},
			Source{Repo: Repo{URL: "https://git.example.com/fleet.git", Branch: "main", Path: "./deploy/prod"}, GitRepository: "flux-system/fleet", SecretRef: "flux-system/git-push"}, ""},
		{Owner{Tool: "flux", Kind: "HelmRelease", Namespace: "shop", Name: "web"},
			Source{Repo: Repo{URL: "https://git.example.com/charts.git", Branch: "master", Path: "./charts/web"}, GitRepository: "shop/charts"}, ""},
		{Owner{Tool: "argocd", Kind: "Application", Namespace: "argocd", Name: "web"},
			Source{Repo: Repo{URL: "https://git.example.com/apps.git", Branch: "release", Path: "web"}}, ""},
		{Owner{Tool: "flux", Kind: "Kustomization", Namespace: "shop", Name: "oci"}, Source{}, "reads a OCIRepository, not Git: set gitops.repo"},
		{Owner{Tool: "flux", Kind: "HelmRelease", Namespace: "shop", Name: "versioned"}, Source{}, "reconcileStrategy ChartVersion: an edited values file is not picked up"},
		{Owner{Tool: "flux", Kind: "Kustomization", Namespace: "shop", Name: "tagged"}, Source{}, "tracks a tag, semver or commit, not a branch"},
		{Owner{Tool: "argocd", Kind: "Application", Namespace: "argocd", Name: "head"}, Source{}, `tracks "HEAD", not a branch: set gitops.branch`},
	} {
		got, err := FindSource(ctx, cs, tc.owner)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: got %+v, %v; want an error with %q", tc.owner, got, err, tc.err)
			}
			continue
		}
		if err != nil || *got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.owner, got, err, tc.want)
		}
	}
	auth, err := SecretAuth(ctx, cs, "flux-system/git-push")
	if err != nil || auth != (Auth{Username: "bot", Password: "s3cret"}) {
		t.Errorf("secret auth: %+v %v", auth, err)
	}
	src, _ := FindSource(ctx, cs, Owner{Tool: "flux", Kind: "Kustomization", Namespace: "shop", Name: "apps"})
	rev, err := ReadRevisions(ctx, cs, Owner{Tool: "flux", Kind: "Kustomization", Namespace: "shop", Name: "apps"}, src)
	if err != nil || rev != (Revisions{Source: "main@sha1:bbb", Applied: "main@sha1:aaa"}) || Commit(rev.Source) != "bbb" {
		t.Errorf("revisions: %+v %v", rev, err)
	}
}

// Refused reading where the reconciler reads Git: a failure naming the
// rule to grant, never "not managed".
func TestFindSourceForbiddenNamesTheRule(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "/kustomizations/") {
			fmt.Fprint(w, `{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{"name":"apps","namespace":"shop"},"spec":{"path":"./","sourceRef":{"kind":"GitRepository","name":"fleet"}}}`)
			return
		}
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"gitrepositories.source.toolkit.fluxcd.io \"fleet\" is forbidden"}`)
	}))
	defer api.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = FindSource(context.Background(), cs, Owner{Tool: "flux", Kind: "Kustomization", Namespace: "shop", Name: "apps"})
	if err == nil || !strings.Contains(err.Error(), "grant get on gitrepositories.source.toolkit.fluxcd.io in namespace shop") {
		t.Errorf("got %v, want a failure naming the rule", err)
	}
}

func TestApplied(t *testing.T) {
	h := "0eee7c4ad95c1234567890abcdef1234567890ab"
	for _, tc := range []struct {
		applied, source string
		want            bool
	}{
		{"main@sha1:" + h, "main@sha1:" + h, true},
		{h, h, true},
		{"0.1.0+0eee7c4ad95c", "main@sha1:" + h, true},
		{"0.1.0+1eee7c4ad95c", "main@sha1:" + h, false},
		{"0.1.0", "main@sha1:" + h, false},
		{"", "main@sha1:" + h, false},
	} {
		if got := Applied(tc.applied, tc.source); got != tc.want {
			t.Errorf("Applied(%q, %q) = %v, want %v", tc.applied, tc.source, got, tc.want)
		}
	}
}
