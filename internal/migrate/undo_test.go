package migrate

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The runbook's example, file for file.
const seedUndo = `-- V1_2_0__Undo__add_transaction_category.sql
-- This script is run MANUALLY during rollback — it is NOT auto-applied by Flyway
-- Step 1: Remove data added by the forward migration
UPDATE transactions SET category = NULL;
-- Step 2: Drop the column added in v1.2.0
ALTER TABLE transactions DROP COLUMN IF EXISTS category;
-- Step 3: Remove the Flyway history entry so v1.2.0 can be re-applied later
DELETE FROM flyway_schema_history WHERE version = '1.2.0';
`

func seedFiles() map[string]string {
	return map[string]string{
		"V1_1_0__create_transactions.sql": "CREATE TABLE transactions (id bigserial PRIMARY KEY, amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now());\n",
		"V1_2_0__add_transaction_category.sql": "ALTER TABLE transactions ADD COLUMN category text;\n" +
			"CREATE INDEX transactions_category_idx ON transactions (category);\n",
		"rollback/V1_2_0__Undo__add_transaction_category.sql": seedUndo,
	}
}

func opts() UndoOptions {
	o := DefaultUndoOptions()
	o.Backoff = 20 * time.Millisecond
	return o
}

// seedReleased is the runbook's example after its release: 100
// transactions at 1.1.0, v1.2.0 recorded and migrated, every other
// transaction given category; the plan undoes 1.2.0.
func seedReleased(t *testing.T, category string) (conn *pgx.Conn, dsn string, rel *Release, p *Plan) {
	t.Helper()
	ctx := context.Background()
	conn, dsn = newDB(t)
	dir := writeFiles(t, seedFiles())
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	flywayApply(t, conn, src, "1.1.0")
	mustExec(t, conn, `INSERT INTO transactions (amount) SELECT 10 FROM generate_series(1, 100)`)
	st, _ := ReadState(ctx, conn, Flyway, "")
	if _, err := Record(ctx, conn, "v1.2.0", st); err != nil {
		t.Fatal(err)
	}
	flywayApply(t, conn, src, "1.2.0")
	if _, err := conn.Exec(ctx, `UPDATE transactions SET category = $1 WHERE id % 2 = 0`, category); err != nil {
		t.Fatal(err)
	}
	if rel, err = LoadRelease(ctx, conn, "v1.2.0"); err != nil {
		t.Fatal(err)
	}
	if p, err = loadPlan(t, conn, dir, Flyway, rel.Version); err != nil {
		t.Fatal(err)
	}
	return conn, dsn, rel, p
}

func TestSeedExampleUndo(t *testing.T) {
	ctx := context.Background()
	conn, dsn, rel, p := seedReleased(t, "food")
	if len(p.Steps) != 1 || p.Steps[0].VersionText != "1.2.0" || p.From != "1.2.0" || p.To != "1.1.0" {
		t.Fatalf("plan %+v, want one step undoing 1.2.0", p)
	}
	desc, err := p.Describe(opts())
	if err != nil || !strings.Contains(desc, "ALTER TABLE transactions DROP COLUMN IF EXISTS category") || !strings.Contains(desc, "lock_timeout") {
		t.Errorf("dry-run description:\n%s", desc)
	}
	snap, err := TakeSnapshot(ctx, dsn, p, SnapshotTables, t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(snap.Tables, ",") != "transactions" || snap.Bytes == 0 || len(snap.SHA256) != 64 {
		t.Errorf("snapshot %+v, want transactions dumped with a checksum", snap)
	}
	res, err := Undo(ctx, conn, p, opts())
	if err != nil {
		t.Fatal(err)
	}
	if res.Segments != 1 {
		t.Errorf("%d segments, want 1 transaction", res.Segments)
	}
	if got := columns(t, conn, "transactions"); got != "id,amount,created_at" {
		t.Errorf("columns after undo: %s", got)
	}
	if got := historyVersions(t, conn); got != "1.1.0" {
		t.Errorf("history after undo: %s, want 1.1.0", got)
	}
	v, err := Verify(ctx, conn, Flyway, "", MustVersion(rel.Version), rel)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || len(v.SchemaDiff) != 0 {
		t.Errorf("verify: %+v, want the schema equal to the recorded fingerprint", v)
	}
	// The snapshot restores what the undo destroyed.
	cmd := exec.Command("pg_restore", "--clean", "--if-exists", "--single-transaction", "--dbname", dsn, snap.Path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM transactions WHERE category = 'food'`).Scan(&n); err != nil || n != 50 {
		t.Errorf("after restore: %d rows with category food (%v), want 50", n, err)
	}
}

func TestVerifyReportsSchemaDifferences(t *testing.T) {
	ctx := context.Background()
	conn, _ := newDB(t)
	src, _ := LoadDir(writeFiles(t, seedFiles()))
	flywayApply(t, conn, src, "1.1.0")
	st, _ := ReadState(ctx, conn, Flyway, "")
	rel, err := Record(ctx, conn, "v1.2.0", st)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, `ALTER TABLE transactions ADD COLUMN note varchar(20) DEFAULT 'x'`)
	v, err := Verify(ctx, conn, Flyway, "", MustVersion("1.1.0"), rel)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK || len(v.SchemaDiff) != 1 || !strings.Contains(v.SchemaDiff[0], `+ column public.transactions.note character varying(20) default 'x'::character varying`) {
		t.Errorf("verify = %+v, want one added column reported precisely", v)
	}
}

func TestFailingStatementLeavesEverythingUntouched(t *testing.T) {
	ctx := context.Background()
	conn, _ := newDB(t)
	files := seedFiles()
	files["rollback/V1_2_0__Undo__add_transaction_category.sql"] = "ALTER TABLE transactions DROP COLUMN category;\nALTER TABLE transactions DROP COLUMN no_such_column;\n"
	p := applyAndPlan(t, conn, files)
	_, err := Undo(ctx, conn, p, opts())
	if err == nil || !strings.Contains(err.Error(), "V1_2_0__Undo__add_transaction_category.sql:2") || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("got %v, want the failing file:line and that it was rolled back", err)
	}
	if got := columns(t, conn, "transactions"); got != "id,amount,created_at,category" {
		t.Errorf("schema changed: %s", got)
	}
	if got := historyVersions(t, conn); got != "1.1.0,1.2.0" {
		t.Errorf("history changed: %s", got)
	}
}

func TestLockContention(t *testing.T) {
	ctx := context.Background()
	conn, dsn := newDB(t)
	p := applyAndPlan(t, conn, seedFiles())
	// A long transaction holds a lock on the table.
	holder := connect(t, dsn)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, `SELECT count(*) FROM transactions`)

	// Readers keep going while the undo waits: none of them stays blocked
	// until the long transaction ends.
	readerDone := make(chan error, 1)
	go func() {
		r, err := connectErr(dsn)
		if err != nil {
			readerDone <- err
			return
		}
		defer r.Close(context.Background())
		for i := 0; i < 20; i++ {
			if _, err := r.Exec(ctx, `SELECT count(*) FROM transactions`); err != nil {
				readerDone <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		readerDone <- nil
	}()
	o := opts()
	o.LockTimeout, o.Retries = 100*time.Millisecond, 3
	var logs []string
	o.Log = func(s string) { logs = append(logs, s) }
	_, err = Undo(ctx, conn, p, o)
	if !errors.Is(err, ErrLockBudget) {
		t.Fatalf("got %v, want ErrLockBudget", err)
	}
	if len(logs) != 3 {
		t.Errorf("logged %d retries, want 3: %v", len(logs), logs)
	}
	select {
	case err := <-readerDone:
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("readers stayed blocked behind the undo")
	}
	if got := columns(t, conn, "transactions"); got != "id,amount,created_at,category" {
		t.Errorf("schema changed after a failed undo: %s", got)
	}
	// Once the long transaction ends, a retry gets through.
	// It ends as the undo logs its first retry: the undo has waited.
	var release sync.Once
	o.Log = func(s string) {
		if strings.Contains(s, "; retry ") {
			release.Do(func() { go func() { _ = tx.Rollback(context.Background()) }() })
		}
	}
	o.Retries = 10
	res, err := Undo(ctx, conn, p, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Retries == 0 {
		t.Errorf("want at least one lock retry before success")
	}
	if got := historyVersions(t, conn); got != "1.1.0" {
		t.Errorf("history: %s", got)
	}
}

// A Flyway database is locked the way Flyway locks it: while a Flyway
// migrate holds its advisory lock, the undo refuses and changes nothing.
func TestAdvisoryLockHeldRefuses(t *testing.T) {
	conn, dsn := newDB(t)
	p := applyAndPlan(t, conn, seedFiles())
	other := connect(t, dsn)
	ctx := context.Background()
	mustExec(t, other, `SELECT pg_advisory_lock($1)`, FlywayLockID("public", FlywayTable))
	o := opts()
	o.Retries = 1
	if _, err := Undo(ctx, conn, p, o); !errors.Is(err, ErrMigrationLocked) {
		t.Fatalf("got %v, want ErrMigrationLocked", err)
	}
	if got := historyVersions(t, conn); got != "1.1.0,1.2.0" {
		t.Errorf("history changed: %s", got)
	}
}

func TestNonTransactionalStatementRunsAloneAndRerunsSafely(t *testing.T) {
	ctx := context.Background()
	conn, _ := newDB(t)
	files := seedFiles()
	files["rollback/V1_2_0__Undo__add_transaction_category.sql"] = "DROP INDEX CONCURRENTLY transactions_category_idx;\nALTER TABLE transactions DROP COLUMN IF EXISTS category;\n"
	p := applyAndPlan(t, conn, files)
	desc, _ := p.Describe(opts())
	if !strings.Contains(desc, "DROP INDEX CONCURRENTLY IF EXISTS transactions_category_idx") || !strings.Contains(desc, "cannot run in a transaction") {
		t.Errorf("description should warn and guard:\n%s", desc)
	}
	// First run: the index drop succeeds, then the transaction fails
	// because something holds the table... simulate a crash by running
	// the non-transactional part alone first.
	mustExec(t, conn, `DROP INDEX CONCURRENTLY transactions_category_idx`)
	res, err := Undo(ctx, conn, p, opts())
	if err != nil {
		t.Fatalf("re-run after the index was already dropped: %v", err)
	}
	if res.Segments != 2 {
		t.Errorf("%d segments, want 2 (the concurrent drop alone, then a transaction)", res.Segments)
	}
	if got := historyVersions(t, conn); got != "1.1.0" {
		t.Errorf("history: %s", got)
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("missing undo", func(t *testing.T) {
		conn, _ := newDB(t)
		files := seedFiles()
		delete(files, "rollback/V1_2_0__Undo__add_transaction_category.sql")
		dir := writeFiles(t, files)
		src, _ := LoadDir(dir)
		flywayApply(t, conn, src, "1.2.0")
		_, err := loadPlan(t, conn, dir, Flyway, "1.1.0")
		if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "V1_2_0__add_transaction_category.sql (version 1.2.0) has no undo script: write U1_2_0__add_transaction_category.sql") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("failed migration", func(t *testing.T) {
		conn, _ := newDB(t)
		dir := writeFiles(t, seedFiles())
		src, _ := LoadDir(dir)
		flywayApply(t, conn, src, "1.2.0")
		mustExec(t, conn, `UPDATE flyway_schema_history SET success = false WHERE version = '1.2.0'`)
		_, err := loadPlan(t, conn, dir, Flyway, "1.1.0")
		if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "failed") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("changed script warns", func(t *testing.T) {
		conn, _ := newDB(t)
		dir := writeFiles(t, seedFiles())
		src, _ := LoadDir(dir)
		flywayApply(t, conn, src, "1.2.0")
		if err := os.WriteFile(src.Find(MustVersion("1.2.0")).Up.Path, []byte("ALTER TABLE transactions ADD COLUMN category varchar(10);\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := loadPlan(t, conn, dir, Flyway, "1.1.0")
		if err != nil || len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "changed after it was applied") {
			t.Errorf("got %v %v", p, err)
		}
	})
	t.Run("no history table", func(t *testing.T) {
		conn, _ := newDB(t)
		if _, err := ReadState(ctx, conn, Flyway, ""); !errors.Is(err, ErrNoHistory) {
			t.Errorf("got %v", err)
		}
	})
}

func TestGolangMigrateLayout(t *testing.T) {
	ctx := context.Background()
	conn, _ := newDB(t)
	files := map[string]string{
		"1_create_transactions.up.sql":   "CREATE TABLE transactions (id bigserial PRIMARY KEY, amount numeric NOT NULL);",
		"1_create_transactions.down.sql": "DROP TABLE IF EXISTS transactions;",
		"2_add_category.up.sql":          "ALTER TABLE transactions ADD COLUMN category text;",
		"2_add_category.down.sql":        "ALTER TABLE transactions DROP COLUMN IF EXISTS category;",
		"3_add_note.up.sql":              "ALTER TABLE transactions ADD COLUMN note text;",
		"3_add_note.down.sql":            "ALTER TABLE transactions DROP COLUMN IF EXISTS note;",
	}
	dir := writeFiles(t, files)
	for _, f := range []string{"1_create_transactions.up.sql", "2_add_category.up.sql", "3_add_note.up.sql"} {
		mustExec(t, conn, files[f])
	}
	mustExec(t, conn, `CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)`)
	mustExec(t, conn, `INSERT INTO schema_migrations VALUES (3, false)`)
	p, err := loadPlan(t, conn, dir, GolangMigrate, "1")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 2 || p.Steps[0].VersionText != "3" || p.Steps[1].VersionText != "2" || p.After != "1" {
		t.Fatalf("plan: %d steps, after %s", len(p.Steps), p.After)
	}
	if _, err := Undo(ctx, conn, p, opts()); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(ctx, conn, GolangMigrate, "")
	if err != nil || st.Current.String() != "1" || st.Dirty {
		t.Fatalf("state %+v %v, want version 1, clean", st, err)
	}
	if got := columns(t, conn, "transactions"); got != "id,amount" {
		t.Errorf("columns %s", got)
	}
	// All the way down: no row left.
	p, err = loadPlan(t, conn, dir, GolangMigrate, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Undo(ctx, conn, p, opts()); err != nil {
		t.Fatal(err)
	}
	var n int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n)
	if n != 0 || columns(t, conn, "transactions") != "" {
		t.Errorf("after undoing everything: %d history rows, table columns %q", n, columns(t, conn, "transactions"))
	}
	// Dirty is refused.
	mustExec(t, conn, `INSERT INTO schema_migrations VALUES (1, true)`)
	if _, err := loadPlan(t, conn, dir, GolangMigrate, ""); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "dirty") {
		t.Errorf("dirty: got %v", err)
	}
}

// applyAndPlan applies files up to 1.2.0 the way Flyway does and plans the
// undo back to 1.1.0.
func applyAndPlan(t *testing.T, conn DB, files map[string]string) *Plan {
	t.Helper()
	dir := writeFiles(t, files)
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	flywayApply(t, conn, src, "1.2.0")
	p, err := loadPlan(t, conn, dir, Flyway, "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSnapshotFailureIsReported(t *testing.T) {
	conn, _ := newDB(t)
	p := applyAndPlan(t, conn, seedFiles())
	dir := t.TempDir()
	_, err := TakeSnapshot(context.Background(), pg.DSN("no_such_database"), p, SnapshotTables, dir, time.Now())
	if !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), "pg_dump") {
		t.Fatalf("got %v, want ErrSnapshot from pg_dump", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a failed snapshot left %d file(s) behind", len(left))
	}
	if s, err := TakeSnapshot(context.Background(), pg.DSN("no_such_database"), p, SnapshotNone, dir, time.Now()); s != nil || err != nil {
		t.Errorf("--snapshot=none: got %v, %v; want nothing done", s, err)
	}
}

// Java's String.hashCode, as Flyway's lock key uses it (values from the
// Java documentation's definition, computed by hand and by the JDK).
func TestJavaHash(t *testing.T) {
	for s, want := range map[string]int32{"": 0, "a": 97, "hello": 99162322, "Hello World": -862545276, "é": 233, "😀": 1772899} {
		if got := javaHash(s); got != want {
			t.Errorf("javaHash(%q) = %d, want %d", s, got, want)
		}
	}
	if FlywayLockID("public", FlywayTable) == FlywayLockID("other", FlywayTable) {
		t.Error("schemas share a lock key")
	}
}

// Without pg_dump (the container image has no client tools) the snapshot
// is still taken, through the driver: a tar of one CSV per touched table,
// with the values the undo is about to destroy, and its checksum.
func TestSnapshotWithoutPgDump(t *testing.T) {
	ctx := context.Background()
	_, dsn, _, p := seedReleased(t, `food, "fresh"`)
	t.Setenv("PATH", t.TempDir()) // no pg_dump here
	snap, err := TakeSnapshot(ctx, dsn, p, SnapshotTables, t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(snap.Path, ".csv.tar") || strings.Join(snap.Tables, ",") != "transactions" || !strings.Contains(snap.Note, "pg_dump not installed") ||
		!strings.Contains(snap.Restore, `\\copy transactions FROM 'transactions.csv'`) {
		t.Fatalf("snapshot %+v", snap)
	}
	b, err := os.ReadFile(snap.Path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != snap.SHA256 {
		t.Error("the checksum does not match the file")
	}
	if fi, _ := os.Stat(snap.Path); fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v, want 0600", fi.Mode().Perm())
	}
	tr := tar.NewReader(bytes.NewReader(b))
	h, err := tr.Next()
	if err != nil || h.Name != "transactions.csv" {
		t.Fatalf("tar: %v %+v", err, h)
	}
	rows, err := csv.NewReader(tr).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := slices.Index(rows[0], "category")
	food := 0
	for _, r := range rows[1:] {
		if col >= 0 && r[col] == `food, "fresh"` {
			food++
		}
	}
	if len(rows) != 101 || food != 50 {
		t.Errorf("CSV: %d rows (want header + 100), %d with the category the undo drops (want 50)", len(rows), food)
	}
}

// UndoAndVerify, the one down migration of the runbook and 'rollback db
// undo': verified at the plan's After version against the record; a
// schema the undo did not bring back (a column added by hand during the
// release) is ErrNotRestored after the undo ran (ErrVerifyAfterUndo), with
// what verification saw.
func TestUndoAndVerify(t *testing.T) {
	ctx := context.Background()
	conn, _, rel, p := seedReleased(t, "food")
	pr := &Provider{Conn: conn, Format: Flyway}
	res, v, err := pr.UndoAndVerify(ctx, p, rel, opts())
	if err != nil || res == nil || v == nil || !v.OK {
		t.Fatalf("undo and verify: %+v %+v %v", res, v, err)
	}

	conn2, _, rel2, p2 := seedReleased(t, "food")
	mustExec(t, conn2, `ALTER TABLE transactions ADD COLUMN note text`)
	pr2 := &Provider{Conn: conn2, Format: Flyway}
	res, v, err = pr2.UndoAndVerify(ctx, p2, rel2, opts())
	if !errors.Is(err, ErrVerifyAfterUndo) || !errors.Is(err, ErrNotRestored) || res == nil || v == nil || v.OK {
		t.Fatalf("drifted: %+v %+v %v; want the undo done and ErrNotRestored", res, v, err)
	}
	if got := historyVersions(t, conn2); got != "1.1.0" {
		t.Errorf("history after the undo: %s", got)
	}
}
