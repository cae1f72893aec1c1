package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/mytest"
)

var myLazy mytest.Lazy

// mariadb is the run's MariaDB server, started by the first test that
// needs it; a missing server fails the test.
func mariadb(t *testing.T) *mytest.Server { t.Helper(); return myLazy.For(t) }

func stopMariaDB() { myLazy.Stop() }

// TestRunbookDownMigratesMariaDB: the runbook's Step 3 inside 'rollback
// run' on MariaDB, with golang-migrate's layout applied by its real CLI:
// the abandoned release's multi-statement migration is undone statement by
// statement, the schema is the one recorded before it, and golang-migrate
// reads the version the run left.
func TestRunbookDownMigratesMariaDB(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5")
	srv := mariadb(t)
	ctx := context.Background()
	dsn, err := srv.CreateDB(ctx, "e2e_"+strings.ReplaceAll(ns, "-", "_"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mig := filepath.Join(dir, "migrations")
	_ = os.MkdirAll(mig, 0o755)
	for n, b := range map[string]string{
		"1_create_transactions.up.sql":   "CREATE TABLE transactions (id BIGINT AUTO_INCREMENT PRIMARY KEY, amount DECIMAL(12,2) NOT NULL);\n",
		"1_create_transactions.down.sql": "DROP TABLE transactions;\n",
		"2_add_category.up.sql":          "ALTER TABLE transactions ADD COLUMN category VARCHAR(40);\nCREATE INDEX transactions_category ON transactions (category);\n",
		"2_add_category.down.sql":        "DROP INDEX transactions_category ON transactions;\nALTER TABLE transactions DROP COLUMN category;\n",
	} {
		if err := os.WriteFile(filepath.Join(mig, n), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitBuilt(t, "migrate")
	migrateCLI := func(args ...string) string {
		out, err := exec.Command(filepath.Join(binDir, "migrate"), append([]string{"-path", mig, "-database", dsn}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("migrate %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	cfg := filepath.Join(dir, "rollback.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  payments-db:
    kubernetes: {namespace: %s, name: %s}
    database:
      dsnEnv: TEST_DSN
      dir: %s
`, ns, app, mig)), 0o644)
	env := map[string]string{"TEST_DSN": dsn, "ROLLBACK_DB_DSN": dsn, "ROLLBACK_STORE": filepath.Join(dir, "state.db"), "XDG_STATE_HOME": filepath.Join(dir, "xdg")}

	migrateCLI("up", "1")
	if r := rollbackEnv(t, env, "db", "record", "--dir", mig, "--release", "v1.2.0"); r.code != 0 {
		t.Fatalf("record: %s", r.stderr)
	}
	migrateCLI("up")
	kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
	waitRolledOut(t, ns)
	if d := rollbackEnv(t, env, "db", "drill", "--dir", mig); d.code != 0 {
		t.Fatalf("drill: exit %d\n%s%s", d.code, d.stdout, d.stderr)
	}
	r := rollbackEnv(t, env, "run", "payments-db", "--config", cfg, "--yes", "--severity", "P1", "--api-adopted=false", "-o", "json")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("running %s after the run", got)
	}
	if got := migrateCLI("version"); got != "1" {
		t.Errorf("golang-migrate reads version %q after the run, want 1", got)
	}
	db, err := srv.Open(strings.TrimPrefix(dsn[strings.LastIndex(dsn, "/"):], "/"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var cols string
	_ = db.QueryRow(`SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'transactions'`).Scan(&cols)
	if cols != "id,amount" {
		t.Errorf("columns after the run: %s", cols)
	}
	id := ""
	if i := strings.Index(r.stdout, `"incident": "`); i >= 0 {
		id = strings.SplitN(r.stdout[i+len(`"incident": "`):], `"`, 2)[0]
	}
	s := rollbackEnv(t, env, "status", id, "--config", cfg)
	for _, want := range []string{"Database snapshot taken", "mariadb -h 127.0.0.1", "1 migration(s) undone, 2 statement(s)", "schema equals the one recorded"} {
		if !strings.Contains(s.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, s.stdout)
		}
	}
}
