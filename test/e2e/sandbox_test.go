package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestSandboxLifecycle starts a second sandbox: `up` again in the same
// directory says so and changes nothing; `env` prints the kubeconfig; `down`
// stops every process and removes the files.
func TestSandboxLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sbx")
	sbx := filepath.Join(binDir, "rollback-sandbox")
	run := func(args ...string) (int, string) {
		out, err := exec.Command(sbx, append(args, "--dir", dir)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	t.Cleanup(func() { run("down") })
	if code, out := run("up"); code != 0 {
		t.Fatalf("up: exit %d\n%s", code, out)
	}
	state := func() []byte {
		b, err := os.ReadFile(filepath.Join(dir, "sandbox.json"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	before := state()
	code, out := run("up")
	if code != 3 || !strings.Contains(out, "already running") {
		t.Errorf("second up: exit %d (want 3), output %q", code, out)
	}
	if string(state()) != string(before) {
		t.Errorf("second up changed the sandbox state")
	}
	if code, out := run("env"); code != 0 || strings.TrimSpace(out) != "export KUBECONFIG="+filepath.Join(dir, "kubeconfig") {
		t.Errorf("env: exit %d, %q", code, out)
	}
	var st struct {
		Procs []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"procs"`
	}
	if err := json.Unmarshal(before, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Procs) != 5 {
		t.Errorf("sandbox runs %d processes, want 5 (etcd, apiserver, controller-manager, scheduler, kwok)", len(st.Procs))
	}
	if code, out := run("down"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, out)
	}
	for _, p := range st.Procs {
		if syscall.Kill(p.PID, 0) == nil {
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
				t.Errorf("%s (pid %d) still runs after down", p.Name, p.PID)
			}
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("down left %s behind (%v)", dir, err)
	}
	if code, _ := run("env"); code == 0 {
		t.Errorf("env after down: exit 0, want an error")
	}
}
