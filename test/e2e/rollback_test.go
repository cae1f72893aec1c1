package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/cli"
)

// historyJSON is the -o json shape of `rollback history`.
type historyJSON struct {
	Current   int64 `json:"currentRevision"`
	Revisions []struct {
		Revision    int64    `json:"revision"`
		Images      []string `json:"images"`
		ChangeCause string   `json:"changeCause"`
		Health      string   `json:"health"`
		Current     bool     `json:"current"`
	} `json:"revisions"`
}

func history(t *testing.T, ns string) historyJSON {
	t.Helper()
	r := rollback(t, "history", "deployment/"+app, "-n", ns, "-o", "json")
	if r.code != 0 {
		t.Fatalf("history: exit %d: %s", r.code, r.stderr)
	}
	var h historyJSON
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
		t.Fatalf("history -o json: %v\n%s", err, r.stdout)
	}
	return h
}

var kubectlHistoryLine = regexp.MustCompile(`^(\d+)\s+(.*?)\s*$`)

// agreeWithKubectl checks that the real kubectl's rollout history and
// rollout status say what rollback reported.
func agreeWithKubectl(t *testing.T, ns string) {
	t.Helper()
	h := history(t, ns)
	var mine []string
	for _, r := range h.Revisions {
		mine = append(mine, fmt.Sprintf("%d %s", r.Revision, r.ChangeCause))
	}
	var theirs []string
	for _, line := range strings.Split(kubectl(t, "rollout", "history", "deployment/"+app, "-n", ns), "\n") {
		if m := kubectlHistoryLine.FindStringSubmatch(line); m != nil {
			theirs = append(theirs, m[1]+" "+m[2])
		}
	}
	sort.Strings(mine)
	sort.Strings(theirs)
	if strings.Join(mine, "|") != strings.Join(theirs, "|") {
		t.Errorf("history disagrees with kubectl rollout history:\nrollback: %q\nkubectl:  %q", mine, theirs)
	}
	st := kubectl(t, "rollout", "status", "deployment/"+app, "-n", ns, "--timeout=10s")
	if !strings.Contains(st, "successfully rolled out") {
		t.Errorf("kubectl rollout status = %q, want successfully rolled out", st)
	}
	cur := kubectl(t, "get", "deployment", app, "-n", ns, "-o", "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}")
	if cur != fmt.Sprint(h.Current) {
		t.Errorf("current revision: rollback says %d, the Deployment says %s", h.Current, cur)
	}
}

func TestUndoToPrevious(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "-o", "json")
	if r.code != cli.ExitOK {
		t.Fatalf("run: got exit %d, want 0: %s", r.code, r.stderr)
	}
	var res struct {
		Outcome   string   `json:"outcome"`
		RolledOut bool     `json:"rolledOut"`
		Images    []string `json:"images"`
		ReadyPods int      `json:"readyPods"`
		Revision  int64    `json:"revision"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("run -o json: %v\n%s", err, r.stdout)
	}
	if res.Outcome != "rolled-back" || !res.RolledOut || res.ReadyPods != 3 || res.Revision != 3 {
		t.Errorf("result = %+v, want rolled-back, rolled out, 3 ready pods, revision 3", res)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("running image %s, want %s", got, image("v1.1.5"))
	}
	h := history(t, ns)
	marks := map[int64]string{}
	for _, rv := range h.Revisions {
		marks[rv.Revision] = rv.Health
	}
	if marks[2] != "bad" || marks[3] != "good" {
		t.Errorf("marks = %v, want revision 2 bad and 3 good", marks)
	}
	if !strings.Contains(r.stderr, "Wait for rollout") || !regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`).MatchString(r.stderr) {
		t.Errorf("progress on a non-terminal should be timestamped step lines, got:\n%s", r.stderr)
	}
	agreeWithKubectl(t, ns)
}

func TestToRevision(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.0.0", "v1.1.5", "v1.2.0")
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--to-revision", "1")
	if r.code != cli.ExitOK {
		t.Fatalf("run: got exit %d, want 0: %s", r.code, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.0.0") {
		t.Errorf("running image %s, want %s", got, image("v1.0.0"))
	}
	agreeWithKubectl(t, ns)
}

func TestUnknownRevision(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	before := getDeployment(t, ns)
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--to-revision", "99")
	if r.code != cli.ExitRefused {
		t.Errorf("got exit %d, want %d", r.code, cli.ExitRefused)
	}
	if !strings.Contains(r.stderr, "revision 99 is not in the history") || !strings.Contains(r.stderr, "available: 1, 2") {
		t.Errorf("error should name the revision and the available ones, got: %s", r.stderr)
	}
	assertUnchanged(t, ns, before)
}

func TestPausedDeploymentRefused(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	kubectl(t, "rollout", "pause", "deployment/"+app, "-n", ns)
	before := getDeployment(t, ns)
	r := rollback(t, "run", "deployment/"+app, "-n", ns)
	if r.code != cli.ExitRefused {
		t.Errorf("got exit %d, want %d", r.code, cli.ExitRefused)
	}
	if !strings.Contains(r.stderr, "paused") || !strings.Contains(r.stderr, "kubectl rollout resume") {
		t.Errorf("error should say the deployment is paused and how to resume it, got: %s", r.stderr)
	}
	assertUnchanged(t, ns, before)
}

func TestTemplateAlreadyMatches(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	before := getDeployment(t, ns)
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--to-revision", "2")
	if r.code != cli.ExitOK {
		t.Fatalf("got exit %d, want 0: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "Nothing to do") || !strings.Contains(r.stderr, "skipped rollback (current template already matches revision 2)") {
		t.Errorf("should say nothing was done and why, got stdout %q stderr %q", r.stdout, r.stderr)
	}
	assertUnchanged(t, ns, before)
}

// TestDoubleRollbackNeverReturnsToBroken is kubectl's pitfall: after an
// undo, the undone revision is "previous", so a second undo brings the
// broken version back. rollback marks it bad and skips it.
func TestDoubleRollbackNeverReturnsToBroken(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.0.0", "v1.1.5", "v1.2.0")
	if r := rollback(t, "run", "deployment/"+app, "-n", ns); r.code != cli.ExitOK {
		t.Fatalf("first run: exit %d: %s", r.code, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Fatalf("after first rollback: %s, want %s", got, image("v1.1.5"))
	}
	// What kubectl would pick now: the highest revision below the current
	// one, which is the broken v1.2.0.
	pr := rollback(t, "plan", "deployment/"+app, "-n", ns, "-o", "json")
	if pr.code != 0 {
		t.Fatalf("plan: exit %d: %s", pr.code, pr.stderr)
	}
	var plan struct {
		To struct {
			Revision int64    `json:"revision"`
			Images   []string `json:"images"`
		} `json:"to"`
	}
	if err := json.Unmarshal([]byte(pr.stdout), &plan); err != nil {
		t.Fatal(err)
	}
	if plan.To.Images[0] == image("v1.2.0") {
		t.Fatalf("plan targets the broken version %v", plan.To)
	}
	if r := rollback(t, "run", "deployment/"+app, "-n", ns); r.code != cli.ExitOK {
		t.Fatalf("second run: exit %d: %s", r.code, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.0.0") {
		t.Errorf("after second rollback: %s, want %s (never the broken %s)", got, image("v1.0.0"), image("v1.2.0"))
	}
	// A third rollback has nowhere safe to go: refused, nothing changed.
	before := getDeployment(t, ns)
	r := rollback(t, "run", "deployment/"+app, "-n", ns)
	if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "no revision to roll back to") {
		t.Errorf("third run: exit %d (want %d), stderr %s", r.code, cli.ExitRefused, r.stderr)
	}
	assertUnchanged(t, ns, before)
	agreeWithKubectl(t, ns)
}

func TestDryRunChangesNothing(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	for _, mode := range []string{"client", "server"} {
		before := getDeployment(t, ns)
		r := rollback(t, "run", "deployment/"+app, "-n", ns, "--dry-run="+mode)
		if r.code != cli.ExitOK {
			t.Fatalf("--dry-run=%s: exit %d: %s", mode, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "Dry run ("+mode+")") || !strings.Contains(r.stdout, "Nothing was changed") {
			t.Errorf("--dry-run=%s output %q should say it was a dry run", mode, r.stdout)
		}
		assertUnchanged(t, ns, before)
	}
	if h := history(t, ns); len(h.Revisions) != 2 {
		t.Errorf("dry runs created revisions: %+v", h.Revisions)
	}
}

func TestRolloutTimeout(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.0.0!unschedulable", "v1.1.5")
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--to-revision", "1", "--timeout", "3s")
	if r.code != cli.ExitTimeout {
		t.Errorf("got exit %d, want %d (timeout)", r.code, cli.ExitTimeout)
	}
	if !strings.Contains(r.stderr, "timed out waiting for the rollout") || !strings.Contains(r.stderr, "last status") {
		t.Errorf("error should say the rollout timed out and where it was, got: %s", r.stderr)
	}
	// The abandoned revision (v1.1.5) was marked bad before the undo, so no
	// rerun can roll forward to it; the target is not marked good, since
	// the rollback failed.
	for _, rv := range history(t, ns).Revisions {
		want := "unknown"
		if strings.HasSuffix(rv.Images[0], ":v1.1.5") {
			want = "bad"
		}
		if rv.Health != want {
			t.Errorf("revision %d (%s) marked %s after a failed rollback, want %s", rv.Revision, rv.Images[0], rv.Health, want)
		}
	}
}

func TestMarkAndTargetSelection(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.0.0", "v1.1.5", "v1.2.0")
	// Marking v1.0.0 good makes it the target over the unmarked v1.1.5.
	if r := rollback(t, "mark", "deployment/"+app, "1", "good", "-n", ns); r.code != 0 {
		t.Fatalf("mark: exit %d: %s", r.code, r.stderr)
	}
	r := rollback(t, "plan", "deployment/"+app, "-n", ns)
	if r.code != 0 || !strings.Contains(r.stdout, "target: revision 1") || !strings.Contains(r.stdout, "marked good") {
		t.Errorf("plan should target revision 1 (marked good), got exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A revision marked bad is refused even when asked for.
	rollback(t, "mark", "deployment/"+app, "1", "bad", "--reason", "INC-1 corrupts data", "-n", ns)
	r = rollback(t, "plan", "deployment/"+app, "-n", ns, "--to-revision", "1")
	if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "INC-1 corrupts data") {
		t.Errorf("plan to a bad revision: exit %d, stderr %s", r.code, r.stderr)
	}
	// unknown clears the mark.
	rollback(t, "mark", "deployment/"+app, "1", "unknown", "-n", ns)
	if r := rollback(t, "plan", "deployment/"+app, "-n", ns, "--to-revision", "1"); r.code != 0 {
		t.Errorf("after clearing the mark: exit %d: %s", r.code, r.stderr)
	}
	if r := rollback(t, "mark", "deployment/"+app, "7", "good", "-n", ns); r.code != cli.ExitRefused {
		t.Errorf("mark of a missing revision: exit %d, want %d", r.code, cli.ExitRefused)
	}
}

func TestConfiguredService(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	cfg := filepath.Join(t.TempDir(), "rollback.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  payments:
    kubernetes:
      namespace: %s
      name: %s
`, ns, app)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := rollback(t, "run", "payments", "--config", cfg, "--yes")
	if r.code != 0 {
		t.Fatalf("run by service name: exit %d: %s", r.code, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("running image %s, want %s", got, image("v1.1.5"))
	}
	r = rollback(t, "history", "nosuch", "--config", cfg)
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "configured services: payments") {
		t.Errorf("unknown service: exit %d, stderr %s", r.code, r.stderr)
	}
}

func TestKubectlPlugin(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	out := kubectl(t, "rollback", "history", "deployment/"+app, "-n", ns)
	if !strings.Contains(out, image("v1.1.5")) || !strings.Contains(out, image("v1.2.0")) || !strings.Contains(out, "HEALTH") {
		t.Errorf("kubectl rollback history:\n%s", out)
	}
	out = kubectl(t, "rollback", "run", "deployment/"+app, "-n", ns, "--yes")
	if !strings.Contains(out, "Rolled back") {
		t.Errorf("kubectl rollback run:\n%s", out)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("running image %s, want %s", got, image("v1.1.5"))
	}
}
