package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"rollback/internal/cli"
	"rollback/internal/migrate"
	"rollback/internal/pgtest"
)

// TestRunbookDownMigrates: a service with a database snapshots it and
// down-migrates the abandoned release's migration inside 'rollback run'.
func TestRunbookDownMigrates(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	dsn, err := pg.CreateDB(ctx, "e2e_"+strings.ReplaceAll(ns, "-", "_"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mig := filepath.Join(dir, "migrations")
	files := map[string]string{
		"V1_1_0__create_transactions.sql":      "CREATE TABLE transactions (id bigserial PRIMARY KEY, amount numeric NOT NULL);\n",
		"V1_2_0__add_transaction_category.sql": "ALTER TABLE transactions ADD COLUMN category text;\n",
		"rollback/V1_2_0__Undo__add_transaction_category.sql": "ALTER TABLE transactions DROP COLUMN IF EXISTS category;\n" +
			"DELETE FROM flyway_schema_history WHERE version = '1.2.0';\n",
	}
	for n, b := range files {
		_ = os.MkdirAll(filepath.Join(mig, filepath.Dir(n)), 0o755)
		_ = os.WriteFile(filepath.Join(mig, n), []byte(b), 0o644)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(q string, args ...any) {
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	apply := func(rank int, v, f string) {
		b, _ := os.ReadFile(filepath.Join(mig, f))
		exec(string(b))
		exec(`INSERT INTO flyway_schema_history VALUES ($1, $2, 'x', 'SQL', $3, $4, 'ci', now(), 1, true)`, rank, v, f, migrate.FlywayChecksum(b))
	}
	exec(pgtest.FlywayHistoryDDL)
	apply(1, "1.1.0", "V1_1_0__create_transactions.sql")

	cfg := filepath.Join(dir, "rollback.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  payments-db:
    kubernetes: {namespace: %s, name: %s}
    database: {dsnEnv: TEST_DSN, dir: %s}
`, ns, app, mig)), 0o644)
	env := map[string]string{"TEST_DSN": dsn, "ROLLBACK_DB_DSN": dsn, "ROLLBACK_STORE": filepath.Join(dir, "state.db"), "XDG_STATE_HOME": filepath.Join(dir, "xdg")}

	// The release pipeline: record, migrate, deploy.
	deploy(t, ns, "v1.1.5")
	if r := rollbackEnv(t, env, "db", "record", "--dir", mig, "--release", "v1.2.0"); r.code != 0 {
		t.Fatalf("record: %s", r.stderr)
	}
	apply(2, "1.2.0", "V1_2_0__add_transaction_category.sql")
	exec(`INSERT INTO transactions (amount, category) VALUES (1, 'food')`)
	kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
	waitRolledOut(t, ns)

	// The decision from live signals: the migration has run (history) and
	// its undo exists but was never drilled, so the flowchart says roll
	// forward; the run refuses and changes nothing.
	r := rollbackEnv(t, env, "run", "payments-db", "--config", cfg, "--yes", "--severity", "P1", "--api-adopted=false")
	if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "roll-forward-only-option") || !strings.Contains(r.stderr, "has not passed a drill") {
		t.Fatalf("run before the drill: exit %d, want %d (the flowchart says roll forward)\n%s", r.code, cli.ExitRefused, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.2.0") {
		t.Fatalf("a refused run changed the deployment: %s", got)
	}
	if l := rollbackEnv(t, env, "status", "-o", "json"); strings.TrimSpace(l.stdout) != "[]" {
		t.Fatalf("a refused run opened an incident: %s", l.stdout)
	}
	// Drilled: the flowchart says roll back with the down migration.
	if d := rollbackEnv(t, env, "db", "drill", "--dir", mig); d.code != 0 {
		t.Fatalf("drill: exit %d\n%s%s", d.code, d.stdout, d.stderr)
	}
	r = rollbackEnv(t, env, "run", "payments-db", "--config", cfg, "--yes", "--severity", "P1", "--api-adopted=false", "-o", "json")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	var cols []string
	rows, _ := conn.Query(ctx, `SELECT column_name FROM information_schema.columns WHERE table_name = 'transactions' ORDER BY ordinal_position`)
	for rows.Next() {
		var c string
		_ = rows.Scan(&c)
		cols = append(cols, c)
	}
	rows.Close()
	if strings.Join(cols, ",") != "id,amount" {
		t.Errorf("columns after the run: %v", cols)
	}
	var versions string
	_ = conn.QueryRow(ctx, `SELECT string_agg(version, ',' ORDER BY installed_rank) FROM flyway_schema_history`).Scan(&versions)
	if versions != "1.1.0" {
		t.Errorf("history after the run: %s", versions)
	}
	id := ""
	if i := strings.Index(r.stdout, `"incident": "`); i >= 0 {
		id = strings.SplitN(r.stdout[i+len(`"incident": "`):], `"`, 2)[0]
	}
	s := rollbackEnv(t, env, "status", id, "--config", cfg)
	for _, want := range []string{"Database snapshot taken", "before-undo-1.2.0-to-1.1.0", "1 migration(s) undone", "schema equals the one recorded",
		"roll-back-with-down-migration — rationale recorded"} {
		if !strings.Contains(s.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, s.stdout)
		}
	}
	// The rationale is the flowchart's, with the measured facts.
	rep := rollbackEnv(t, env, "report", id)
	for _, want := range []string{"Decision: **roll-back-with-down-migration**", "Has the DB migration run?", "history at 1.2.0", "drilled"} {
		if !strings.Contains(rep.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, rep.stdout)
		}
	}
}
