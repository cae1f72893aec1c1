package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/reaper"
)

func rollbackCmd(st string, args ...string) *exec.Cmd {
	cmd := reaper.Child(exec.Command(filepath.Join(binDir, "rollback"), args...))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "ROLLBACK_STORE="+st)
	return cmd
}

type statusJSON struct {
	Incident struct {
		ID         string `json:"id"`
		Service    string `json:"service"`
		Status     string `json:"status"`
		BadVersion string `json:"badVersion"`
	} `json:"incident"`
	Checklist []struct {
		Item   string `json:"item"`
		Step   string `json:"step"`
		Status string `json:"status"`
	} `json:"checklist"`
}

// item is the checklist's item of a step.
func (s statusJSON) item(t *testing.T, step string) (text, status string) {
	t.Helper()
	for _, it := range s.Checklist {
		if it.Step == step {
			return it.Item, it.Status
		}
	}
	t.Fatalf("no checklist item for step %s in %+v", step, s.Checklist)
	return "", ""
}

func incidentStatus(t *testing.T, st, id string) statusJSON {
	t.Helper()
	out, err := rollbackCmd(st, "status", id, "-o", "json").Output()
	if err != nil {
		t.Fatalf("status %s: %v", id, err)
	}
	var s statusJSON
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return s
}

// plainNA are the steps whose checklist items do not apply to a service
// with no database, metric checks or feature flag configured.
var plainNA = []string{incident.StepSnapshot, incident.StepDownMig, incident.StepMetrics, incident.StepFlagOff}

// checkFinished: the incident is closed with every checklist item done,
// except the items of the steps na, which must be "n/a": an item that
// applies is never accepted as "n/a".
func checkFinished(t *testing.T, st, id, ns string, na ...string) {
	t.Helper()
	s := incidentStatus(t, st, id)
	if s.Incident.Status != "closed" || s.Incident.BadVersion != "v1.2.0" || len(s.Checklist) != 11 {
		t.Errorf("incident %+v, %d checklist items", s.Incident, len(s.Checklist))
	}
	for i, it := range s.Checklist {
		want := "done"
		if slices.Contains(na, it.Step) {
			want = "n/a"
		}
		// The declare and close items say "not notified" when nothing was
		// delivered (no notifier configured, or a post interrupted and not
		// confirmed).
		comms := it.Step == incident.StepDeclare || it.Step == incident.StepClose
		if it.Status != want && !(it.Status == "not notified" && comms) {
			t.Errorf("item %d %q is %s, want %s", i+1, it.Item, it.Status, want)
		}
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("running %s, want %s", got, image("v1.1.5"))
	}
	// The broken version is blocked for CI.
	err := rollbackCmd(st, "gate", s.Incident.Service, "v1.2.0").Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != cli.ExitBlocked {
		t.Errorf("gate after the run: %v, want exit %d", err, cli.ExitBlocked)
	}
}

func TestWholeRunbook(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	st := filepath.Join(t.TempDir(), "r.db")
	out, err := rollbackCmd(st, "run", "deployment/"+app, "-n", ns, "--yes", "-o", "json").Output()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	var res struct {
		Incident string `json:"incident"`
		Outcome  string `json:"outcome"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Incident == "" || res.Outcome != "rolled-back" {
		t.Fatalf("run result %s (%v)", out, err)
	}
	checkFinished(t, st, res.Incident, ns, plainNA...)
	rep, err := rollbackCmd(st, "report", res.Incident).Output()
	if err != nil || !strings.Contains(string(rep), "# Post-incident review: "+res.Incident) || !strings.Contains(string(rep), "Time to recover:") {
		t.Errorf("report: %v\n%s", err, rep)
	}
}

// TestKilledRunResumes kills the run (SIGKILL) right after the Kubernetes
// undo and resumes it: it converges, and nothing finished is done twice.
func TestKilledRunResumes(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	st := filepath.Join(t.TempDir(), "r.db")
	cmd := rollbackCmd(st, "run", "deployment/"+app, "-n", ns, "--yes")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	killed := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Kubernetes undo: done") {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
			break
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatal("the run ended before it could be killed")
	}
	list, err := rollbackCmd(st, "status", "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var open []struct{ ID string }
	if err := json.Unmarshal(list, &open); err != nil || len(open) != 1 {
		t.Fatalf("open incidents: %s (%v)", list, err)
	}
	id := open[0].ID
	if out, err := rollbackCmd(st, "resume", id).CombinedOutput(); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	checkFinished(t, st, id, ns, plainNA...)
	// A second resume finds everything done and changes nothing.
	out, err := rollbackCmd(st, "resume", id).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "already done") {
		t.Errorf("second resume: %v\n%s", err, out)
	}
}

func TestConcurrentRunsOneProceeds(t *testing.T) {
	parallel(t)
	// With the SQLite store the lease decides; with PostgreSQL the
	// advisory lock as well.
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			deploy(t, ns, "v1.1.5", "v1.2.0")
			st := filepath.Join(t.TempDir(), "r.db")
			if kind == "postgres" {
				var err error
				if st, err = pg.CreateDB(context.Background(), "store_"+strings.ReplaceAll(ns, "-", "_")); err != nil {
					t.Fatal(err)
				}
			}
			codes := make([]int, 2)
			outs := make([]string, 2)
			var wg sync.WaitGroup
			for i := range codes {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					out, err := rollbackCmd(st, "run", "deployment/"+app, "-n", ns, "--yes").CombinedOutput()
					outs[i] = string(out)
					if ee, ok := err.(*exec.ExitError); ok {
						codes[i] = ee.ExitCode()
					} else if err != nil {
						codes[i] = -1
					}
				}(i)
			}
			wg.Wait()
			t.Logf("exit codes %v", codes)
			ok, other := 0, -1
			for i, c := range codes {
				if c == 0 {
					ok++
				} else {
					other = i
				}
			}
			if ok != 1 || other < 0 {
				t.Fatalf("exit codes %v, want exactly one success\n%s\n%s", codes, outs[0], outs[1])
			}
			// The other one met the lease (or lock): the service is taken
			// before planning, so it never plans against the winner's undo
			// ("no revision to roll back to") and always says who holds it.
			if codes[other] != cli.ExitLocked || !strings.Contains(outs[other], "already running") {
				t.Errorf("second run: exit %d, want %d saying who holds the service\n%s", codes[other], cli.ExitLocked, outs[other])
			}
			if got := runningImage(t, ns); got != image("v1.1.5") {
				t.Errorf("running %s", got)
			}
			// A run refused because another held the service opened no
			// incident: nothing is left open.
			if out, err := rollbackCmd(st, "status", "-o", "json").Output(); err != nil || strings.TrimSpace(string(out)) != "[]" {
				t.Errorf("open incidents after both runs: %s (%v)", out, err)
			}
			if codes[other] == cli.ExitLocked && incidentID.MatchString(outs[other]) {
				t.Errorf("the refused run names an incident:\n%s", outs[other])
			}
		})
	}
}

// TestRunWalksTheDecision: with --severity the flowchart runs first; a
// hotfix minutes away means roll forward, so the run refuses and changes
// nothing; --force rolls back and records the operator overruling it.
func TestRunWalksTheDecision(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	dir := t.TempDir()
	st := filepath.Join(dir, "r.db")
	cfg := filepath.Join(dir, "rollback.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: rollback/v1\nkind: Config\nservices:\n  web:\n    kubernetes: {namespace: "+ns+", name: "+app+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := getDeployment(t, ns)
	out, err := rollbackCmd(st, "run", "web", "--config", cfg, "--yes", "--severity", "P1", "--hotfix-eta", "5m", "--api-adopted=false").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != cli.ExitRefused || !strings.Contains(string(out), "roll-forward (P1)") || !strings.Contains(string(out), "--force") {
		t.Fatalf("hotfix in 5m: %v, want exit %d saying roll forward\n%s", err, cli.ExitRefused, out)
	}
	assertUnchanged(t, ns, before)
	out, err = rollbackCmd(st, "run", "web", "--config", cfg, "--yes", "--severity", "P1", "--hotfix-eta", "5m", "--api-adopted=false", "--force", "-o", "json").Output()
	if err != nil {
		t.Fatalf("--force: %v\n%s", err, out)
	}
	var res struct{ Incident string }
	_ = json.Unmarshal(out, &res)
	checkFinished(t, st, res.Incident, ns, plainNA...)
	rep, _ := rollbackCmd(st, "report", res.Incident).Output()
	for _, want := range []string{"Decision: **roll-back**", "overruled the flowchart's roll-forward with --force", "Is a hotfix available in < 15 min?", "yes: ETA 5m0s"} {
		if !strings.Contains(string(rep), want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}
