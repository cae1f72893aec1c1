package kube

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// A 403 on a custom resource is the server's reason and the rule to grant,
// never "unknown" (the REST interface does not decode the Status itself)
// and never read as "not installed" or "not found".
func TestCustomResourceForbiddenNamesTheRule(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,` +
			`"message":"rollouts.argoproj.io \"web\" is forbidden: User \"system:serviceaccount:s:rollback\" cannot get resource \"rollouts\""}`))
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	tg := Target{Namespace: "shop", Name: "web", Kind: "rollout"}
	_, err = getResource(context.Background(), cs, "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/web", tg, "Argo Rollouts CRDs")
	if err == nil || !strings.Contains(err.Error(), `cannot get resource "rollouts"`) ||
		!strings.Contains(err.Error(), "grant get and patch on rollouts.argoproj.io in namespace shop") {
		t.Errorf("get: %v", err)
	}
	err = patchResource(context.Background(), cs, "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/web/status", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{})
	if err == nil || !strings.Contains(err.Error(), "grant patch on rollouts/status.argoproj.io in namespace shop") {
		t.Errorf("patch: %v", err)
	}
}

func TestResourceOf(t *testing.T) {
	for path, want := range map[string]string{
		"/apis/flagger.app/v1beta1/namespaces/a/canaries/x":            "canaries.flagger.app in namespace a",
		"/apis/flagger.app/v1beta1/namespaces/a/canaries/x/status":     "canaries/status.flagger.app in namespace a",
		"/api/v1/namespaces/a/services/x":                              "/api/v1/namespaces/a/services/x",
		"/apis/gateway.networking.k8s.io/v1/namespaces/n/httproutes/r": "httproutes.gateway.networking.k8s.io in namespace n",
		"": "",
	} {
		if got := resourceOf(path); got != want {
			t.Errorf("resourceOf(%q) = %q, want %q", path, got, want)
		}
	}
}

// parsePath and resourceOf never panic; a path parsePath accepts names a
// namespaced resource whose parts round-trip, and resourceOf names it.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/web", "/apis/flagger.app/v1beta1/namespaces/a/canaries/x/status",
		"/api/v1/namespaces/a/services/x", "", "/", "//////", "/apis/g/v/namespaces//r/n", "/apis/a/b/namespaces/c/d/e/f/g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		_ = resourceOf(path)
		rp, err := parsePath(path)
		if err != nil {
			return
		}
		want := "/apis/" + rp.gvr.Group + "/" + rp.gvr.Version + "/namespaces/" + rp.namespace + "/" + rp.gvr.Resource + "/" + rp.name
		for _, s := range rp.sub {
			want += "/" + s
		}
		if strings.Trim(want, "/") != strings.Trim(path, "/") {
			t.Errorf("parsePath(%q) = %+v, which is %q", path, rp, want)
		}
		if slices.Contains(strings.Split(strings.Trim(path, "/"), "/"), "") || !strings.Contains(resourceOf(path), " in namespace "+rp.namespace) {
			t.Errorf("resourceOf(%q) = %q", path, resourceOf(path))
		}
	})
}
