package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rollback-dev/rollback/internal/gitops"
)

// installGitOps applies the real Argo CD Application and Flux
// Kustomization CRDs, and Argo CD's namespace.
func installGitOps(t *testing.T) {
	t.Helper()
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

// selfHeal plays a GitOps reconciler with self-heal: each reconcile, unless
// the owner is paused, it re-applies Git's version (the broken v1.2.0) to
// the Deployment. It returns how many times it re-applied.
type selfHeal struct {
	ns     string
	paused func() bool
}

func (s selfHeal) reconcile(ctx context.Context) (bool, error) {
	if s.paused() {
		return false, nil
	}
	d, err := cs.AppsV1().Deployments(s.ns).Get(ctx, app, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	if d.Spec.Template.Spec.Containers[0].Image == image("v1.2.0") {
		return false, nil
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"image":%q}]}}}}`, app, image("v1.2.0"))
	_, err = cs.AppsV1().Deployments(s.ns).Patch(ctx, app, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "argocd-controller"})
	return err == nil, err
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

// Without the pause, a self-healing reconciler re-applies the broken
// version right after a plain undo; 'rollback run' pauses the Argo CD
// Application first (journaled, recorded on the Application), and ten
// minutes of simulated reconciliation later the rollback still holds.
func TestGitOpsArgoCDSelfHealIsPaused(t *testing.T) {
	t.Parallel()
	installGitOps(t)
	ctx := context.Background()

	// Without the pause: kubectl's undo, then the reconciler.
	bare := namespace(t)
	deploy(t, bare, "v1.1.5", "v1.2.0")
	rh := selfHeal{ns: bare, paused: argoApp(t, bare)}
	kubectl(t, "rollout", "undo", "deployment/"+app, "-n", bare)
	start := time.Now()
	reverted := false
	for !reverted && time.Since(start) < 30*time.Second {
		var err error
		if reverted, err = rh.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !reverted || runningImage(t, bare) != image("v1.2.0") {
		t.Fatalf("the reconciler did not re-apply v1.2.0 after a plain undo (reverted %v, running %s)", reverted, runningImage(t, bare))
	}
	t.Logf("without the pause the broken version was re-applied %.1fs after the undo", time.Since(start).Seconds())

	// With rollback: paused before the undo.
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	h := selfHeal{ns: ns, paused: argoApp(t, ns)}
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "automated sync (and self-heal) turned off") || !strings.Contains(r.stderr, "IT STAYS PAUSED") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	for i := 0; i < 600; i++ { // ten minutes at one reconcile a second
		if did, err := h.reconcile(ctx); err != nil || did {
			t.Fatalf("reconcile %d re-applied the broken version (%v)", i, err)
		}
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after ten simulated minutes: %s", got)
	}
	var appObj struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "application", ns, "-n", "argocd", "-o", "json")), &appObj); err != nil {
		t.Fatal(err)
	}
	if by := appObj.Metadata.Annotations[gitops.PausedByAnnotation]; !strings.HasPrefix(by, "INC-") || appObj.Metadata.Annotations[gitops.PausedWasAnnotation] != `{"prune":true,"selfHeal":true}` {
		t.Errorf("the pause is not recorded on the Application: %v", appObj.Metadata.Annotations)
	}
	// The pause stays visible after the incident closed, until it is
	// resumed (once the revert is in Git), which puts self-heal back.
	id := appObj.Metadata.Annotations[gitops.PausedByAnnotation]
	if s := rollback(t, "status", id); !strings.Contains(s.stdout, "WARNING: GitOps reconciler paused") {
		t.Errorf("status does not show the paused reconciler:\n%s", s.stdout)
	}
	if s := rollback(t, "status"); !strings.Contains(s.stdout, "WARNING: "+id+" paused a GitOps reconciler") {
		t.Errorf("the status list does not show the paused reconciler:\n%s", s.stdout)
	}
	if res := rollback(t, "gitops", "resume", id); res.code != 0 || !strings.Contains(res.stdout, "resumed") {
		t.Fatalf("gitops resume: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if h.paused() {
		t.Error("self-heal not restored by 'rollback gitops resume'")
	}
	if s := rollback(t, "status", id); strings.Contains(s.stdout, "WARNING") {
		t.Errorf("status still warns after the resume:\n%s", s.stdout)
	}
}

// A Flux Kustomization is suspended before the undo.
func TestGitOpsFluxIsSuspended(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
	installGitOps(t)
	startPeer(t, "helmrelease-crd", func() error {
		out, err := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "testdata/helmrelease-crd.yaml").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, _ := exec.Command("kubectl", "--kubeconfig", kubeconfig, "get", "crd", "helmreleases.helm.toolkit.fluxcd.io", "-o",
				`jsonpath={.status.conditions[?(@.type=="Established")].status}`).Output()
			if string(out) == "True" {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the HelmRelease CRD is not Established")
			}
			time.Sleep(100 * time.Millisecond)
		}
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
