package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestBlockGateUnblock(t *testing.T) {
	env := map[string]string{"ROLLBACK_STORE": filepath.Join(t.TempDir(), "r.db")}
	if code, out, _ := runCLI(t, env, "gate", "transaction-service", "v1.2.0"); code != 0 || !strings.Contains(out, "not blocked") {
		t.Errorf("gate before block: %d %s", code, out)
	}
	if code, _, errOut := runCLI(t, env, "block", "transaction-service", "v1.2.0"); code != ExitUsage || !strings.Contains(errOut, "--reason is required") {
		t.Errorf("block without reason: %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, env, "block", "transaction-service", "v1.2.0", "--reason", "P1: 5xx spike", "--incident", "INC-20261126-1"); code != 0 {
		t.Fatalf("block: %d %s", code, errOut)
	}
	code, out, errOut := runCLI(t, env, "gate", "transaction-service", "v1.2.0")
	if code != ExitBlocked || !strings.Contains(out, "BLOCKED") || !strings.Contains(errOut, "INC-20261126-1") || !strings.Contains(errOut, "P1: 5xx spike") {
		t.Errorf("gate of a blocked version: %d\n%s%s", code, out, errOut)
	}
	if code, _, _ := runCLI(t, env, "gate", "transaction-service", "v1.1.5"); code != 0 {
		t.Errorf("another version is not blocked: %d", code)
	}
	if code, _, _ := runCLI(t, env, "unblock", "transaction-service", "v1.2.0"); code != 0 {
		t.Errorf("unblock: %d", code)
	}
	if code, _, errOut := runCLI(t, env, "unblock", "transaction-service", "v1.2.0"); code != ExitUsage || !strings.Contains(errOut, "not blocked") {
		t.Errorf("second unblock: %d %s", code, errOut)
	}
	if code, _, _ := runCLI(t, env, "gate", "transaction-service", "v1.2.0"); code != 0 {
		t.Errorf("gate after unblock: %d", code)
	}
	if code, _, _ := runCLI(t, env, "gate", "transaction-service"); code != ExitUsage {
		t.Errorf("gate without a version: %d", code)
	}
}
