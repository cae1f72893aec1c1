package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/pgtest"
	"github.com/rollback-dev/rollback/internal/reaper"
)

const serveToken = "e2e-operator-token-0123456789"

// watchYAML is automation.watch on the demo service's metrics, every 2s.
const watchYAML = `      watch:
        requestsQuery: 'sum(increase(http_requests_total{version="{{version}}"}[{{interval}}]))'
        errorsQuery: 'sum(increase(http_requests_total{version="{{version}}",code=~"5.."}[{{interval}}]))'
        interval: 2s
`

// served is a running 'rollback serve'.
type served struct {
	url  string
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []string
}

func (s *served) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logs...)
}

// waitLog waits until a log line contains all of subs.
// logged reports whether a line of the log holds every one of subs.
func (s *served) logged(subs ...string) bool {
	for _, l := range s.lines() {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(l, sub)
		}
		if ok {
			return true
		}
	}
	return false
}

func (s *served) waitLog(t *testing.T, d time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, l := range s.lines() {
			ok := true
			for _, sub := range subs {
				ok = ok && strings.Contains(l, sub)
			}
			if ok {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("serve never logged %q; its log:\n%s", subs, strings.Join(s.lines(), "\n"))
	return ""
}

// startServe starts 'rollback serve' on a free loopback port.
func startServe(t *testing.T, st, cfg string, args ...string) *served {
	t.Helper()
	all := append([]string{"serve", "--listen", "127.0.0.1:0", "--config", cfg, "--log-format", "json"}, args...)
	cmd := rollbackCmd(st, all...)
	cmd.Env = append(cmd.Env, "ROLLBACK_API_TOKENS=e2e=operate:"+serveToken)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if a, ok := strings.CutPrefix(l, "rollback serve: listening on "); ok {
				addr <- a
			}
			s.mu.Lock()
			s.logs = append(s.logs, l)
			s.mu.Unlock()
		}
	}()
	select {
	case a := <-addr:
		s.url = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start:\n%s", strings.Join(s.lines(), "\n"))
	}
	return s
}

func (s *served) api(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+serveToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type incidentJSON struct {
	ID          string     `json:"id"`
	Service     string     `json:"service"`
	Status      string     `json:"status"`
	Severity    string     `json:"severity"`
	GoodVersion string     `json:"goodVersion"`
	OpenedAt    time.Time  `json:"openedAt"`
	ClosedAt    *time.Time `json:"closedAt"`
}

// waitIncident polls the API until an incident of service is closed.
func (s *served) waitClosed(t *testing.T, service string, d time.Duration) incidentJSON {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		_, b := s.api(t, "GET", "/api/v1/incidents?service="+service, "")
		var incs []incidentJSON
		_ = json.Unmarshal(b, &incs)
		for _, inc := range incs {
			if inc.Status == "closed" {
				return inc
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	_, b := s.api(t, "GET", "/api/v1/incidents", "")
	t.Fatalf("no closed incident of %s; incidents: %s\nlog:\n%s", service, b, strings.Join(s.lines(), "\n"))
	return incidentJSON{}
}

// freeAddr is a free loopback host:port.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startAlertmanager runs Debian's Alertmanager with one webhook receiver
// (bearer token auth) and quick grouping.
func startAlertmanager(t *testing.T, webhook, token string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		t.Fatal("prometheus-alertmanager is not installed (make deps installs it)")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`route:
  receiver: rollback
  group_by: [alertname, namespace]
  group_wait: 0s
  group_interval: 2s
  repeat_interval: 5s
receivers:
  - name: rollback
    webhook_configs:
      - url: %s
        send_resolved: true
        http_config:
          authorization: {type: Bearer, credentials: %s}
`, webhook, token)
	_ = os.WriteFile(filepath.Join(dir, "am.yml"), []byte(cfg), 0o600)
	addr := freeAddr(t)
	cmd := reaper.Child(exec.Command(bin, "--config.file="+filepath.Join(dir, "am.yml"), "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address="))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return addr
}

// A real Prometheus alert on the broken release, through a real
// Alertmanager's webhook, makes 'rollback serve' walk the flowchart and
// (automation.auto) run the runbook: traffic back on v1.1.5, the incident
// closed with the alert as its trigger, and the alert group's repeated
// notifications (every 5 s) never start a second rollback.
func TestServeAlertmanagerRollsBack(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5")
	st := filepath.Join(t.TempDir(), "serve.db")
	rules := fmt.Sprintf(`groups:
  - name: ts
    rules:
      - alert: TransactionErrors
        expr: '%s > 0.01'
        labels: {severity: critical, namespace: %s}
        annotations: {summary: "5xx above 1%%"}
`, errQuery, ns)
	webhookAddr := freeAddr(t)
	amAddr := startAlertmanager(t, "http://"+webhookAddr+"/hooks/alertmanager", serveToken)
	_, prom := startDemoProm(t, ns, rules, amAddr)
	cfg := serviceConfig(t, "ts", ns, fmt.Sprintf(`    verify: {prometheus: "%s", errorRateQuery: '%s', maxErrorRate: 0.005, latencyQuery: '%s', maxLatency: 10s, within: 60s}
    automation:
      auto: true
      alerts:
        - {alertname: TransactionErrors, namespace: %s}
`, prom, errQuery, latQuery, ns))
	srv := startServe(t, st, cfg, "--listen", webhookAddr)
	waitForBaseline(t, prom) // the healthy version's baseline
	kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
	broken := time.Now()
	inc := srv.waitClosed(t, "ts", 5*time.Minute)
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the alert: %s, want %s", got, image("v1.1.5"))
	}
	_, b := srv.api(t, "GET", "/api/v1/incidents/"+inc.ID, "")
	var v struct {
		Reasons []struct{ Question, Answer string } `json:"reasons"`
		Events  []struct {
			Step, Phase string
			Time        time.Time
		} `json:"events"`
		Checklist []struct{ Status string } `json:"checklist"`
	}
	_ = json.Unmarshal(b, &v)
	fired := ""
	for _, r := range v.Reasons {
		if r.Question == "What fired?" {
			fired = r.Answer
		}
	}
	if !strings.Contains(fired, "TransactionErrors") || inc.Severity != "P1" {
		t.Errorf("the incident's trigger %q, severity %q; want the alert, P1", fired, inc.Severity)
	}
	var rolledOut time.Time
	for _, ev := range v.Events {
		if ev.Step == "kube-undo" && ev.Phase == "done" {
			rolledOut = ev.Time
		}
	}
	// When the alert fired: Prometheus keeps each alert's activeAt in
	// ALERTS_FOR_STATE (the rule has no 'for', so active is firing).
	startsAt := time.Time{}
	if p, err := metrics.NewPrometheus(prom); err == nil {
		if at, err := p.Query(context.Background(), `max(ALERTS_FOR_STATE{alertname="TransactionErrors"})`, inc.OpenedAt); err == nil {
			startsAt = time.Unix(0, int64(at*1e9))
		} else {
			t.Errorf("ALERTS_FOR_STATE: %v", err)
		}
	}
	t.Logf("broken release %s; alert startsAt %s; webhook → incident opened %s; traffic back on v1.1.5 (kube-undo done) %s",
		broken.UTC().Format(time.RFC3339Nano), startsAt.UTC().Format(time.RFC3339Nano), inc.OpenedAt.UTC().Format(time.RFC3339Nano), rolledOut.UTC().Format(time.RFC3339Nano))
	if !startsAt.IsZero() && !rolledOut.IsZero() {
		t.Logf("MEASURE alert fired → traffic back: %.2fs (alert → incident opened %.2fs)", rolledOut.Sub(startsAt).Seconds(), inc.OpenedAt.Sub(startsAt).Seconds())
	}
	// Alertmanager repeats the group every 5 s while it fires, then sends
	// it resolved (which matches no firing alert: "ignored"). Wait, by the
	// server's own count, until the resolved one was handled: none of
	// what came before it started another rollback.
	ignored := func() int {
		_, m := srv.api(t, "GET", "/metrics", "")
		for _, l := range strings.Split(string(m), "\n") {
			if strings.HasPrefix(l, `rollback_triggers_total{action="ignored",source="alertmanager"} `) {
				n, _ := strconv.Atoi(strings.Fields(l)[1])
				return n
			}
		}
		return 0
	}
	for deadline := time.Now().Add(90 * time.Second); ignored() < 1; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Alertmanager's resolved notification was not handled within 90s")
		}
	}
	_, b = srv.api(t, "GET", "/api/v1/incidents?service=ts", "")
	var incs []incidentJSON
	_ = json.Unmarshal(b, &incs)
	if len(incs) != 1 {
		t.Errorf("incidents after the repeats: %d, want 1: %s", len(incs), b)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the repeats: %s, want %s", got, image("v1.1.5"))
	}
	checkDashboard(t, srv, inc.ID)
	_, m := srv.api(t, "GET", "/metrics", "")
	if !strings.Contains(string(m), `rollback_runs_total{outcome="recovered",service="ts"} 1`) {
		t.Errorf("metrics lack the recovered run")
	}
	// A Kubernetes Event for each step, on the Deployment.
	evs, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + app})
	found := false
	for _, e := range evs.Items {
		found = found || e.Reason == "RollbackKubeUndo" && e.Source.Component == "rollback"
	}
	if err != nil || !found {
		t.Errorf("no RollbackKubeUndo Event on the Deployment (%v)", err)
	}
}

// Two replicas on the PostgreSQL store elect a leader on a Lease. The
// leader is killed (SIGKILL) in the middle of a rollback; the other
// replica takes the lead and resumes the incident from its journal.
func TestServeLeaderKilledMidRunResumes(t *testing.T) {
	leaderDiesMidRun(t, syscall.SIGKILL)
}

// SIGTERM with no grace left interrupts the run: its step is journaled
// interrupted (not failed), and the other replica resumes and finishes it
// as it does a crashed one's.
func TestServeSIGTERMMidRunResumes(t *testing.T) {
	leaderDiesMidRun(t, syscall.SIGTERM, "--shutdown-grace", "0s")
}

func leaderDiesMidRun(t *testing.T, sig syscall.Signal, args ...string) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	ctx := context.Background()
	dsn, err := pg.CreateDB(ctx, "serve_"+strings.ReplaceAll(ns, "-", "_"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := serviceConfig(t, "ts", ns, "")
	lease := []string{"--leader-elect", "--lease-namespace", ns, "--lease-duration", "4s"}
	a := startServe(t, dsn, cfg, append(lease, args...)...)
	a.waitLog(t, 30*time.Second, `"msg":"leading"`)
	b := startServe(t, dsn, cfg, lease...)
	code, body := a.api(t, "POST", "/api/v1/runs", `{"service":"ts"}`)
	if code != 202 && code != 200 {
		t.Fatalf("run: %d %s", code, body)
	}
	a.waitLog(t, 30*time.Second, `"msg":"step started"`, `"step":"kube-undo"`)
	_ = a.cmd.Process.Signal(sig)
	killed := time.Now()
	_ = a.cmd.Wait()
	inc := b.waitClosed(t, "ts", 2*time.Minute)
	b.waitLog(t, 30*time.Second, `"msg":"resumed an orphaned incident"`, inc.ID)
	var resuming struct {
		Time time.Time `json:"time"`
	}
	_ = json.Unmarshal([]byte(b.waitLog(t, 30*time.Second, `"msg":"resuming an orphaned incident"`, inc.ID)), &resuming)
	t.Logf("MEASURE leader %s mid-run → the other replica resumed the incident after %.1fs (lease 4s), closed it after %.1fs",
		sig, resuming.Time.Sub(killed).Seconds(), inc.ClosedAt.Sub(killed).Seconds())
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the resume: %s, want %s", got, image("v1.1.5"))
	}
	_, body = b.api(t, "GET", "/api/v1/incidents/"+inc.ID, "")
	var v struct {
		Events []struct{ Step, Phase string } `json:"events"`
	}
	_ = json.Unmarshal(body, &v)
	n := 0
	for _, ev := range v.Events {
		if ev.Step == "kube-undo" && ev.Phase == "done" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("kube-undo done %d times in the journal, want 1:\n%s", n, body)
	}
	l, err := cs.CoordinationV1().Leases(ns).Get(ctx, "rollback-serve", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || !strings.HasSuffix(*l.Spec.HolderIdentity, fmt.Sprint(":", b.cmd.Process.Pid)) {
		t.Errorf("the Lease's holder: %v %v, want the second replica (pid %d)", l.Spec.HolderIdentity, err, b.cmd.Process.Pid)
	}
}

// The CLI works through a server (--server, the token from the
// environment): the run is the server's, the CLI follows it to its
// checklist; status, gate and unblock read and write the server's store.
func TestCLIThroughServer(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	srv := startServe(t, filepath.Join(t.TempDir(), "serve.db"), serviceConfig(t, "ts", ns, ""))
	env := map[string]string{"ROLLBACK_SERVER_TOKEN": serveToken, "ROLLBACK_STORE": filepath.Join(t.TempDir(), "never-used.db")}
	r := rollbackEnv(t, nil, "status", "--server", srv.url)
	if r.code == 0 || !strings.Contains(r.stderr, "HTTP 401") || !strings.Contains(r.stderr, "ROLLBACK_SERVER_TOKEN") {
		t.Errorf("without a token: exit %d %s", r.code, r.stderr)
	}
	r = rollbackEnv(t, env, "run", "ts", "--server", srv.url)
	if r.code != 0 || !strings.Contains(r.stdout, "Kubernetes rollback executed") || !strings.Contains(r.stdout, "closed") {
		t.Fatalf("run through the server: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the run: %s", got)
	}
	if r = rollbackEnv(t, env, "gate", "ts", "v1.2.0", "--server", srv.url); r.code != cli.ExitBlocked {
		t.Errorf("gate of the rolled-back version: exit %d, want %d\n%s", r.code, cli.ExitBlocked, r.stdout)
	}
	if r = rollbackEnv(t, env, "unblock", "ts", "v1.2.0", "--server", srv.url); r.code != 0 {
		t.Errorf("unblock: %d %s", r.code, r.stderr)
	}
	if r = rollbackEnv(t, env, "gate", "ts", "v1.2.0", "--server", srv.url); r.code != 0 {
		t.Errorf("gate after unblock: exit %d", r.code)
	}
	if _, err := os.Stat(env["ROLLBACK_STORE"]); err == nil {
		t.Error("the CLI opened a local store although --server was given")
	}
}

// The supervised canary watch: a service with automation.watch has each
// new release watched by the leader; the broken v1.2.0 is detected from
// Prometheus and rolled back through the runbook, with nobody running
// 'rollback watch'.
func TestServeSupervisedWatchRollsBack(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5")
	_, prom := startDemo(t, ns)
	cfg := serviceConfig(t, "ts", ns, fmt.Sprintf("    verify: {prometheus: \"%s\"}\n    automation:\n%s", prom, watchYAML))
	srv := startServe(t, filepath.Join(t.TempDir(), "serve.db"), cfg)
	waitForBaseline(t, prom) // the watch compares against the healthy version
	kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
	srv.waitLog(t, time.Minute, `"msg":"watching a new release"`, `"version":"v1.2.0"`)
	inc := srv.waitClosed(t, "ts", 5*time.Minute)
	srv.waitLog(t, 30*time.Second, `"msg":"canary breach: rolled back"`, inc.ID)
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the supervised watch: %s, want %s", got, image("v1.1.5"))
	}
	_, b := srv.api(t, "GET", "/api/v1/incidents/"+inc.ID, "")
	if !strings.Contains(string(b), "the canary watch") {
		t.Errorf("the incident was not decided by the canary watch:\n%s", b)
	}
}

// The schedule's chaos drill and fire drill run on the service's staging
// copy (never production): the deliberately failing version is deployed,
// the configured detector finds it and rolls it back (chaos), or the whole
// runbook runs (fire drill); detection and recovery times are recorded
// and the schedule shows them passed.
func TestServeChaosAndFireDrills(t *testing.T) {
	parallel(t)
	prod := namespace(t)
	staging := namespace(t)
	deploy(t, prod, "v1.1.5")
	deploy(t, staging, "v1.1.5")
	_, prom := startDemo(t, staging)
	cfg := serviceConfig(t, "ts", prod, fmt.Sprintf("    verify: {prometheus: \"%s\"}\n    automation:\n%s      staging: {namespace: %s, badImage: \"%s\"}\n",
		prom, watchYAML, staging, image("v1.2.0")))
	srv := startServe(t, filepath.Join(t.TempDir(), "serve.db"), cfg)
	type drill struct {
		Kind, Subject, Detail string
		OK                    bool
	}
	for _, kind := range []string{"chaos", "fire-drill"} {
		code, b := srv.api(t, "POST", "/api/v1/drills", `{"service":"ts","kind":"`+kind+`"}`)
		var d drill
		_ = json.Unmarshal(b, &d)
		t.Logf("%s drill: %s", kind, d.Detail)
		if code != 200 || !d.OK || d.Subject != "v1.2.0" || !strings.Contains(d.Detail, "recovered") {
			t.Errorf("%s drill: %d %s", kind, code, b)
		}
		if kind == "chaos" && !strings.Contains(d.Detail, "detected by") {
			t.Errorf("chaos drill without a detection: %s", d.Detail)
		}
		if got := runningImage(t, staging); got != image("v1.1.5") {
			t.Errorf("staging after the %s drill: %s", kind, got)
		}
	}
	if got := runningImage(t, prod); got != image("v1.1.5") {
		t.Errorf("production was touched: %s", got)
	}
	_, b := srv.api(t, "GET", "/api/v1/schedule", "")
	var items []struct {
		Kind, State string
	}
	_ = json.Unmarshal(b, &items)
	for _, it := range items {
		if (it.Kind == "chaos" || it.Kind == "fire-drill") && it.State != "ok" {
			t.Errorf("%s is %s after a passed drill", it.Kind, it.State)
		}
	}
}

// The store stalls (every PostgreSQL process stopped) for twice the run
// lease while the leader's rollback is mid-step. The run loses its hold,
// its step is cancelled (fenced) and journaled interrupted once the store
// is back; a leader resumes it and finishes it. The journal shows each
// side effect attempted by one holder only (an attempt that failed
// aside), and the undo done once.
func TestServeStorePausedLongerThanTheLease(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	db, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Stop()
	dsn, err := db.CreateDB(ctx, "paused")
	if err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	slowRollout(t, ns)
	// A flag to turn off: a side effect (at most once) after the stall.
	flagFile := filepath.Join(t.TempDir(), "flags.json")
	_ = os.WriteFile(flagFile, []byte(`{"flags": {"transaction-category": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}`), 0o644)
	cfg := serviceConfig(t, "ts", ns, "    flag: {provider: flagd, key: transaction-category, path: "+flagFile+"}\n")
	lease := []string{"--leader-elect", "--lease-namespace", ns, "--lease-duration", "4s"}
	a := startServe(t, dsn, cfg, lease...)
	a.waitLog(t, 30*time.Second, `"msg":"leading"`)
	b := startServe(t, dsn, cfg, lease...)
	if code, body := a.api(t, "POST", "/api/v1/runs", `{"service":"ts"}`); code != 202 && code != 200 {
		t.Fatalf("run: %d %s", code, body)
	}
	a.waitLog(t, 30*time.Second, `"msg":"step started"`, `"step":"kube-undo"`)
	thaw, err := db.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second) // twice the lease
	thaw()
	inc := a.waitClosed(t, "ts", 2*time.Minute)
	_ = b
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("after the stall: %s, want %s", got, image("v1.1.5"))
	}
	_, body := a.api(t, "GET", "/api/v1/incidents/"+inc.ID, "")
	var v struct {
		Events []struct{ Step, Phase, Key, Message string } `json:"events"`
	}
	_ = json.Unmarshal(body, &v)
	interrupted, undone := 0, 0
	holders := map[string]map[string]bool{} // effect -> holders of attempts that did not fail
	failed := map[string]bool{}             // attempts that failed
	for _, ev := range v.Events {
		switch {
		case ev.Phase == "interrupted":
			interrupted++
		case ev.Step == "kube-undo" && ev.Phase == "done":
			undone++
		case ev.Phase == "effect-failed":
			failed[strings.TrimPrefix(ev.Key, "failed:")] = true
		}
	}
	for _, ev := range v.Events {
		if ev.Phase != "intent" {
			continue
		}
		attempt := strings.TrimPrefix(ev.Key, "intent:")
		if failed[attempt] {
			continue
		}
		effect, _, _ := strings.Cut(attempt, "#")
		if holders[effect] == nil {
			holders[effect] = map[string]bool{}
		}
		holders[effect][strings.TrimPrefix(ev.Message, "by ")] = true
	}
	for effect, hs := range holders {
		if len(hs) != 1 {
			t.Errorf("side effect %s attempted by %d holders: %v", effect, len(hs), hs)
		}
	}
	if len(holders) == 0 {
		t.Error("no side effect journaled (the flag's): the holder check checked nothing")
	}
	if undone != 1 || interrupted == 0 {
		t.Errorf("kube-undo done %d times (want 1), %d steps interrupted (want the fenced one):\n%s", undone, interrupted, body)
	}
	t.Logf("MEASURE store stalled 8 s (lease 4 s) mid-undo: %d step(s) interrupted, %d side effects each by one holder, closed %s after opening",
		interrupted, len(holders), inc.ClosedAt.Sub(inc.OpenedAt).Round(100*time.Millisecond))
}
