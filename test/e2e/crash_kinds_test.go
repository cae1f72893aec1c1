package e2e

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// killAt starts 'rollback run REF -n NS --yes' on store st, SIGKILLs it
// when stderr shows line, and returns the incident it opened.
func killAt(t *testing.T, st, ref, ns, line string) string {
	t.Helper()
	cmd := rollbackCmd(st, "run", ref, "-n", ns, "--yes")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id := ""
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if m := incidentID.FindString(sc.Text()); id == "" && m != "" {
			id = m
		}
		if strings.Contains(sc.Text(), line) {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the run was not killed at %q (%v)", line, err)
	}
	if id == "" {
		t.Fatal("the run was killed before it named its incident")
	}
	return id
}

func resumeOK(t *testing.T, st, id string) string {
	t.Helper()
	out, err := rollbackCmd(st, "resume", id).CombinedOutput()
	if err != nil {
		t.Fatalf("resume %s: %v\n%s", id, err, out)
	}
	return string(out)
}

// Killed right after the abort and undo of an Argo Rollout, the resumed
// run finishes the same rollback (the target pinned by its ReplicaSet):
// Healthy on v1.1.5, marks set, the incident closed.
func TestKilledArgoRolloutResumes(t *testing.T) {
	parallel(t)
	startArgoRollouts(t)
	ns := namespace(t)
	argoCanary(t, ns, 0)
	st := filepath.Join(t.TempDir(), "r.db")
	id := killAt(t, st, "rollout/"+app, ns, "Kubernetes undo: done")
	out := resumeOK(t, st, id)
	if !strings.Contains(out, "already at revision") {
		t.Errorf("the resume did not find the undo done:\n%s", out)
	}
	checkRolledBack(t, ns)
	if s := incidentStatus(t, st, id); s.Incident.Status != "closed" {
		t.Errorf("incident %s is %s", id, s.Incident.Status)
	}
}

// Killed right after an HTTPRoute's switch, the resumed run does not
// switch again (one switch recorded) and finishes.
func TestKilledHTTPRouteSwitchResumes(t *testing.T) {
	parallel(t)
	ns := routedColours(t, 2)
	st := filepath.Join(t.TempDir(), "r.db")
	id := killAt(t, st, "httproute/"+app, ns, "Kubernetes undo: done")
	resumeOK(t, st, id)
	want := app + "-blue=100 " + app + "-green=0 " + app + "-green=0 " + app + "-blue=1 "
	if got := routeWeights(t, ns); got != want {
		t.Errorf("weights %q, want %q", got, want)
	}
	if sw := kubectl(t, "get", "httproute", app, "-n", ns, "-o", "jsonpath={.metadata.annotations.rollback/switches}"); strings.Count(sw, `"from"`) != 1 {
		t.Errorf("switches recorded: %s, want exactly one", sw)
	}
	if s := incidentStatus(t, st, id); s.Incident.Status != "closed" {
		t.Errorf("incident %s is %s", id, s.Incident.Status)
	}
}
