package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdmissionPolicyRefusesTheBlockedImage: the rendered policy, applied
// to the sandbox, makes the API server refuse the broken image.
func TestAdmissionPolicyRefusesTheBlockedImage(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	deploy(t, ns, "v1.1.5")
	st := filepath.Join(t.TempDir(), "r.db")
	if r := rollback(t, "block", "deployment/"+app, "v1.2.0", "--reason", "P1: 5xx spike", "--incident", "INC-1", "--store", st); r.code != 0 {
		t.Fatalf("block: %s", r.stderr)
	}
	r := rollback(t, "gate", "deployment/"+app, "-n", ns, "--admission-policy", "--store", st)
	if r.code != 0 || !strings.Contains(r.stdout, "kind: ValidatingAdmissionPolicy") || !strings.Contains(r.stdout, image("v1.2.0")) {
		t.Fatalf("policy: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	apply := exec.Command("kubectl", "apply", "-f", "-")
	apply.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	apply.Stdin = strings.NewReader(r.stdout)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		del := exec.Command("kubectl", "delete", "validatingadmissionpolicy,validatingadmissionpolicybinding", "rollback-blocked-"+ns+"-"+app)
		del.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		_ = del.Run()
	})
	// The policy takes a moment to be compiled and enforced.
	deadline := time.Now().Add(30 * time.Second)
	for {
		set := exec.Command("kubectl", "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
		set.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		out, err := set.CombinedOutput()
		if err != nil && strings.Contains(string(out), "blocked by rollback") && strings.Contains(string(out), "INC-1") {
			break
		}
		if err == nil {
			// Not enforced yet: put the good image back and try again.
			undo := exec.Command("kubectl", "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.1.5"))
			undo.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
			_ = undo.Run()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server never refused the blocked image; last answer: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Other images are still accepted.
	set := exec.Command("kubectl", "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.1"))
	set.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if out, err := set.CombinedOutput(); err != nil {
		t.Errorf("a fixed version was refused too: %v\n%s", err, out)
	}
}

func TestCheckAgainstTheCluster(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	st := filepath.Join(t.TempDir(), "r.db")
	deploy(t, ns, "v1.1.5")
	// One revision only: nothing to roll back to yet.
	r := rollback(t, "check", "deployment/"+app, "-n", ns, "--release", "v1.1.5", "--store", st)
	if r.code != 5 || !strings.Contains(r.stdout, "no older revision in the cluster") {
		t.Errorf("first revision: exit %d\n%s", r.code, r.stdout)
	}
	deploy2 := exec.Command("kubectl", "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
	deploy2.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if out, err := deploy2.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	waitRolledOut(t, ns)
	rollback(t, "runbook", "approve", "deployment/"+app, "--release", "v1.2.0", "--by", "oncall", "--store", st)
	r = rollback(t, "check", "deployment/"+app, "-n", ns, "--release", "v1.2.0", "--store", st)
	if r.code != 0 || !strings.Contains(r.stdout, "1 revision(s) to roll back to") {
		t.Errorf("second revision: exit %d\n%s", r.code, r.stdout)
	}
}
