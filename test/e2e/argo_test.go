package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/kube"
)

// startArgoRollouts installs the Argo Rollouts CRDs and runs the real
// controller (v1.8.5, built by scripts/build-peers.sh) beside the sandbox.
func startArgoRollouts(t *testing.T) {
	t.Helper()
	waitBuilt(t, "argo-rollouts")
	startPeer(t, "argo-rollouts", func() error {
		if err := applyCRDs("argo-rollouts", "rollouts.argoproj.io", "analysisruns.argoproj.io"); err != nil {
			return err
		}
		health := freePort(t)
		return runPeer("rollouts-controller", fmt.Sprintf("http://127.0.0.1:%d/healthz", health), "--kubeconfig", kubeconfig, "--leader-elect=false",
			"--metricsport", strconv.Itoa(freePort(t)), "--healthzPort", strconv.Itoa(health), "--loglevel", "info")
	})
}

// argoRollout applies a canary Rollout of the test app at version v with
// steps setWeight 20 then an indefinite pause (rollbackWindow if > 0).
func argoRollout(t *testing.T, ns, v string, window int) {
	t.Helper()
	w := ""
	if window > 0 {
		w = fmt.Sprintf("  rollbackWindow: {revisions: %d}\n", window)
	}
	manifest := `apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: ` + app + `
  namespace: ` + ns + `
spec:
  replicas: 2
` + w + `  selector:
    matchLabels: {app: ` + app + `}
  template:
    metadata:
      labels: {app: ` + app + `}
    spec:
      containers:
      - name: ` + app + `
        image: ` + image(v) + `
  strategy:
    canary:
      steps:
      - setWeight: 20
      - pause: {}
`
	cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply the Rollout at %s: %v\n%s", v, err, out)
	}
}

// argoCanary rolls the Rollout out at v1.1.5, then starts the v1.2.0
// canary and waits until it is paused at its 20 % step.
func argoCanary(t *testing.T, ns string, window int) {
	t.Helper()
	argoRollout(t, ns, "v1.1.5", window)
	waitRollout(t, ns, "Healthy")
	argoRollout(t, ns, "v1.2.0", window)
	waitRollout(t, ns, "Paused")
}

func rolloutField(t *testing.T, ns, path string) string {
	return kubectl(t, "get", "rollout", app, "-n", ns, "-o", "jsonpath={"+path+"}")
}

// waitRollout waits until the Rollout's status.phase (and, if given, its
// status message) is what the test wants.
func waitRollout(t *testing.T, ns, phase string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := rolloutField(t, ns, ".status.phase")
		if got == phase {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout phase %q, want %q (message %q)", got, phase, rolloutField(t, ns, ".status.message"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// plugin runs the real kubectl-argo-rollouts plugin.
func plugin(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "kubectl-argo-rollouts"), append(args, "--kubeconfig", kubeconfig)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl argo rollouts %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkRolledBack: Healthy on v1.1.5 by Argo's controller and by the real
// plugin, v1.2.0's ReplicaSet marked bad.
func checkRolledBack(t *testing.T, ns string) {
	t.Helper()
	if got := rolloutField(t, ns, ".status.phase"); got != "Healthy" {
		t.Errorf("phase %q after the rollback", got)
	}
	if got := rolloutField(t, ns, ".spec.template.spec.containers[0].image"); got != image("v1.1.5") {
		t.Errorf("template image %s", got)
	}
	if s := plugin(t, "status", app, "-n", ns, "--timeout", "10s"); !strings.Contains(s, "Healthy") {
		t.Errorf("the plugin's status: %s", s)
	}
	get := plugin(t, "get", "rollout", app, "-n", ns)
	if !strings.Contains(get, "Healthy") || !strings.Contains(get, image("v1.1.5")) {
		t.Errorf("the plugin's view:\n%s", get)
	}
	bad := kubectl(t, "get", "rs", "-n", ns, "-o", `jsonpath={range .items[?(@.metadata.annotations.rollback/health=="bad")]}{.spec.template.spec.containers[0].image}{end}`)
	if bad != image("v1.2.0") {
		t.Errorf("marked bad: %q, want v1.2.0's ReplicaSet", bad)
	}
}

// Mid-canary (paused at 20 %): rollback aborts the update and puts the
// stable template back; Argo fast-tracks the return to the stable
// ReplicaSet, so the Rollout is Healthy on v1.1.5 without any step.
func TestArgoRolloutAbortMidCanary(t *testing.T) {
	parallel(t)
	startArgoRollouts(t)
	ns := namespace(t)
	argoCanary(t, ns, 0)
	r := rollback(t, "run", "rollout/"+app, "-n", ns, "--yes", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"outcome": "rolled-back"`) {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout+r.stderr, "fast-tracked by Argo Rollouts: the stable ReplicaSet") {
		t.Errorf("the run does not say Argo fast-tracked the stable ReplicaSet:\n%s%s", r.stdout, r.stderr)
	}
	checkRolledBack(t, ns)
}

// After a bad promotion (v1.2.0 fully promoted and stable), the rollback
// to v1.1.5 would run the canary steps again (and stop at the indefinite
// pause); rollback promotes it fully instead, or, within the Rollout's
// rollbackWindow, Argo fast-tracks it by itself.
func TestArgoRolloutAfterBadPromotion(t *testing.T) {
	parallel(t)
	startArgoRollouts(t)
	for _, tc := range []struct {
		window int
		how    string
	}{{0, "fully promoted (status.promoteFull)"}, {3, "fast-tracked by Argo Rollouts: within spec.rollbackWindow"}} {
		t.Run(fmt.Sprintf("window-%d", tc.window), func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			argoCanary(t, ns, tc.window)
			plugin(t, "promote", app, "-n", ns, "--full")
			// A loaded controller has sat at a pause for a minute after a
			// full promotion (see kind_rollout.go's promoteFull).
			deadline := time.Now().Add(180 * time.Second)
			for rolloutField(t, ns, ".status.phase") != "Healthy" || rolloutField(t, ns, ".status.stableRS") != rolloutField(t, ns, ".status.currentPodHash") {
				if time.Now().After(deadline) {
					t.Fatal("v1.2.0 never became stable")
				}
				time.Sleep(200 * time.Millisecond)
			}
			r := rollback(t, "run", "rollout/"+app, "-n", ns, "--yes", "--timeout", "180s")
			if r.code != 0 {
				t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout+r.stderr, tc.how) {
				t.Errorf("the run does not say %q:\n%s%s", tc.how, r.stdout, r.stderr)
			}
			checkRolledBack(t, ns)
			if again := rollback(t, "run", "rollout/"+app, "-n", ns, "--yes"); again.code != cli.ExitRefused {
				t.Errorf("second run: exit %d, want %d", again.code, cli.ExitRefused)
			}
		})
	}
}

// 'rollback watch rollout/NAME' reads the Rollout's split (current against
// stable ReplicaSet) mid-canary and, on the breach, aborts and undoes.
func TestWatchArgoRollout(t *testing.T) {
	parallel(t)
	startArgoRollouts(t)
	ns := namespace(t)
	argoRollout(t, ns, "v1.1.5", 0)
	waitRollout(t, ns, "Healthy")
	_, prom := startDemo(t, ns, "--selector", "app="+app)
	argoRollout(t, ns, "v1.2.0", 0)
	waitRollout(t, ns, "Paused")
	watchRollsBack(t, "rollout/"+app, ns, prom)
	checkRolledBack(t, ns)
}

// An Argo Rollout scaled (as an autoscaler does) between the plan and the
// undo, mid-canary, is rolled back all the same: the abort and the undo
// see that it still runs the planned revision, and the patch is guarded
// again. Its replicas stay as scaled.
func TestArgoRolloutScaledBetweenPlanAndUndo(t *testing.T) {
	parallel(t)
	startArgoRollouts(t)
	ns := namespace(t)
	argoCanary(t, ns, 0)
	h, p := planUndo(t, kube.Target{Namespace: ns, Name: app, Kind: kube.KindRollout})
	gen := rolloutField(t, ns, ".metadata.generation")
	kubectl(t, "scale", "rollout/"+app, "-n", ns, "--replicas", "4")
	if now := rolloutField(t, ns, ".metadata.generation"); now == gen {
		t.Fatalf("scaling left the generation at %s: nothing here tests the guard", now)
	}
	if err := kube.Undo(context.Background(), cs, h, p, kube.DryRunNone); err != nil {
		t.Fatalf("undo of a Rollout scaled after the plan: %v", err)
	}
	if got := rolloutField(t, ns, ".spec.template.spec.containers[0].image"); got != image("v1.1.5") || !strings.Contains(h.Prepared, "re-guarded") {
		t.Errorf("after the undo: template %s, evidence %q; want %s and a word on the re-guard", got, h.Prepared, image("v1.1.5"))
	}
	if got := rolloutField(t, ns, ".spec.replicas"); got != "4" {
		t.Errorf("replicas %s after the undo, want the autoscaler's 4", got)
	}
}
