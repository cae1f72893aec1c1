package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecideWithOverrides(t *testing.T) {
	env := map[string]string{}
	code, out, _ := runCLI(t, env, "decide", "transaction-service", "--severity", "P1", "--migration-ran=false", "--api-adopted=false")
	if code != 0 || !strings.Contains(out, "ROLL BACK") || !strings.Contains(out, "[override]") || !strings.Contains(out, "--migration-ran=false") {
		t.Errorf("exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, env, "decide", "transaction-service", "--severity", "P1", "--hotfix-eta", "10m")
	if code != 0 || !strings.Contains(out, "ROLL FORWARD") || !strings.Contains(out, "ETA 10m0s") {
		t.Errorf("exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, env, "decide", "transaction-service", "--severity", "P3")
	if code != 0 || !strings.Contains(out, "NO ACTION") {
		t.Errorf("exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"decide", "transaction-service"},
		{"decide", "transaction-service", "--severity", "P7"},
		{"decide", "transaction-service", "--severity", "P1", "--api-adopted=maybe"},
		{"decide", "transaction-service", "--severity", "P1", "--error-rate-query", "x"},
	} {
		if code, _, _ := runCLI(t, env, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, ExitUsage)
		}
	}
}

func TestDecideFromTheDatabase(t *testing.T) {
	dsn, dir, _, apply := seedDB(t, "cli_decide")
	env := map[string]string{"ROLLBACK_DB_DSN": dsn, "XDG_STATE_HOME": t.TempDir()}
	if code, _, errOut := runCLI(t, env, "db", "record", "--dir", dir, "--release", "v1.2.0"); code != 0 {
		t.Fatal(errOut)
	}
	decideJSON := func() (string, map[string]any) {
		code, out, errOut := runCLI(t, env, "decide", "transaction-service", "--severity", "P1", "--dir", dir, "--release", "v1.2.0", "--api-adopted=false", "-o", "json")
		if code != 0 {
			t.Fatalf("decide: %d %s", code, errOut)
		}
		var v struct {
			Facts    map[string]any `json:"facts"`
			Decision struct {
				Action string `json:"action"`
			} `json:"decision"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		return v.Decision.Action, v.Facts
	}
	// Before the migration: it has not run, roll back immediately.
	if a, facts := decideJSON(); a != "roll-back" || facts["migrationRan"].(map[string]any)["source"] != "measured" {
		t.Errorf("before migrating: %s %v", a, facts["migrationRan"])
	}
	apply(2, "1.2.0", "V1_2_0__add_transaction_category.sql")
	// Ran, undo present but never drilled: not safe.
	a, facts := decideJSON()
	if a != "roll-forward-only-option" || !strings.Contains(facts["canDownMigrate"].(map[string]any)["evidence"].(string), "has not passed a drill") {
		t.Errorf("undrilled: %s %v", a, facts["canDownMigrate"])
	}
	if code, _, errOut := runCLI(t, env, "db", "drill", "--dir", dir); code != 0 {
		t.Fatalf("drill: %s", errOut)
	}
	if a, facts := decideJSON(); a != "roll-back-with-down-migration" {
		t.Errorf("after a passing drill: %s %v", a, facts["canDownMigrate"])
	}
}

// A service that rollback.yaml gives no database has no migration to have
// run: the config says so, and the flowchart reads it as a known "no".
func TestDecideServiceWithoutDatabase(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "rollback.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: rollback/v1\nkind: Config\nservices:\n  web:\n    kubernetes: {namespace: shop}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, map[string]string{}, "decide", "web", "--config", cfg, "--severity", "P1", "--api-adopted=false")
	if code != 0 || !strings.Contains(out, "ROLL BACK") || !strings.Contains(out, "[config]") || !strings.Contains(out, "web has no database: in rollback.yaml") {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
	// A service not in the file: unknown, treated as ran, no safe down
	// migration known: roll forward.
	code, out, _ = runCLI(t, map[string]string{}, "decide", "other", "--severity", "P1", "--api-adopted=false")
	if code != 0 || !strings.Contains(out, "ROLL FORWARD ONLY OPTION") {
		t.Errorf("exit %d\n%s", code, out)
	}
}

// run --dry-run with --severity walks the decision: a hotfix minutes away
// refuses (exit 3), a P1 without one would proceed; nothing is changed.
func TestRunDryRunWalksTheDecision(t *testing.T) {
	code, _, errOut := runFake(t, fixture(), "run", "deployment/transaction-service", "-n", "payments", "--dry-run=client",
		"--severity", "P1", "--hotfix-eta", "5m", "--migration-ran=false", "--api-adopted=false")
	if code != ExitRefused || !strings.Contains(errOut, "roll-forward (P1)") {
		t.Errorf("hotfix in 5m: exit %d\n%s", code, errOut)
	}
	code, out, errOut := runFake(t, fixture(), "run", "deployment/transaction-service", "-n", "payments", "--dry-run=client",
		"--severity", "P1", "--migration-ran=false", "--api-adopted=false")
	if code != 0 || !strings.Contains(errOut, "decide: done: roll-back (P1)") || !strings.Contains(out, "Dry run (client)") {
		t.Errorf("P1: exit %d\n%s%s", code, out, errOut)
	}
}
