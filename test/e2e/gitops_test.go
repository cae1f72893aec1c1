package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/gitops"
)

// installGitOps applies the real Argo CD Application and Flux
// Kustomization CRDs, and Argo CD's namespace.
func installGitOps(t *testing.T) {
	t.Helper()
	waitBuilt(t, "gitops-crds")
	startPeer(t, "gitops-crds", func() error {
		if err := applyCRDs("gitops", "applications.argoproj.io", "kustomizations.kustomize.toolkit.fluxcd.io"); err != nil {
			return err
		}
		out, err := exec.Command("kubectl", "--kubeconfig", kubeconfig, "create", "namespace", "argocd").CombinedOutput()
		if err != nil && !strings.Contains(string(out), "AlreadyExists") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// argoApp creates an Application with automated sync and self-heal for
// ns's Deployment, and marks the Deployment as Argo CD tracks it.
func argoApp(t *testing.T, ns string) (paused func() bool) {
	t.Helper()
	kubectlApply(t, `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: `+ns+`, namespace: argocd}
spec:
  project: default
  source: {repoURL: "https://git.example.com/payments.git", path: deploy, targetRevision: HEAD}
  destination: {server: "https://kubernetes.default.svc", namespace: `+ns+`}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
`)
	kubectl(t, "annotate", "deployment", app, "-n", ns, gitops.ArgoTrackingID+"="+ns+":apps/Deployment:"+ns+"/"+app)
	return func() bool {
		raw, err := cs.Discovery().RESTClient().Get().AbsPath("/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/" + ns).Do(context.Background()).Raw()
		var a struct {
			Spec struct {
				SyncPolicy struct {
					Automated *struct {
						SelfHeal bool `json:"selfHeal"`
					} `json:"automated"`
				} `json:"syncPolicy"`
			} `json:"spec"`
		}
		return err == nil && json.Unmarshal(raw, &a) == nil && (a.Spec.SyncPolicy.Automated == nil || !a.Spec.SyncPolicy.Automated.SelfHeal)
	}
}

// A Flux Kustomization is suspended before the undo.
func TestGitOpsFluxIsSuspended(t *testing.T) {
	parallel(t)
	installGitOps(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	kubectlApply(t, `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: payments, namespace: `+ns+`}
spec:
  interval: 1m
  path: ./deploy
  prune: true
  sourceRef: {kind: GitRepository, name: payments}
`)
	kubectl(t, "label", "deployment", app, "-n", ns, gitops.FluxKsName+"=payments", gitops.FluxKsNamespace+"="+ns)
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "suspended (spec.suspend: true)") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	if got := kubectl(t, "get", "kustomization", "payments", "-n", ns, "-o", "jsonpath={.spec.suspend}/{.metadata.annotations.rollback/paused-by}"); !strings.HasPrefix(got, "true/INC-") {
		t.Errorf("kustomization after the run: %s", got)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("running %s", got)
	}
}

// A Helm release that a Flux HelmRelease applies: rolled back through
// Helm, with the HelmRelease suspended first (its workload carries Flux's
// labels).
func TestGitOpsFluxHelmReleaseIsSuspended(t *testing.T) {
	parallel(t)
	installGitOps(t)
	waitBuilt(t, "flux-helm")
	startPeer(t, "helmrelease-crd", func() error {
		return applyCRDs("flux-helm", "helmreleases.helm.toolkit.fluxcd.io")
	})
	ns := namespace(t)
	helmRelease(t, ns)
	kubectlApply(t, `apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: app, namespace: `+ns+`}
spec:
  interval: 1m
  chart: {spec: {chart: transaction-service, sourceRef: {kind: HelmRepository, name: charts}}}
`)
	kubectl(t, "label", "deployment", "app-web", "-n", ns, gitops.FluxHelmName+"=app", gitops.FluxHelmNamespace+"="+ns)
	r := rollback(t, "run", "helm/app", "-n", ns, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "flux HelmRelease "+ns+"/app suspended") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	if got := kubectl(t, "get", "helmrelease", "app", "-n", ns, "-o", "jsonpath={.spec.suspend}"); got != "true" {
		t.Errorf("HelmRelease suspend %q", got)
	}
	checkHelmRolledBack(t, ns)
}
