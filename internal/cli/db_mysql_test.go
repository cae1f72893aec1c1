package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/mytest"
)

var myLazy mytest.Lazy

// The db commands on MariaDB, chosen by the DSN: plan, the dry run's
// statement-by-statement text, the undo and its summary, lint for the
// engine; bad and unreachable DSNs are clear errors without the password.
func TestDBCommandsOnMariaDB(t *testing.T) {
	mySrv := myLazy.For(t)
	ctx := context.Background()
	dsn, err := mySrv.CreateDB(ctx, "cli_db")
	if err != nil {
		t.Fatal(err)
	}
	db, err := mySrv.Open("cli_db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dir := t.TempDir()
	for n, b := range map[string]string{
		"1_init.up.sql":   "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10));\n",
		"1_init.down.sql": "DROP TABLE t;\n",
		"2_add.up.sql":    "ALTER TABLE t ADD COLUMN b INT;\nALTER TABLE t MODIFY COLUMN a VARCHAR(40);\n",
		"2_add.down.sql":  "ALTER TABLE t MODIFY COLUMN a VARCHAR(10);\nALTER TABLE t DROP COLUMN b;\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(40), b INT)",
		"CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL)", "INSERT INTO schema_migrations VALUES (2, 0)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"ROLLBACK_DB_DSN": dsn, "XDG_STATE_HOME": t.TempDir()}
	code, out, errOut := runCLI(t, env, "db", "plan", "--dir", dir, "--to-version", "1")
	if code != 0 || !strings.Contains(out, "Down migration 2 -> 1 (golang-migrate, history table schema_migrations)") || !strings.Contains(out, "not captured on MariaDB") {
		t.Errorf("plan: %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, env, "db", "undo", "--dir", dir, "--to-version", "1", "--dry-run")
	for _, want := range []string{"on MariaDB 10.11", "each statement journaled in rollback_undo_journal", "2_add.down.sql:1 (statement 1): tried with ALGORITHM=INSTANT, then ALGORITHM=INPLACE, LOCK=NONE, then as written", "ALTER TABLE t DROP COLUMN b;"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	var n int
	if db.QueryRow("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'cli_db' AND TABLE_NAME = 't' AND COLUMN_NAME = 'b'").Scan(&n); n != 1 {
		t.Fatal("the dry run changed the schema")
	}
	code, out, errOut = runCLI(t, env, "db", "undo", "--dir", dir, "--to-version", "1", "--yes")
	if code != 0 || !strings.Contains(out+errOut, "1 migration(s) undone, 2 statement(s) run one by one, journaled") || !strings.Contains(out+errOut, "history at version 1") {
		t.Errorf("undo: %d\n%s%s", code, out, errOut)
	}
	var v int
	if err := db.QueryRow("SELECT version FROM schema_migrations").Scan(&v); err != nil || v != 1 {
		t.Errorf("history %d %v", v, err)
	}
	// Lint for the engine the DSN names.
	code, out, _ = runCLI(t, map[string]string{"ROLLBACK_DB_DSN": "mariadb://x@h/db"}, "db", "lint", "--dir", dir)
	if code == 0 && !strings.Contains(out, "copy-table") {
		t.Errorf("lint on mariadb: %d\n%s", code, out)
	}
	if code, _, errOut = runCLI(t, nil, "db", "lint", "--dir", dir, "--engine", "oracle"); code != ExitUsage || !strings.Contains(errOut, "expected postgres, mariadb or mysql") {
		t.Errorf("lint --engine oracle: %d %s", code, errOut)
	}
	// Bad and unreachable connection strings.
	if code, _, errOut = runCLI(t, nil, "db", "plan", "--dir", dir, "--to-version", "1", "--dsn", "mysql://u:hunter2@tcp(127.0.0.1:1"); code != ExitUsage || strings.Contains(errOut, "hunter2") || !strings.Contains(errOut, "cannot be parsed") {
		t.Errorf("bad DSN: %d %s", code, errOut)
	}
	if code, _, errOut = runCLI(t, nil, "db", "plan", "--dir", dir, "--to-version", "1", "--dsn", "mysql://u:hunter2@127.0.0.1:1/db"); code == 0 || strings.Contains(errOut, "hunter2") || !strings.Contains(errOut, "connect to mysql://u@tcp(127.0.0.1:1)/db") {
		t.Errorf("unreachable: %d %s", code, errOut)
	}
}
