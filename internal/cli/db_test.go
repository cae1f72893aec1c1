package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/pgtest"
)

var pg *pgtest.Server

func TestMain(m *testing.M) {
	code := pgtest.Main(m, "cli", &pg)
	myLazy.Stop()
	os.Exit(code)
}

// runCLI runs rollback with the given environment, no terminal.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	io := &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, Getenv: func(k string) string { return env[k] }}
	code := Main(context.Background(), "rollback", args, io)
	t.Logf("rollback %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// seedDB creates a database at Flyway version 1.1.0 with the runbook's
// migrations in a directory; apply(rank, version, file) applies one more.
func seedDB(t *testing.T, name string) (dsn, dir string, conn *pgx.Conn, apply func(int, string, string)) {
	t.Helper()
	ctx := context.Background()
	dsn, err := pg.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	files := map[string]string{
		"V1_1_0__create_transactions.sql":      "CREATE TABLE transactions (id bigserial PRIMARY KEY, amount numeric NOT NULL);\n",
		"V1_2_0__add_transaction_category.sql": "ALTER TABLE transactions ADD COLUMN category text;\n",
		"rollback/V1_2_0__Undo__add_transaction_category.sql": "UPDATE transactions SET category = NULL;\n" +
			"ALTER TABLE transactions DROP COLUMN IF EXISTS category;\n" +
			"DELETE FROM flyway_schema_history WHERE version = '1.2.0';\n",
	}
	for n, b := range files {
		_ = os.MkdirAll(filepath.Join(dir, filepath.Dir(n)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	apply = func(rank int, version, file string) {
		b, _ := os.ReadFile(filepath.Join(dir, file))
		if _, err := conn.Exec(ctx, string(b)); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO flyway_schema_history VALUES ($1, $2, 'x', 'SQL', $3, $4, 'ci', now(), 1, true)`,
			rank, version, file, migrate.FlywayChecksum(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, pgtest.FlywayHistoryDDL); err != nil {
		t.Fatal(err)
	}
	apply(1, "1.1.0", "V1_1_0__create_transactions.sql")
	return dsn, dir, conn, apply
}

func TestDBCommandsOnTheSeedExample(t *testing.T) {
	ctx := context.Background()
	dsn, dir, conn, apply := seedDB(t, "cli_seed")
	// A password in the DSN must never be printed.
	secretDSN := strings.Replace(dsn, "postgres@", "postgres:s3cr3t-pw@", 1)
	env := map[string]string{"ROLLBACK_DB_DSN": secretDSN, "XDG_STATE_HOME": t.TempDir()}

	if code, out, _ := runCLI(t, env, "db", "record", "--dir", dir, "--release", "v1.2.0"); code != 0 || !strings.Contains(out, "Recorded release v1.2.0: version 1.1.0") {
		t.Fatalf("record: %d %s", code, out)
	}
	apply(2, "1.2.0", "V1_2_0__add_transaction_category.sql")

	code, out, _ := runCLI(t, env, "db", "plan", "--dir", dir, "--release", "v1.2.0")
	if code != 0 || !strings.Contains(out, "Down migration 1.2.0 -> 1.1.0") || !strings.Contains(out, "V1_2_0__Undo__add_transaction_category.sql") {
		t.Errorf("plan: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, env, "db", "undo", "--dir", dir, "--release", "v1.2.0", "--dry-run")
	if code != 0 || !strings.Contains(out, "BEGIN;") || !strings.Contains(out, "nothing was changed") {
		t.Errorf("dry run: %d\n%s", code, out)
	}
	var n int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM flyway_schema_history`).Scan(&n)
	if n != 2 {
		t.Fatalf("dry run changed the history: %d rows", n)
	}
	code, out, errOut := runCLI(t, env, "db", "undo", "--dir", dir, "--release", "v1.2.0", "-o", "json")
	if code != 0 {
		t.Fatalf("undo: exit %d\n%s", code, errOut)
	}
	var res struct {
		Snapshot struct {
			Path    string `json:"path"`
			Restore string `json:"restoreCommand"`
		}
		Verify struct {
			OK          bool `json:"ok"`
			Fingerprint bool `json:"fingerprintChecked"`
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !res.Verify.OK || !res.Verify.Fingerprint || res.Snapshot.Path == "" || !strings.Contains(res.Snapshot.Restore, "pg_restore") {
		t.Errorf("result %+v", res)
	}
	if strings.Contains(out+errOut, "s3cr3t-pw") {
		t.Error("the DSN's password was printed")
	}
	if _, err := os.Stat(res.Snapshot.Path); err != nil {
		t.Errorf("snapshot: %v", err)
	}
	// The dump is production data, the restore command holds no password.
	for path, want := range map[string]os.FileMode{res.Snapshot.Path: 0o600, res.Snapshot.Path + ".sha256": 0o600, filepath.Dir(filepath.Dir(res.Snapshot.Path)): 0o700} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, st.Mode().Perm(), err, want)
		}
	}
	if code, out, _ := runCLI(t, env, "db", "verify", "--dir", dir, "--release", "v1.2.0"); code != 0 || !strings.Contains(out, "schema equals the one recorded") {
		t.Errorf("verify: %d %s", code, out)
	}
	// Nothing left to undo.
	if code, out, _ := runCLI(t, env, "db", "plan", "--dir", dir, "--to-version", "1.1.0"); code != 0 || !strings.Contains(out, "Nothing to undo") {
		t.Errorf("plan after undo: %d %s", code, out)
	}
	// Lint flags the runbook's UPDATE before DROP COLUMN; --strict fails on it.
	code, out, _ = runCLI(t, env, "db", "lint", "--dir", dir, "--strict")
	if code != ExitFailed || !strings.Contains(out, "null-before-drop") {
		t.Errorf("lint --strict: %d %s", code, out)
	}
}

func TestDBUsageErrors(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "V1__a.sql"), []byte("SELECT 1;"), 0o644)
	tests := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{}, []string{"db", "plan", "--dir", dir, "--to-version", "1"}, "no database connection string: pass --dsn"},
		{map[string]string{"ROLLBACK_DB_DSN": pg.DSN("postgres")}, []string{"db", "plan", "--dir", filepath.Join(dir, "nope"), "--to-version", "1"}, "read migrations"},
		{map[string]string{"ROLLBACK_DB_DSN": pg.DSN("postgres")}, []string{"db", "plan", "--dir", dir}, "pass --to-version VERSION or --release NAME"},
		{map[string]string{"ROLLBACK_DB_DSN": pg.DSN("postgres")}, []string{"db", "plan", "--dir", dir, "--to-version", "x.1"}, "--to-version"},
		{map[string]string{"ROLLBACK_DB_DSN": pg.DSN("postgres")}, []string{"db", "undo", "--dir", dir, "--to-version", "1", "--snapshot", "some"}, "invalid --snapshot"},
		{map[string]string{"ROLLBACK_DB_DSN": pg.DSN("postgres")}, []string{"db", "plan", "--dir", dir, "--format", "liquibase", "--to-version", "1"}, `format "liquibase": expected auto, flyway or golang-migrate`},
		{map[string]string{}, []string{"db", "record", "--dir", dir}, "--release is required"},
	}
	for _, tt := range tests {
		code, _, errOut := runCLI(t, tt.env, tt.args...)
		if code != ExitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d %q, want %d and %q", tt.args, code, errOut, ExitUsage, tt.want)
		}
	}
	// A database without a history table is refused with exit 3.
	code, _, errOut := runCLI(t, map[string]string{"ROLLBACK_DB_DSN": pg.DSN("postgres")}, "db", "plan", "--dir", dir, "--to-version", "1")
	if code != ExitRefused || !strings.Contains(errOut, "flyway_schema_history does not exist") {
		t.Errorf("no history: exit %d %q", code, errOut)
	}
}

// Without $HOME and $XDG_STATE_HOME there is no state directory: a clear
// error, never a shared /tmp directory another user could create first.
func TestNoStateDirectoryIsAnError(t *testing.T) {
	code, _, errOut := runCLI(t, map[string]string{}, "block", "transaction-service", "v1.2.0", "--reason", "x")
	if code != ExitUsage || !strings.Contains(errOut, "no state directory") {
		t.Fatalf("exit %d, %s", code, errOut)
	}
	home := t.TempDir()
	if code, _, _ := runCLI(t, map[string]string{"HOME": home}, "block", "transaction-service", "v1.2.0", "--reason", "x"); code != 0 {
		t.Fatal("block with $HOME failed")
	}
	dir := filepath.Join(home, ".local", "state", "rollback")
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "rollback.db"): 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v, want mode %v", path, err, want)
		}
	}
}

// Two 'db undo' at once: the migration lock is taken before planning, so
// the second plans after the first committed and finds nothing to undo,
// instead of replaying a stale plan (whose non-idempotent DROP would fail,
// or whose golang-migrate history fix would write a stale version).
func TestConcurrentDBUndosPlanUnderTheLock(t *testing.T) {
	ctx := context.Background()
	dsn, dir, conn, apply := seedDB(t, "cli_concurrent_undo")
	// A non-idempotent undo: a stale second run would fail on it.
	if err := os.WriteFile(filepath.Join(dir, "rollback/V1_2_0__Undo__add_transaction_category.sql"),
		[]byte("ALTER TABLE transactions DROP COLUMN category;\nDELETE FROM flyway_schema_history WHERE version = '1.2.0';\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	apply(2, "1.2.0", "V1_2_0__add_transaction_category.sql")
	env := map[string]string{"ROLLBACK_DB_DSN": dsn, "XDG_STATE_HOME": t.TempDir()}
	codes := make([]int, 2)
	outs := make([]string, 2)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out string
			codes[i], out, _ = runCLI(t, env, "db", "undo", "--dir", dir, "--to-version", "1.1.0", "--yes")
			outs[i] = out
		}()
	}
	wg.Wait()
	if codes[0] != 0 || codes[1] != 0 {
		t.Fatalf("exit codes %v, want both 0 (one undoes, the other finds nothing to undo)\n%s\n%s", codes, outs[0], outs[1])
	}
	undone := 0
	for _, o := range outs {
		if strings.Contains(o, "Down-migrated") {
			undone++
		}
	}
	if undone != 1 {
		t.Errorf("%d undos applied, want exactly 1:\n%s\n%s", undone, outs[0], outs[1])
	}
	var n int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM flyway_schema_history`).Scan(&n)
	if n != 1 {
		t.Errorf("history has %d rows, want 1", n)
	}
}

// A release that destroys data, through the commands: record captures it
// (and says so), plan shows it, undo gives it back and says how much.
func TestDBCommandsGiveBackWhatTheReleaseDestroyed(t *testing.T) {
	ctx := context.Background()
	dsn, dir, conn, apply := seedDB(t, "cli_capture")
	for n, b := range map[string]string{
		"V1_3_0__drop_memo.sql":                               "ALTER TABLE transactions DROP COLUMN memo;\n",
		"rollback/V1_3_0__Undo__drop_memo.sql":                "ALTER TABLE transactions ADD COLUMN memo text;\n",
		"V1_2_0__add_transaction_category.sql":                "ALTER TABLE transactions ADD COLUMN memo text;\n",
		"rollback/V1_2_0__Undo__add_transaction_category.sql": "ALTER TABLE transactions DROP COLUMN memo;\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	apply(2, "1.2.0", "V1_2_0__add_transaction_category.sql")
	if _, err := conn.Exec(ctx, `INSERT INTO transactions (amount, memo) SELECT i, 'memo ' || i FROM generate_series(1, 30) i`); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ROLLBACK_DB_DSN": dsn, "XDG_STATE_HOME": t.TempDir()}
	code, out, _ := runCLI(t, env, "db", "record", "--dir", dir, "--release", "v1.3.0")
	if code != 0 || !strings.Contains(out, "drop-column public.transactions.memo") || !strings.Contains(out, "captured 30 row(s)") {
		t.Fatalf("record: %d %s", code, out)
	}
	apply(3, "1.3.0", "V1_3_0__drop_memo.sql")
	if _, err := conn.Exec(ctx, `DELETE FROM transactions WHERE id = 1; INSERT INTO transactions (amount) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCLI(t, env, "db", "plan", "--dir", dir, "--release", "v1.3.0"); code != 0 || !strings.Contains(out, "What the release destroyed") || !strings.Contains(out, "captured 30 row(s)") {
		t.Errorf("plan: %d\n%s", code, out)
	}
	code, out, errOut := runCLI(t, env, "db", "undo", "--dir", dir, "--release", "v1.3.0", "--yes")
	if code != 0 || !strings.Contains(out+errOut, "29 restored, 1 kept, 1 not resurrected, 0 conflict(s)") {
		t.Errorf("undo: %d\n%s%s", code, out, errOut)
	}
	var back int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM transactions WHERE memo = 'memo ' || amount`).Scan(&back)
	if back != 29 {
		t.Errorf("%d of 29 memos back", back)
	}
}
