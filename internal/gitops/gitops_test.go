package gitops

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
