package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdmissionPolicyRefusesTheBlockedImage: the rendered policy, applied
// to the sandbox, makes the API server refuse the broken image in
// containers, initContainers and digest-pinned references, while
// adversarial version strings among the blocks (quotes, backslashes, CEL
// keywords) neither disable nor break it.
func TestAdmissionPolicyRefusesTheBlockedImage(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5")
	st := filepath.Join(t.TempDir(), "r.db")
	for _, v := range []string{`v9\'].filter(x, false) //`, `v1\`, `' || true || '`, "v1.2.0", `"]; has(object) //`} {
		if r := rollback(t, "block", "deployment/"+app, "-n", ns, v, "--reason", "P1: 5xx spike", "--incident", "INC-1", "--store", st); r.code != 0 {
			t.Fatalf("block %q: %s", v, r.stderr)
		}
	}
	r := rollback(t, "gate", "deployment/"+app, "-n", ns, "--admission-policy", "--store", st)
	if r.code != 0 || !strings.Contains(r.stdout, "kind: ValidatingAdmissionPolicy") || !strings.Contains(r.stdout, "kind: ConfigMap") || !strings.Contains(r.stdout, image("v1.2.0")) {
		t.Fatalf("policy: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	kubectl := func(stdin string, args ...string) (string, error) {
		c := exec.Command("kubectl", args...)
		c.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		if stdin != "" {
			c.Stdin = strings.NewReader(stdin)
		}
		out, err := c.CombinedOutput()
		return string(out), err
	}
	if out, err := kubectl(r.stdout, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_, _ = kubectl("", "delete", "validatingadmissionpolicy,validatingadmissionpolicybinding", "rollback-blocked-"+ns+"-"+app)
	})
	// The policy takes a moment to be compiled and enforced.
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := kubectl("", "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
		if err != nil && strings.Contains(out, "blocked by rollback") && strings.Contains(out, "INC-1") {
			break
		}
		if err == nil {
			// Not enforced yet: put the good image back and try again.
			_, _ = kubectl("", "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.1.5"))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server never refused the blocked image; last answer: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	digest := "@sha256:" + strings.Repeat("ab", 32)
	pod := func(name, initImage, mainImage string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  initContainers: [{name: init, image: "%s"}]
  containers: [{name: main, image: "%s"}]
`, name, ns, initImage, mainImage)
	}
	for name, tc := range map[string]struct {
		manifest string
		refused  bool
	}{
		"init-container": {pod("p-init", image("v1.2.0"), image("v1.1.5")), true},
		"tag-and-digest": {pod("p-digest", image("v1.1.5"), image("v1.2.0")+digest), true},
		"good":           {pod("p-good", image("v1.1.5"), image("v1.2.1")+digest), false},
	} {
		out, err := kubectl(tc.manifest, "apply", "--dry-run=server", "-f", "-")
		refused := err != nil && strings.Contains(out, "blocked by rollback")
		if refused != tc.refused {
			t.Errorf("%s: refused %v, want %v: %v\n%s", name, refused, tc.refused, err, out)
		}
	}
	// Other images are still accepted.
	if out, err := kubectl("", "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.1")); err != nil {
		t.Errorf("a fixed version was refused too: %v\n%s", err, out)
	}
}

func TestCheckAgainstTheCluster(t *testing.T) {
	parallel(t)
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
	rollback(t, "runbook", "approve", "deployment/"+app, "-n", ns, "--release", "v1.2.0", "--by", "oncall", "--store", st)
	r = rollback(t, "check", "deployment/"+app, "-n", ns, "--release", "v1.2.0", "--store", st)
	if r.code != 0 || !strings.Contains(r.stdout, "1 revision(s) to roll back to") {
		t.Errorf("second revision: exit %d\n%s", r.code, r.stdout)
	}
}
