package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckManifest(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"ROLLBACK_STORE": filepath.Join(dir, "r.db"), "XDG_STATE_HOME": dir}
	good := "../../examples/transaction-service.yaml"
	noCluster := []string{"--kubeconfig", filepath.Join(dir, "none")}

	code, out, _ := runCLI(t, env, append([]string{"check", "transaction-service", "-f", good, "--release", "v1.2.0"}, noCluster...)...)
	if code != ExitFailed || !strings.Contains(out, "nobody signed off") {
		t.Errorf("without a sign-off: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, env, "runbook", "approve", "transaction-service", "--release", "v1.2.0", "--by", "alice"); code != 0 {
		t.Fatal(errOut)
	}
	code, out, _ = runCLI(t, env, append([]string{"check", "transaction-service", "-f", good, "--release", "v1.2.0", "-o", "json"}, noCluster...)...)
	if code != 0 || !strings.Contains(out, `"passed": true`) || !strings.Contains(out, "signed off by alice") || !strings.Contains(out, `"status": "skip"`) {
		t.Errorf("good manifest: exit %d\n%s", code, out)
	}

	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: transaction-service}
spec:
  revisionHistoryLimit: 1
  selector: {matchLabels: {app: ts}}
  template:
    metadata: {labels: {app: ts}}
    spec:
      containers: [{name: ts, image: "registry.local/transaction-service:latest"}]
`), 0o644)
	code, out, _ = runCLI(t, env, append([]string{"check", "transaction-service", "-f", bad, "--release", "v1.2.0"}, noCluster...)...)
	for _, want := range []string{":latest", "revisionHistoryLimit 1", "maxUnavailable unset"} {
		if !strings.Contains(out, want) {
			t.Errorf("bad manifest: output lacks %q", want)
		}
	}
	if code != ExitFailed {
		t.Errorf("bad manifest: exit %d, want %d", code, ExitFailed)
	}

	// Migrations the release brings need a drilled undo.
	mig := filepath.Join(dir, "migrations")
	_ = os.MkdirAll(mig, 0o755)
	_ = os.WriteFile(filepath.Join(mig, "V1_1_0__a.sql"), []byte("SELECT 1;"), 0o644)
	_ = os.WriteFile(filepath.Join(mig, "V1_2_0__b.sql"), []byte("SELECT 1;"), 0o644)
	code, out, _ = runCLI(t, env, append([]string{"check", "transaction-service", "-f", good, "--release", "v1.2.0", "--dir", mig, "--since-version", "1.1.0"}, noCluster...)...)
	if code != ExitFailed || !strings.Contains(out, "V1_2_0__b.sql has no undo script") {
		t.Errorf("missing undo: exit %d\n%s", code, out)
	}
	_ = os.WriteFile(filepath.Join(mig, "U1_2_0__b.sql"), []byte("SELECT 1;"), 0o644)
	code, out, _ = runCLI(t, env, append([]string{"check", "transaction-service", "-f", good, "--release", "v1.2.0", "--dir", mig, "--since-version", "1.1.0"}, noCluster...)...)
	if code != ExitFailed || !strings.Contains(out, "the undo of 1.2.0 has not passed a drill") {
		t.Errorf("undrilled undo: exit %d\n%s", code, out)
	}
	// The same from rollback.yaml's database: settings, without --dir; a
	// snapshot turned off there fails its prerequisite.
	cfg := filepath.Join(dir, "rollback.yaml")
	_ = os.WriteFile(cfg, []byte("apiVersion: rollback/v1\nkind: Config\nservices:\n  transaction-service:\n    kubernetes: {namespace: payments}\n"+
		"    database: {dsnEnv: NO_SUCH_DSN, dir: "+mig+", snapshot: none}\n"), 0o644)
	code, out, _ = runCLI(t, env, append([]string{"check", "transaction-service", "--config", cfg, "-f", good, "--release", "v1.2.0", "--since-version", "1.1.0"}, noCluster...)...)
	if code != ExitFailed || !strings.Contains(out, "the undo of 1.2.0 has not passed a drill") || !strings.Contains(out, "database.snapshot: none") {
		t.Errorf("database from rollback.yaml: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, env, append([]string{"check", "transaction-service", "-f", filepath.Join(dir, "nope.yaml")}, noCluster...)...); code != ExitUsage {
		t.Errorf("missing manifest: exit %d %s", code, errOut)
	}
}
