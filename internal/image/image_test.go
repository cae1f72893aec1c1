package image

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		in, name, canonical, tag, digest, version string
	}{
		{"registry.local/transaction-service:v1.2.0", "registry.local/transaction-service", "registry.local/transaction-service", "v1.2.0", "", "v1.2.0"},
		{"registry:5000/app", "registry:5000/app", "registry:5000/app", "", "", "latest"},
		{"registry:5000/team/app:v1", "registry:5000/team/app", "registry:5000/team/app", "v1", "", "v1"},
		{"app@" + d, "app", "docker.io/library/app", "", d, d},
		{"r.io/app:v1.2.0@" + d, "r.io/app", "r.io/app", "v1.2.0", d, "v1.2.0"},
		{"nginx", "nginx", "docker.io/library/nginx", "", "", "latest"},
		{"[::1]:5000/app:v2", "[::1]:5000/app", "[::1]:5000/app", "v2", "", "v2"},
	} {
		r, err := Parse(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if r.Name != tc.name || r.Canonical != tc.canonical || r.Tag != tc.tag || r.Digest != tc.digest || r.Version() != tc.version {
			t.Errorf("Parse(%q) = %+v version %q, want %s %s %s %s %s", tc.in, r, r.Version(), tc.name, tc.canonical, tc.tag, tc.digest, tc.version)
		}
	}
	for _, bad := range []string{"", "app/UPPER", "app:", "a b", "app@sha256:short"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	r, _ := Parse("registry:5000/app:v1")
	if got := r.WithVersion("v0.9"); got != "registry:5000/app:v0.9" {
		t.Errorf("WithVersion tag: %s", got)
	}
	if got := r.WithVersion(strings.Replace("sha256:X", "X", strings.Repeat("a", 64), 1)); !strings.HasPrefix(got, "registry:5000/app@sha256:") {
		t.Errorf("WithVersion digest: %s", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"registry:5000/app:v1", "app@sha256:" + strings.Repeat("0", 64), "a/b/c:d", "[::1]:5000/x", "v9\\'].filter(x, false) //"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		if r.Name == "" || r.Version() == "" {
			t.Fatalf("Parse(%q) = %+v", s, r)
		}
		// What parses names itself again the same way.
		again, err := Parse(r.WithVersion(r.Version()))
		if err != nil || again.Name != r.Name || again.Version() != r.Version() {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}
