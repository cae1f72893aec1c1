package gitops

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ann, labels map[string]string
		want        *Owner
	}{
		{"flux kustomization", nil, map[string]string{FluxKsName: "apps", FluxKsNamespace: "flux-system"}, &Owner{Tool: "flux", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}},
		{"flux helmrelease in its own namespace", nil, map[string]string{FluxHelmName: "web"}, &Owner{Tool: "flux", Kind: "HelmRelease", Namespace: "shop", Name: "web"}},
		{"argo tracking id", map[string]string{ArgoTrackingID: "payments:apps/Deployment:shop/web"}, nil, &Owner{Tool: "argocd", Kind: "Application", Namespace: "argocd", Name: "payments"}},
		{"argo app in any namespace", map[string]string{ArgoTrackingID: "team-a_payments:apps/Deployment:shop/web"}, nil, &Owner{Tool: "argocd", Kind: "Application", Namespace: "team-a", Name: "payments"}},
		{"argo instance label", nil, map[string]string{ArgoInstanceLabel: "payments"}, &Owner{Tool: "argocd", Kind: "Application", Namespace: "argocd", Name: "payments"}},
		{"app.kubernetes.io/instance is weak", nil, map[string]string{AppInstanceLabel: "payments"}, &Owner{Tool: "argocd", Kind: "Application", Namespace: "argocd", Name: "payments", Weak: true}},
		{"none", map[string]string{"x": "y"}, map[string]string{"app": "web"}, nil},
	} {
		m := &metav1.ObjectMeta{Namespace: "shop", Annotations: tc.ann, Labels: tc.labels}
		got := Detect(m, "")
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// A 403 reading the owner is no "not Argo CD": the pause fails, naming
// the missing rule, even when the owner was only weakly detected.
func TestPauseForbiddenNamesTheRule(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,`+
			`"message":"applications.argoproj.io \"shop\" is forbidden: User \"system:serviceaccount:rollback-system:rollback\" cannot get resource \"applications\""}`)
	}))
	defer api.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, weak := range []bool{true, false} {
		_, paused, err := Pause(context.Background(), cs, Owner{Tool: "argocd", Kind: "Application", Namespace: "argocd", Name: "shop", Weak: weak}, "INC-1", 0)
		if err == nil || paused || !strings.Contains(err.Error(), "grant get and patch on applications.argoproj.io in namespace argocd") {
			t.Errorf("weak %v: paused %v, %v; want a failure naming the rule", weak, paused, err)
		}
	}
}
