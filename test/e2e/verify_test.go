package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/reaper"
)

// startDemo runs the sandbox's demo service for the namespace's
// transaction-service with self-load, and a real Prometheus scraping it
// every second. It returns the service and Prometheus URLs.
func startDemo(t *testing.T, ns string, extra ...string) (svcURL, promURL string) {
	t.Helper()
	return startDemoProm(t, ns, "", "", extra...)
}

// startDemoProm is startDemo whose Prometheus also evaluates alerting
// rules (a rules.yml's groups) and sends alerts to an Alertmanager at
// amAddr (host:port), when given.
func startDemoProm(t *testing.T, ns, rules, amAddr string, extra ...string) (svcURL, promURL string) {
	t.Helper()
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed (make deps installs it)")
	}
	args := append([]string{"demo-service", "--dir", sandboxDir, "-n", ns, "--deployment", app, "--broken", "v1.2.0", "--error-rate", "0.2", "--rps", "50"}, extra...)
	cmd := reaper.Child(exec.Command(filepath.Join(binDir, "rollback-sandbox"), args...))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("demo-service: %v", err)
	}
	f := strings.Fields(line) // demo-service listening on http://ADDR (metrics on /metrics)
	svcURL = f[3]
	dir := t.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: ts\n    static_configs: [{targets: ['%s']}]\n", strings.TrimPrefix(svcURL, "http://"))
	if rules != "" {
		_ = os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(rules), 0o644)
		cfg += "rule_files: ['" + filepath.Join(dir, "rules.yml") + "']\n"
	}
	if amAddr != "" {
		cfg += "alerting:\n  alertmanagers:\n    - static_configs: [{targets: ['" + amAddr + "']}]\n"
	}
	_ = os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644)
	p := reaper.Child(exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Process.Kill(); _ = p.Wait() })
	return svcURL, "http://" + addr
}

const errQuery = `sum(rate(http_requests_total{code=~"5.."}[5s])) / sum(rate(http_requests_total[5s]))`

const latQuery = `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5s])))`

// waitForQuery polls a Prometheus query until ok(value) or a minute passes.
func waitForQuery(t *testing.T, p *metrics.Prometheus, q string, ok func(float64) bool, what string) {
	t.Helper()
	waitForQueryAt(t, p, q, 0, ok, what)
}

// waitForQueryAt polls a query evaluated ago before now.
func waitForQueryAt(t *testing.T, p *metrics.Prometheus, q string, ago time.Duration, ok func(float64) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, err := p.Query(context.Background(), q, time.Now().Add(-ago))
		if err == nil && ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus never showed %s (last %v, %v)", what, v, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitForBaseline waits until the demo's Prometheus has the healthy
// version's latency two seconds back: where a release made now is
// measured against (verify.BaselineTime: a second before the bad
// revision's creation, which the API server keeps in whole seconds).
func waitForBaseline(t *testing.T, promURL string) {
	t.Helper()
	p, err := metrics.NewPrometheus(promURL)
	if err != nil {
		t.Fatal(err)
	}
	waitForQueryAt(t, p, latQuery, 2*time.Second, func(v float64) bool { return v > 0 && v < 0.1 }, "the healthy version's latency two seconds back")
}

func TestVerifyMeasuresTheRollback(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5")
	svc, prom := startDemo(t, ns)
	p, _ := metrics.NewPrometheus(prom)
	// The pre-release baseline exists before the broken release.
	waitForBaseline(t, prom)
	kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
	waitRolledOut(t, ns)
	waitForQuery(t, p, errQuery, func(v float64) bool { return v > 0.05 }, "the broken version's errors")
	args := []string{"verify", "deployment/" + app, "-n", ns, "--prometheus", prom, "--error-rate-query", errQuery,
		"--smoke-url", svc + "/", "--settle", "1s"}
	r := rollback(t, append(args, "--within", "10s")...)
	m := regexp.MustCompile(`error-rate\s+FAIL\s+(\d+\.\d+)%`).FindStringSubmatch(r.stdout)
	if r.code != cli.ExitFailed || m == nil {
		t.Errorf("verify on the broken version: exit %d (want %d)\n%s", r.code, cli.ExitFailed, r.stdout)
	} else if v, _ := strconv.ParseFloat(m[1], 64); v < 5 {
		t.Errorf("measured error rate %s%%, want about 20%% (the broken version's)", m[1])
	}
	// The run itself waits for the error rate to recover (its metrics step).
	cfg := filepath.Join(t.TempDir(), "rollback.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  ts:
    kubernetes: {namespace: %s, name: %s}
    verify: {prometheus: "%s", errorRateQuery: '%s', maxErrorRate: 0.001, within: 60s}
`, ns, app, prom, errQuery)), 0o644)
	run := rollback(t, "run", "ts", "--config", cfg, "--yes")
	if run.code != 0 || !strings.Contains(run.stderr, "error-rate: 0.000%") {
		t.Fatalf("run: %d\n%s", run.code, run.stderr)
	}
	args = append(args, "--latency-query", latQuery, "--latency-factor", "2")
	r = rollback(t, append(args, "--within", "60s", "-o", "json")...)
	if r.code != 0 || !strings.Contains(r.stdout, `"passed": true`) {
		t.Errorf("verify after the rollback: exit %d\n%s", r.code, r.stdout)
	}
	if !strings.Contains(r.stderr, "p99 latency baseline") {
		t.Errorf("the latency limit should come from the pre-release baseline:\n%s", r.stderr)
	}
	for _, want := range []string{`"check": "pod-health"`, `"check": "smoke:url-1"`, `"check": "error-rate"`, `"check": "p99-latency"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("verify output lacks %s", want)
		}
	}
	// From counts: a few seconds of traffic cannot show a rate under
	// 0.1% with 95% confidence, and the check says so; given time, the
	// counts do, and the evidence has the rate, the count and the bound.
	counted := []string{"verify", "deployment/" + app, "-n", ns, "--prometheus", prom, "--settle", "1s",
		"--requests-query", `sum(increase(http_requests_total[$window]))`, "--errors-query", `sum(increase(http_requests_total{code=~"5.."}[$window]))`}
	r = rollback(t, append(counted, "--within", "4s")...)
	if r.code != cli.ExitFailed || !strings.Contains(r.stdout, "not enough requests") {
		t.Errorf("a few seconds of traffic: exit %d\n%s", r.code, r.stdout)
	}
	slow := `sum(increase(http_request_duration_seconds_count[$window])) - sum(increase(http_request_duration_seconds_bucket{le="0.1"}[$window]))`
	r = rollback(t, append(counted, "--within", "3m", "--slow-query", slow)...)
	if r.code != 0 || !regexp.MustCompile(`0\.000% errors \(0 of \d+ requests in \d+s; 95% upper bound 0\.0\d\d%\)`).MatchString(r.stdout) ||
		!regexp.MustCompile(`p99-latency\s+pass\s+\d+\.\d+% slow \(\d+ of \d+ requests`).MatchString(r.stdout) {
		t.Errorf("given time: exit %d\n%s", r.code, r.stdout)
	}
}

// watchRollsBack runs 'rollback watch REF' against prom until it rolls
// back (exit 7), and checks it compared v1.2.0 with v1.1.5.
func watchRollsBack(t *testing.T, ref, ns, prom string) result {
	t.Helper()
	r := rollback(t, "watch", ref, "-n", ns, "--prometheus", prom,
		"--interval", "2s", "--analysis-interval", "4s", "--threshold", "2", "--for", "90s", "-o", "json")
	if r.code != cli.ExitRolledBack {
		t.Fatalf("watch: exit %d, want %d (rolled back)\n%s%s", r.code, cli.ExitRolledBack, r.stdout, r.stderr)
	}
	for _, want := range []string{`"breach": true`, `"canaryVersion": "v1.2.0"`, `"baselineVersion": "v1.1.5"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("outcome lacks %s:\n%s", want, r.stdout)
		}
	}
	return r
}

func TestWatchRollsBackABrokenRelease(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	_, prom := startDemo(t, ns)
	r := watchRollsBack(t, "deployment/"+app, ns, prom)
	if !strings.Contains(r.stdout, `"markedBad"`) {
		t.Errorf("outcome lacks markedBad:\n%s", r.stdout)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the watch: %s, want %s", got, image("v1.1.5"))
	}
	// The breach went through the runbook: an incident decided by the
	// detector, closed, and the broken version blocked for CI.
	m := regexp.MustCompile(`"incident": "(INC-[^"]+)"`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("the watch's rollback opened no incident:\n%s", r.stdout)
	}
	st := rollback(t, "status", m[1], "-o", "json")
	for _, want := range []string{`"status": "closed"`, "the canary watch", `"decision": "roll-back"`} {
		if !strings.Contains(st.stdout, want) {
			t.Errorf("incident %s lacks %s:\n%s", m[1], want, st.stdout)
		}
	}
	if g := rollback(t, "gate", "deployment/"+app, "-n", ns, "v1.2.0"); g.code != cli.ExitBlocked {
		t.Errorf("gate after the watch's rollback: exit %d, want %d", g.code, cli.ExitBlocked)
	}
	// Watching the restored version finds nothing to roll back.
	r = rollback(t, "watch", "deployment/"+app, "-n", ns, "--prometheus", prom,
		"--interval", "2s", "--analysis-interval", "4s", "--threshold", "2", "--for", "12s", "--inconclusive", "100")
	if r.code != 0 || !strings.Contains(r.stdout, "No breach") {
		t.Errorf("watch of the healthy version: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
