package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/gitops/gittest"
)

// startFluxHelm runs the real Flux helm-controller (v1.4.3, built by
// scripts/build-peers.sh) beside the source- and kustomize-controller.
func startFluxHelm(t *testing.T) {
	t.Helper()
	waitBuilt(t, "flux-helm")
	startFlux(t)
	startPeer(t, "flux-helm", func() error {
		if err := applyCRDs("flux-helm", "helmreleases.helm.toolkit.fluxcd.io"); err != nil {
			return err
		}
		health := freePort(t)
		return runPeerEnv("helm-controller", fmt.Sprintf("http://127.0.0.1:%d/healthz", health), []string{"KUBECONFIG=" + kubeconfig, "RUNTIME_NAMESPACE=flux-system"},
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", freePort(t)), fmt.Sprintf("--health-addr=127.0.0.1:%d", health), "--log-encoding=console", "--concurrent=6")
	})
}

// chartValues is the chart's values file, the release's image tag in it.
func chartValues(tag string) *string {
	return gittest.Str("# the service's release\nimage:\n  repository: registry.local/transaction-service\n  tag: " + tag + "\nreplicas: 3\n")
}

// A HelmRelease whose chart and values are in Git, applied by the real
// helm-controller from the real source-controller's chart artifact
// (reconcileStrategy Revision): v1.2.0 is released by a values commit,
// 'rollback run' pauses the HelmRelease (acknowledged), rolls the Helm
// release back through Helm's SDK, reverts the values commit in Git and
// resumes once the GitRepository has it; helm-controller upgrades to the
// chart built from the revert, and no sample shows v1.2.0 after the undo.
func TestGitOpsFluxHelmValuesRevert(t *testing.T) {
	parallel(t)
	startFluxHelm(t)
	git := gittest.Start(t)
	ns := namespace(t)
	a := &fluxApp{ns: ns, repo: "chart-" + ns, git: git, svc: ns}
	url := git.Create(t, a.repo)
	git.Commit(t, a.repo, "main", map[string]*string{
		"charts/web/Chart.yaml":  gittest.Str("apiVersion: v2\nname: web\nversion: 0.1.0\n"),
		"charts/web/values.yaml": chartValues("v1.1.5"),
		"charts/web/templates/deployment.yaml": gittest.Str(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: ` + app + `
spec:
  replicas: {{ .Values.replicas }}
  revisionHistoryLimit: 5
  selector: {matchLabels: {app: ` + app + `}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: ` + app + `}}
    spec:
      containers:
      - name: ` + app + `
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
`)}, "web chart, transaction-service v1.1.5")
	kubectlApply(t, gitRepository(ns, url)+`
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web, namespace: `+ns+`}
spec:
  interval: 2s
  releaseName: web
  chart:
    spec:
      chart: ./charts/web
      reconcileStrategy: Revision
      interval: 2s
      sourceRef: {kind: GitRepository, name: shop}
`)
	a.waitImage(t, image("v1.1.5"))
	release := git.Commit(t, a.repo, "main", map[string]*string{"charts/web/values.yaml": chartValues("v1.2.0")}, "Release transaction-service v1.2.0")
	a.waitImage(t, image("v1.2.0"))

	cfg := filepath.Join(t.TempDir(), "rollback.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("apiVersion: rollback/v1\nservices:\n  %s:\n    kubernetes: {kind: HelmRelease, namespace: %s, name: web}\n    gitops: {tokenEnv: TEST_GIT_TOKEN}\n", a.svc, ns)), 0o644); err != nil {
		t.Fatal(err)
	}
	s := sample(ns)
	r := rollbackEnv(t, map[string]string{"TEST_GIT_TOKEN": git.Token}, "run", a.svc, "--config", cfg, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "flux HelmRelease "+ns+"/web suspended") || !strings.Contains(r.stderr, "resumed (paused by INC-") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	id := incidentID.FindString(r.stderr)
	// helm-controller, resumed, reconciles the release three times over
	// (each an upgrade to the chart as Git has it, were it to differ).
	fluxReconciled(t, "helmrelease", ns, "web", 3)
	s.atLeast(t, 100)
	if bad, total := s.badAfterUndo(); bad != 0 || total < 100 {
		t.Errorf("%d of %d samples on v1.2.0 after the undo", bad, total)
	}
	head := git.Log(t, a.repo, "main")[0]
	if !strings.Contains(head.Message, "Rollback-Incident: "+id) || !strings.Contains(head.Message, "This reverts commit "+release) {
		t.Errorf("head commit:\n%s", head.Message)
	}
	if got := git.Read(t, a.repo, "main", "charts/web/values.yaml"); got != *chartValues("v1.1.5") {
		t.Errorf("values after the revert:\n%s", got)
	}
	got := kubectl(t, "get", "helmrelease", "web", "-n", ns, "-o", `jsonpath={.spec.suspend}|{.status.history[0].chartVersion}`)
	if !strings.HasPrefix(got, "false|0.1.0+"+head.Hash[:12]) && !strings.HasPrefix(got, "|0.1.0+"+head.Hash[:12]) {
		t.Errorf("helmrelease: %q, want resumed with the chart built from %s", got, head.Hash[:12])
	}
}
