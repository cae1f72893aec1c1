package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/outbound/outboundtest"
	"github.com/rollback-dev/rollback/internal/pgtest"
	"github.com/rollback-dev/rollback/internal/store"
)

// The fault matrix: each case states its expected outcome and checks that
// the Deployment was rolled back (or the run failed resumably), and that
// nothing was lost or done twice. Its timings are logged as a table
// (go test -v -run TestFault ./test/e2e).

// hungServer accepts connections and never answers until the test ends.
func hungServer(t *testing.T) string {
	t.Helper()
	url, stop := outboundtest.Hung()
	t.Cleanup(stop)
	return url
}

// failingServer answers every request with code (and Retry-After: 1 on
// 429), counting requests.
func failingServer(t *testing.T, code int) (string, func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// closedPort is a URL nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// commsConfig is rollback.yaml for service "web" in ns with every
// communication endpoint at url (Slack, PagerDuty Events and REST, a
// webhook whose URL holds a secret, LaunchDarkly).
func commsConfig(t *testing.T, ns, url string) string {
	t.Helper()
	// The declare step's deadline (15 s) is longer than the undo takes on
	// a loaded machine: with a hung endpoint the test asserts the undo is
	// done before the notify gives up.
	return webConfig(t, ns, fmt.Sprintf(`    notify:
      timeout: 1s
      deadline: 15s
      slack: {tokenEnv: SLACK_TOKEN, apiURL: %s/api}
      pagerduty: {routingKeyEnv: PD_KEY, eventsURL: %s/v2/enqueue, apiTokenEnv: PD_TOKEN, from: oncall@example.com, apiURL: %s}
      webhooks:
        - {name: status, format: json, urlEnv: HOOK_URL}
    flag: {provider: launchdarkly, key: transaction-category, project: default, environment: production, url: %s, tokenEnv: LD_TOKEN, timeout: 4s}
`, url, url, url, url))
}

// webConfig writes rollback.yaml for service "web" (the test app in ns)
// with the given further settings (YAML lines indented by four spaces).
func webConfig(t *testing.T, ns, settings string) string {
	t.Helper()
	return serviceConfig(t, "web", ns, settings)
}

// serviceConfig writes rollback.yaml for service svc (the test app in ns)
// with the given further settings (YAML lines indented by four spaces).
func serviceConfig(t *testing.T, svc, ns, settings string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "rollback.yaml")
	body := fmt.Sprintf("apiVersion: rollback/v1\nkind: Config\nservices:\n  %s:\n    kubernetes: {namespace: %s, name: %s}\n%s", svc, ns, app, settings)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func commsEnv(url string) map[string]string {
	return map[string]string{"SLACK_TOKEN": "xoxb-canary-1", "PD_KEY": "pdkey-canary-2", "PD_TOKEN": "pdtok-canary-3",
		"HOOK_URL": url + "/hooks/T000/B000/canary-4", "LD_TOKEN": "api-canary-5"}
}

// journal reads an incident's events from a SQLite store.
func journal(t *testing.T, st, id string) []store.Event {
	t.Helper()
	s, err := store.Open(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.Events(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// stepAt is when a step reached phase, relative to the first event.
func stepAt(evs []store.Event, step, phase string) (time.Duration, bool) {
	if len(evs) == 0 {
		return 0, false
	}
	for _, ev := range evs {
		if ev.Step == step && string(ev.Phase) == phase {
			return ev.Time.Sub(evs[0].Time), true
		}
	}
	return 0, false
}

// stepIndex is the position in the journal of the step's first event in
// one of the phases, or -1.
func stepIndex(evs []store.Event, step string, phases ...store.Phase) int {
	for i, ev := range evs {
		if ev.Step == step && slices.Contains(phases, ev.Phase) {
			return i
		}
	}
	return -1
}

// faultRow is one line of the matrix's table.
type faultRow struct {
	name, outcome string
	rolledBack    time.Duration
}

var (
	faultMu    sync.Mutex
	faultTable []faultRow
)

func recordFault(t *testing.T, r faultRow) {
	faultMu.Lock()
	defer faultMu.Unlock()
	faultTable = append(faultTable, r)
	t.Logf("FAULT | %-44s | %-60s | rolled back at %s", r.name, r.outcome, r.rolledBack.Round(10*time.Millisecond))
}

// runComms runs 'rollback run web' against endpoints at url and returns
// the incident's journal and the run's result.
func runComms(t *testing.T, ns, url string, extra ...string) (result, []store.Event, string) {
	t.Helper()
	st := filepath.Join(t.TempDir(), "r.db")
	env := commsEnv(url)
	env["ROLLBACK_STORE"] = st
	args := append([]string{"run", "web", "--config", commsConfig(t, ns, url), "--yes", "--pagerduty-incident", "Q1PAGED"}, extra...)
	r := rollbackEnv(t, env, args...)
	id := incidentID.FindString(r.stdout + r.stderr)
	if id == "" {
		t.Fatalf("no incident in the output:\n%s%s", r.stdout, r.stderr)
	}
	return r, journal(t, st, id), st
}

// TestFaultCommunicationNeverDelaysRecovery: with every Slack, PagerDuty,
// webhook and flag endpoint hung (accepting, never answering) or failing
// (500; 429 with Retry-After), the Deployment is rolled back as fast as
// with none configured, the version is blocked, and the checklist says
// nobody was notified instead of "done".
func TestFaultCommunicationNeverDelaysRecovery(t *testing.T) {
	parallel(t)
	// Baseline: nothing configured.
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	st := filepath.Join(t.TempDir(), "r.db")
	r := rollbackEnv(t, map[string]string{"ROLLBACK_STORE": st}, "run", "deployment/"+app, "-n", ns, "--yes")
	if r.code != 0 {
		t.Fatalf("baseline run: %d", r.code)
	}
	base, _ := stepAt(journal(t, st, incidentID.FindString(r.stdout)), incident.StepKube, "done")
	recordFault(t, faultRow{"no communication configured (baseline)", "rolled back, exit 0", base})

	hung := hungServer(t)
	e500, n500 := failingServer(t, http.StatusInternalServerError)
	e429, n429 := failingServer(t, http.StatusTooManyRequests)
	for _, tc := range []struct{ name, url string }{
		{"every comms/flag endpoint hung", hung},
		{"every comms/flag endpoint answers 500", e500},
		{"every comms/flag endpoint answers 429 Retry-After: 1", e429},
		{"every comms/flag endpoint refuses connections", closedPort(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			deploy(t, ns, "v1.1.5", "v1.2.0")
			start := time.Now()
			r, evs, st := runComms(t, ns, tc.url)
			took := time.Since(start)
			if r.code != 0 {
				t.Fatalf("exit %d, want 0: communication is evidence, never a stop", r.code)
			}
			if got := runningImage(t, ns); got != image("v1.1.5") {
				t.Fatalf("running %s", got)
			}
			at, ok := stepAt(evs, incident.StepKube, "done")
			if !ok {
				t.Fatal("no kube-undo done in the journal")
			}
			// The journal's order, not a tolerance: the undo starts
			// before the declare step (whose notify is the slow part)
			// has finished, and with a hung endpoint the undo is done
			// before the notify gives up.
			undoStarted := stepIndex(evs, incident.StepKube, store.PhaseStarted)
			undoDone := stepIndex(evs, incident.StepKube, store.PhaseDone)
			declared := stepIndex(evs, incident.StepDeclare, store.PhaseDone, store.PhaseFailed)
			if undoStarted < 0 || declared < 0 || undoStarted > declared {
				t.Errorf("journal order: undo started at event %d, declare ended at event %d: the undo waited for communication", undoStarted, declared)
			}
			if tc.url == hung && undoDone > declared {
				t.Errorf("journal order: undo done at event %d, after the hung notify gave up at event %d", undoDone, declared)
			}
			blockedAt, _ := stepAt(evs, incident.StepBlock, "done")
			if blockedAt == 0 {
				t.Error("the version was not blocked")
			}
			s := incidentStatus(t, st, incidentID.FindString(r.stdout+r.stderr))
			for _, step := range []string{incident.StepDeclare, incident.StepClose} {
				if item, st := s.item(t, step); st == "done" {
					t.Errorf("checklist %q says done although nothing was delivered", item)
				}
			}
			if _, st := s.item(t, incident.StepFlagOff); st != "failed" {
				t.Errorf("flag item is %s, want failed", st)
			}
			if err := rollbackCmd(st, "gate", "web", "v1.2.0", "--config", commsConfig(t, ns, tc.url)).Run(); err == nil {
				t.Error("gate passes the broken version")
			}
			recordFault(t, faultRow{tc.name, fmt.Sprintf("rolled back, exit 0, run %s, not notified", took.Round(100*time.Millisecond)), at})
		})
	}
	t.Cleanup(func() {
		if n500() == 0 || n429() == 0 {
			t.Errorf("the failing endpoints saw no request (500: %d, 429: %d)", n500(), n429())
		}
	})
}

// TestFaultPrometheusUnreachable: verification retries an unreachable or
// silent Prometheus until its window ends and then fails with what it saw,
// but the broken version was blocked before, right after the undo; the
// incident stays open and resumable.
func TestFaultPrometheusUnreachable(t *testing.T) {
	parallel(t)
	for _, tc := range []struct{ name, url string }{
		{"Prometheus refuses connections", closedPort(t)},
		{"Prometheus never answers", hungServer(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			deploy(t, ns, "v1.1.5", "v1.2.0")
			st := filepath.Join(t.TempDir(), "r.db")
			cfg := webConfig(t, ns, fmt.Sprintf("    verify: {prometheus: %q, errorRateQuery: 'sum(rate(x[1m]))', within: 3s}\n", tc.url))
			start := time.Now()
			r := rollbackEnv(t, map[string]string{"ROLLBACK_STORE": st}, "run", "web", "--config", cfg, "--yes")
			took := time.Since(start)
			if r.code != cli.ExitFailed || !strings.Contains(r.stderr, "unreachable") || !strings.Contains(r.stderr, "rollback resume") {
				t.Fatalf("exit %d, want %d naming what was seen and how to resume", r.code, cli.ExitFailed)
			}
			if took > 90*time.Second {
				t.Errorf("the run took %s with verify.within 3s", took)
			}
			if err := rollbackCmd(st, "gate", "web", "v1.2.0", "--config", cfg).Run(); err == nil {
				t.Error("the broken version is not blocked although the rollback moved off it")
			}
			id := incidentID.FindString(r.stderr)
			evs := journal(t, st, id)
			at, _ := stepAt(evs, incident.StepKube, "done")
			// While it is open, a new run is refused and told how to go on;
			// closed by hand (with a reason, journaled), it no longer is.
			env := map[string]string{"ROLLBACK_STORE": st}
			if again := rollbackEnv(t, env, "run", "web", "--config", cfg, "--yes"); again.code != cli.ExitRefused || !strings.Contains(again.stderr, "still open") || !strings.Contains(again.stderr, "rollback close "+id) {
				t.Errorf("run while %s is open: exit %d, want %d naming resume and close", id, again.code, cli.ExitRefused)
			}
			if c := rollbackEnv(t, env, "close", id, "--reason", "verified in Grafana by hand"); c.code != 0 {
				t.Fatalf("close: exit %d", c.code)
			}
			if again := rollbackEnv(t, env, "run", "web", "--config", cfg, "--yes"); strings.Contains(again.stderr, "still open") {
				t.Errorf("run after close is still refused for the open incident:\n%s", again.stderr)
			}
			if rep := rollbackEnv(t, env, "report", id); !strings.Contains(rep.stdout, "closed by hand") {
				t.Errorf("the report does not say the incident was closed by hand")
			}
			recordFault(t, faultRow{tc.name, fmt.Sprintf("rolled back + blocked; metrics failed after %s, exit 5, resumable", took.Round(100*time.Millisecond)), at})
		})
	}
}

// TestFaultInterruptedThenRerun: SIGINT while the undo rolls out (exit
// 130), then the same command again. It must never roll forward to the
// broken version: the rerun refuses and names the open incident, the
// abandoned revision was marked bad before the undo, the good version is
// not blocked, and --resume finishes the rollback.
func TestFaultInterruptedThenRerun(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	slowRollout(t, ns)
	st := filepath.Join(t.TempDir(), "r.db")
	start := time.Now()
	var run *exec.Cmd
	err, first := startRunCmd(t, st, ns, func(c *exec.Cmd) { run = c }, func() { _ = run.Process.Signal(syscall.SIGINT) })
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != cli.ExitInterrupted {
		t.Fatalf("interrupted run: %v, want exit %d\n%s", err, cli.ExitInterrupted, first)
	}
	noted := false
	for _, ev := range journal(t, st, incidentID.FindString(first)) {
		noted = noted || ev.Phase == "note" && strings.Contains(ev.Message, "marked bad before the undo")
	}
	if !noted {
		t.Error("the abandoned revision's bad mark is not in the interrupted incident's journal")
	}
	// The same command again.
	out, err := rollbackCmd(st, "run", "deployment/"+app, "-n", ns, "--yes").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != cli.ExitRefused || !strings.Contains(string(out), "rollback resume INC-") {
		t.Fatalf("rerun: %v, want exit %d naming 'rollback resume'\n%s", err, cli.ExitRefused, out)
	}
	h := history(t, ns)
	for _, r := range h.Revisions {
		if strings.HasSuffix(r.Images[0], ":v1.2.0") && r.Health != "bad" {
			t.Errorf("the abandoned v1.2.0 is %s, want bad (marked before the undo)", r.Health)
		}
		if strings.HasSuffix(r.Images[0], ":v1.1.5") && r.Health == "bad" {
			t.Error("the good v1.1.5 is marked bad")
		}
	}
	if err := rollbackCmd(st, "gate", "deployment/"+app, "-n", ns, "v1.1.5").Run(); err != nil {
		t.Errorf("the good version is blocked: %v", err)
	}
	out, err = rollbackCmd(st, "run", "deployment/"+app, "-n", ns, "--yes", "--resume").CombinedOutput()
	if err != nil {
		t.Fatalf("--resume: %v\n%s", err, out)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Fatalf("running %s after --resume", got)
	}
	err = rollbackCmd(st, "gate", "deployment/"+app, "-n", ns, "v1.2.0").Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != cli.ExitBlocked {
		t.Errorf("gate v1.2.0 after resume: %v, want exit %d", err, cli.ExitBlocked)
	}
	// Exactly one undo: the Deployment went 2 -> 3 and no further.
	if got := getDeployment(t, ns).Annotations["deployment.kubernetes.io/revision"]; got != "3" {
		t.Errorf("revision %s, want 3 (one undo)", got)
	}
	recordFault(t, faultRow{"SIGINT mid-rollout, then the same command", "exit 130; rerun refused (exit 3, names resume); --resume finishes", time.Since(start)})
}

// slowRollout makes the next rollout of the Deployment take seconds
// (each new pod must stay Ready 3 s), so a fault can land in the middle.
func slowRollout(t *testing.T, ns string) {
	t.Helper()
	setMinReady(t, ns, 3)
}

// setMinReady sets the Deployment's minReadySeconds: a rollout under a
// long one does not finish until it is lowered.
func setMinReady(t *testing.T, ns string, seconds int32) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := getDeployment(t, ns)
		d.Spec.MinReadySeconds = seconds
		_, err := cs.AppsV1().Deployments(ns).Update(context.Background(), d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startRun starts 'rollback run' and calls fault once the rollout reports
// progress; it returns the run's exit error and its stderr.
func startRun(t *testing.T, st, ns string, fault func()) (error, string) {
	t.Helper()
	return startRunCmd(t, st, ns, nil, fault)
}

// startRunCmd is startRun, telling started the command once it runs.
func startRunCmd(t *testing.T, st, ns string, started func(*exec.Cmd), fault func()) (error, string) {
	t.Helper()
	cmd := rollbackCmd(st, "run", "deployment/"+app, "-n", ns, "--yes")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if started != nil {
		started(cmd)
	}
	sc := bufio.NewScanner(stderr)
	var lines []string
	done := false
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if !done && strings.Contains(sc.Text(), "Waiting for deployment") {
			done = true
			fault()
		}
	}
	err = cmd.Wait()
	if !done {
		t.Fatalf("the rollout never reported progress (%v):\n%s", err, strings.Join(lines, "\n"))
	}
	return err, strings.Join(lines, "\n")
}

// TestFaultAPIServerPausedMidRollout (serial: it pauses the shared
// sandbox): the kube-apiserver is stopped (SIGSTOP) for 10 s while the
// undo rolls out; the run waits it out and finishes the rollback.
func TestFaultAPIServerPausedMidRollout(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(sandboxDir, "sandbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		Procs []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"procs"`
	}
	if err := json.Unmarshal(b, &state); err != nil {
		t.Fatal(err)
	}
	pid := 0
	for _, p := range state.Procs {
		if p.Name == "kube-apiserver" {
			pid = p.PID
		}
	}
	if pid == 0 {
		t.Fatalf("no kube-apiserver in %s", b)
	}
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	slowRollout(t, ns)
	st := filepath.Join(t.TempDir(), "r.db")
	start := time.Now()
	err, out := startRun(t, st, ns, func() {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
		time.AfterFunc(10*time.Second, func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	})
	_ = syscall.Kill(pid, syscall.SIGCONT)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("run with the API server paused 10 s: %v\n%s", err, out)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Fatalf("running %s", got)
	}
	if got := getDeployment(t, ns).Annotations["deployment.kubernetes.io/revision"]; got != "3" {
		t.Errorf("revision %s, want 3 (one undo)", got)
	}
	evs := journal(t, st, incidentID.FindString(out))
	at, _ := stepAt(evs, incident.StepKube, "done")
	recordFault(t, faultRow{"kube-apiserver paused 10 s mid-rollout", fmt.Sprintf("rolled back, exit 0, run %s", took.Round(100*time.Millisecond)), at})
}

// TestFaultStoreRestartedMidRun (serial, on a PostgreSQL of its own): the
// team store restarts while the undo rolls out, dropping the run's
// advisory-lock connection. The run takes the lock again and finishes, or
// stops resumably; either way the rollback ends done exactly once.
func TestFaultStoreRestartedMidRun(t *testing.T) {
	ctx := context.Background()
	srv, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	st, err := srv.CreateDB(ctx, "store")
	if err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	slowRollout(t, ns)
	start := time.Now()
	var restartErr error
	err, out := startRun(t, st, ns, func() { restartErr = srv.Restart(ctx) })
	if restartErr != nil {
		t.Fatal(restartErr)
	}
	outcome := "finished, exit 0"
	id := incidentID.FindString(out)
	if err != nil {
		if !strings.Contains(out, "rollback resume "+id) {
			t.Fatalf("the run failed without saying how to resume: %v\n%s", err, out)
		}
		res, rerr := rollbackCmd(st, "resume", id).CombinedOutput()
		if rerr != nil {
			t.Fatalf("resume after the store restart: %v\n%s", rerr, res)
		}
		outcome = fmt.Sprintf("stopped (%v), resumed", err)
	}
	checkFinished(t, st, id, ns, plainNA...)
	if got := getDeployment(t, ns).Annotations["deployment.kubernetes.io/revision"]; got != "3" {
		t.Errorf("revision %s, want 3 (one undo)", got)
	}
	recordFault(t, faultRow{"PostgreSQL store restarted mid-rollout", outcome, time.Since(start)})
}
