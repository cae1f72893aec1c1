package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/reaper"
)

var flaggerProm string

// startFlagger installs Flagger's CRDs, runs a real Prometheus for its
// MetricTemplates and the real Flagger controller (v1.41.0, built by
// scripts/build-peers.sh) with the kubernetes provider.
func startFlagger(t *testing.T) {
	t.Helper()
	waitBuilt(t, "flagger")
	startPeer(t, "flagger", func() error {
		if err := applyCRDs("flagger", "canaries.flagger.app", "metrictemplates.flagger.app"); err != nil {
			return err
		}
		prom, err := exec.LookPath("prometheus")
		if err != nil {
			return fmt.Errorf("prometheus is not installed (make deps installs it)")
		}
		dir := filepath.Join(sandboxDir, "flagger-prometheus")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr := l.Addr().String()
		l.Close()
		if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"), 0o644); err != nil {
			return err
		}
		p := reaper.Child(exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr))
		if err := p.Start(); err != nil {
			return err
		}
		peers.procs = append(peers.procs, p)
		flaggerProm = "http://" + addr
		port := freePort(t)
		return runPeer("flagger", fmt.Sprintf("http://127.0.0.1:%d/healthz", port), "-kubeconfig", kubeconfig, "-mesh-provider", "kubernetes", "-metrics-server", flaggerProm,
			"-port", strconv.Itoa(port), "-log-level", "info", "-control-loop-interval", "1s", "-zap-encoding", "console")
	})
}

func kubectlApply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

// flaggerCanary deploys the test app at v1.1.5 under a Flagger Canary
// (kubernetes provider; the seed's threshold 3, an error-rate
// MetricTemplate on a real Prometheus) with the given iterations, and
// waits until Flagger has initialised it.
func flaggerCanary(t *testing.T, ns string, iterations int) {
	t.Helper()
	deploy(t, ns, "v1.1.5")
	kubectlApply(t, `apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: error-rate, namespace: `+ns+`}
spec:
  provider: {type: prometheus, address: "`+flaggerProm+`"}
  query: vector(0)
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: `+app+`, namespace: `+ns+`}
spec:
  provider: kubernetes
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: `+app+`}
  progressDeadlineSeconds: 60
  service: {port: 80, targetPort: 8080}
  analysis:
    interval: 2s
    threshold: 3
    iterations: `+strconv.Itoa(iterations)+`
    metrics:
    - name: error-rate
      templateRef: {name: error-rate}
      thresholdRange: {max: 1}
      interval: 1m
`)
	waitCanary(t, ns, "Initialized", "Succeeded")
}

func canaryField(t *testing.T, ns, path string) string {
	return kubectl(t, "get", "canary", app, "-n", ns, "-o", "jsonpath={"+path+"}")
}

func waitCanary(t *testing.T, ns string, phases ...string) string {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		got := canaryField(t, ns, ".status.phase")
		for _, p := range phases {
			if got == p {
				return got
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("canary phase %q, want one of %v", got, phases)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func setImage(t *testing.T, ns, v string) {
	t.Helper()
	kubectl(t, "set", "image", "deployment/"+app, app+"="+image(v), "-n", ns)
}

func primaryImage(t *testing.T, ns string) string {
	return kubectl(t, "get", "deployment", app+"-primary", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
}

// checkFlaggerRolledBack: Flagger in phase on v1.1.5 (target and
// primary), skipAnalysis restored, v1.2.0 marked bad.
func checkFlaggerRolledBack(t *testing.T, ns, phase string) {
	t.Helper()
	if got := canaryField(t, ns, ".status.phase"); got != phase {
		t.Errorf("canary phase %q, want %q", got, phase)
	}
	if got := primaryImage(t, ns); got != image("v1.1.5") {
		t.Errorf("primary runs %s", got)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("target template %s", got)
	}
	if got := canaryField(t, ns, ".spec.skipAnalysis") + "/" + canaryField(t, ns, ".metadata.annotations.rollback/skip-analysis-was"); got != "false/" && got != "/" {
		t.Errorf("skipAnalysis not restored: %q", got)
	}
	bad := kubectl(t, "get", "rs", "-n", ns, "-l", "app="+app, "-o", `jsonpath={range .items[?(@.metadata.annotations.rollback/health=="bad")]}{.spec.template.spec.containers[0].image}{end}`)
	if bad != image("v1.2.0") {
		t.Errorf("marked bad: %q", bad)
	}
}

// During an analysis, rollback fails it at once (the threshold's failed
// checks in the canary's status) instead of waiting for threshold ×
// interval of failed metrics (here the metric passes: Flagger alone would
// never roll back), then has Flagger promote v1.1.5 back without a new
// analysis.
func TestFlaggerFailsAnalysisAtOnce(t *testing.T) {
	parallel(t)
	startFlagger(t)
	ns := namespace(t)
	flaggerCanary(t, ns, 1000)
	setImage(t, ns, "v1.2.0")
	waitCanary(t, ns, "Progressing")
	r := rollback(t, "run", "canary/"+app, "-n", ns, "--yes", "--timeout", "90s")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "analysis failed at once (canary scaled to zero, 3 failed checks set): Flagger rolled back to the primary") {
		t.Errorf("the run does not say it failed the analysis:\n%s", r.stderr)
	}
	// The target back on v1.1.5 is Flagger's "manual rollback" (the last
	// promoted spec): no new analysis, the canary stays Failed.
	checkFlaggerRolledBack(t, ns, "Failed")
	events := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.kind=Canary", "-o", "jsonpath={.items[*].message}")
	if !strings.Contains(events, "Canary failed!") {
		t.Errorf("Flagger recorded no rollback: %s", events)
	}
}

// After a bad promotion (v1.2.0 on the primary), rollback puts v1.1.5 back
// on the primary without a new analysis: the Canary's 1000 iterations
// would otherwise hold it for over half an hour.
func TestFlaggerRollsBackABadPromotion(t *testing.T) {
	parallel(t)
	startFlagger(t)
	ns := namespace(t)
	flaggerCanary(t, ns, 1)
	setImage(t, ns, "v1.2.0")
	waitCanary(t, ns, "Progressing")
	deadline := time.Now().Add(90 * time.Second)
	for primaryImage(t, ns) != image("v1.2.0") || canaryField(t, ns, ".status.phase") != "Succeeded" {
		if time.Now().After(deadline) {
			t.Fatalf("v1.2.0 was never promoted (phase %s)", canaryField(t, ns, ".status.phase"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	kubectl(t, "patch", "canary", app, "-n", ns, "--type", "merge", "-p", `{"spec":{"analysis":{"iterations":1000}}}`)
	r := rollback(t, "run", "canary/"+app, "-n", ns, "--yes", "--timeout", "90s")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "without an analysis (skipAnalysis restored)") {
		t.Errorf("the run does not say how it was promoted:\n%s", r.stderr)
	}
	checkFlaggerRolledBack(t, ns, "Succeeded")
	if again := rollback(t, "run", "canary/"+app, "-n", ns, "--yes"); again.code != cli.ExitRefused {
		t.Errorf("second run: exit %d, want %d", again.code, cli.ExitRefused)
	}
}

// 'rollback watch canary/NAME' reads Flagger's split (the target under
// analysis against the primary), so the sequential test has the primary's
// traffic as its baseline; on the breach it fails the analysis at once.
func TestWatchFlaggerCanary(t *testing.T) {
	parallel(t)
	startFlagger(t)
	ns := namespace(t)
	flaggerCanary(t, ns, 1000)
	_, prom := startDemo(t, ns, "--selector", "app in ("+app+", "+app+"-primary)")
	setImage(t, ns, "v1.2.0")
	waitCanary(t, ns, "Progressing")
	watchRollsBack(t, "canary/"+app, ns, prom)
	checkFlaggerRolledBack(t, ns, "Failed")
}
