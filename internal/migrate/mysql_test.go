package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/mytest"
)

var myLazy mytest.Lazy

// mariadb is the package's MariaDB server, started by the first test that
// needs it (TestMain stops it). Missing, it fails the test.
func mariadb(t *testing.T) *mytest.Server {
	t.Helper()
	s, err := myLazy.Get()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newMyDB creates a fresh database and returns its DSN and a handle.
func newMyDB(t *testing.T) (string, *sql.DB) {
	t.Helper()
	return newMyDBOn(t, mariadb(t))
}

func newMyDBOn(t *testing.T, s *mytest.Server) (string, *sql.DB) {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", dbSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())))
	if len(name) > 40 {
		name = name[:40]
	}
	dsn, err := s.CreateDB(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	db, err := s.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dsn, db
}

// migrateCLI is golang-migrate's real CLI (make peers builds it).
func migrateCLI(t *testing.T) string {
	t.Helper()
	bin, _ := filepath.Abs(filepath.Join("..", "..", "bin", "migrate"))
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("golang-migrate's CLI is not built (run make peers): %v", err)
	}
	return bin
}

func runMigrate(t *testing.T, dir, dsn string, args ...string) string {
	t.Helper()
	out, err := exec.Command(migrateCLI(t), append([]string{"-path", dir, "-database", dsn}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("migrate %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// The release of the MySQL tests: migration 2 changes orders in five
// statements, its down script undoes them in five (a DML among them).
func myFiles() map[string]string {
	return map[string]string{
		"1_init.up.sql": "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50));\n" +
			"CREATE TABLE orders (id INT PRIMARY KEY, total INT NOT NULL, note VARCHAR(50), customer_id INT,\n" +
			"  CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id));\n" +
			"CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;\n" +
			"INSERT INTO customers VALUES (7, 'ann');\n" +
			"INSERT INTO orders VALUES (1, 5, 'a', 7), (2, 50, 'b;c', NULL), (3, 500, 'it''s', 7);\n",
		"1_init.down.sql": "DROP VIEW big_orders;\nDROP TABLE orders;\nDROP TABLE customers;\n",
		"2_release.up.sql": "ALTER TABLE orders ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'new';\n" +
			"CREATE INDEX orders_status ON orders (status);\n" +
			"CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, msg TEXT);\n" +
			"ALTER TABLE orders RENAME COLUMN note TO memo;\n" +
			"UPDATE orders SET status = 'paid' WHERE total > 10;\n",
		"2_release.down.sql": "# golang-migrate runs this whole; rollback, statement by statement\n" +
			"UPDATE orders SET status = 'new';\n" +
			"ALTER TABLE orders RENAME COLUMN memo TO note;\n" +
			"DROP TABLE audit;\n" +
			"DROP INDEX orders_status ON orders;\n" +
			"ALTER TABLE `orders` DROP COLUMN status;\n",
	}
}

// myReleased is a database at migration 1, recorded as release v2's
// start, then migrated to 2 by the real golang-migrate CLI.
func myReleased(t *testing.T) (dsn, dir string, db *sql.DB) {
	t.Helper()
	return myReleasedOn(t, mariadb(t))
}

func myReleasedOn(t *testing.T, s *mytest.Server) (dsn, dir string, db *sql.DB) {
	t.Helper()
	dsn, db = newMyDBOn(t, s)
	dir = writeFiles(t, myFiles())
	runMigrate(t, dir, dsn, "up", "1")
	p := openMy(t, dsn, dir)
	if _, _, err := p.RecordRelease(context.Background(), "v2"); err != nil {
		t.Fatal(err)
	}
	runMigrate(t, dir, dsn, "up")
	return dsn, dir, db
}

func openMy(t *testing.T, dsn, dir string) *Provider {
	t.Helper()
	p, err := Open(context.Background(), ProviderOptions{DSN: dsn, Dir: dir, NeedSource: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if p.My == nil {
		t.Fatal("a mysql:// DSN did not open MySQL")
	}
	return p
}

func planRelease(t *testing.T, p *Provider) (*Plan, *Release) {
	t.Helper()
	to, rel, err := p.Release(context.Background(), "v2")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := p.Plan(context.Background(), to)
	if err != nil {
		t.Fatal(err)
	}
	return plan, rel
}

func fastUndo() UndoOptions {
	o := DefaultUndoOptions()
	o.Backoff = 20 * time.Millisecond
	return o
}

// The undo puts back the schema recorded before the release, fixes the
// history, and the real golang-migrate CLI reads the version it left.
func TestMySQLUndoRestoresTheRecordedSchema(t *testing.T) {
	dsn, dir, db := myReleased(t)
	p := openMy(t, dsn, dir)
	plan, rel := planRelease(t, p)
	if len(plan.Steps) != 1 || len(plan.Steps[0].Statements) != 5 || !strings.Contains(plan.Engine, "MariaDB") {
		t.Fatalf("plan %+v", plan)
	}
	var log []string
	o := fastUndo()
	o.Log = func(s string) { log = append(log, s) }
	res, v, err := p.UndoAndVerify(context.Background(), plan, rel, o)
	if err != nil {
		t.Fatalf("undo: %v\n%s", err, strings.Join(log, "\n"))
	}
	if !v.OK || !v.Fingerprint || res.Statements != 5 || res.Resumed != 0 {
		t.Fatalf("verification %+v, result %+v", v, res)
	}
	if got := runMigrate(t, dir, dsn, "version"); got != "1" {
		t.Errorf("golang-migrate reads version %q, want 1", got)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM rollback_undo_journal").Scan(&n); err != nil || n != 0 {
		t.Errorf("journal rows left: %d (%v)", n, err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM orders WHERE note = 'b;c'").Scan(&n); err != nil || n != 1 {
		t.Errorf("orders' data after the undo: %d rows with note 'b;c' (%v)", n, err)
	}
	// golang-migrate takes the schema up again from there.
	runMigrate(t, dir, dsn, "up")
	if got := runMigrate(t, dir, dsn, "version"); got != "2" {
		t.Errorf("after migrate up: version %q", got)
	}
}

// A run killed at every boundary between two statements (before one, after
// its journal row, after it ran, at a DML's commit, before the history
// fix) resumes to the recorded schema, and no statement runs twice.
func TestMySQLUndoKilledAtEveryBoundary(t *testing.T) {
	mariadb(t)
	// Count the boundaries of an uninterrupted run.
	var boundaries []string
	{
		dsn, dir, _ := myReleased(t)
		p := openMy(t, dsn, dir)
		plan, _ := planRelease(t, p)
		o := fastUndo()
		o.boundary = func(w string) { boundaries = append(boundaries, w) }
		if _, err := p.Undo(context.Background(), plan, o); err != nil {
			t.Fatal(err)
		}
	}
	if len(boundaries) < 10 {
		t.Fatalf("only %d boundaries: %v", len(boundaries), boundaries)
	}
	converged, repeated := 0, 0
	for k, at := range boundaries {
		t.Run(fmt.Sprintf("%02d", k), func(t *testing.T) {
			dsn, dir, db := myReleased(t)
			ran := map[string]int{}
			count := func(w string) { ran[w]++ }
			// The first run is killed at boundary k: its connection is
			// killed from outside, as a lost process's would be dropped.
			p := openMy(t, dsn, dir)
			plan, rel := planRelease(t, p)
			o := fastUndo()
			o.executed = count
			seen := 0
			o.boundary = func(w string) {
				if seen == k {
					if _, err := db.Exec(fmt.Sprintf("KILL CONNECTION %d", p.My.connID)); err != nil {
						t.Fatal(err)
					}
				}
				seen++
			}
			if _, err := p.Undo(context.Background(), plan, o); err == nil {
				t.Fatalf("killed at %s, the undo did not fail", at)
			}
			// A new process resumes.
			p2 := openMy(t, dsn, dir)
			plan2, _ := planRelease(t, p2)
			o2 := fastUndo()
			o2.executed = count
			res, v, err := p2.UndoAndVerify(context.Background(), plan2, rel, o2)
			if err != nil {
				t.Fatalf("killed at %s, the resumed undo failed: %v", at, err)
			}
			if !v.OK {
				t.Fatalf("killed at %s: %s", at, v.Summary())
			}
			for w, n := range ran {
				if n > 1 {
					repeated++
					t.Errorf("killed at %s: %s ran %d times", at, w, n)
				}
			}
			if len(ran) != 5 {
				t.Errorf("killed at %s: %d distinct statements ran, want 5: %v (resumed %d)", at, len(ran), ran, res.Resumed)
			}
			if got := runMigrate(t, dir, dsn, "version"); got != "1" {
				t.Errorf("killed at %s: golang-migrate reads %q", at, got)
			}
			if !t.Failed() {
				converged++
			}
		})
	}
	t.Logf("kill at every boundary: %d boundaries, %d/%d converged, %d statements repeated", len(boundaries), converged, len(boundaries), repeated)
}

// A statement that fails leaves a clear state; fixed, the undo resumes
// where it stopped and repeats nothing.
func TestMySQLUndoFailedStatementSaysWhereItStopped(t *testing.T) {
	dsn, dir, _ := myReleased(t)
	down := filepath.Join(dir, "2_release.down.sql")
	good, _ := os.ReadFile(down)
	broken := strings.Replace(string(good), "DROP INDEX orders_status ON orders", "DROP INDEX no_such_index ON orders", 1)
	if err := os.WriteFile(down, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	p := openMy(t, dsn, dir)
	plan, rel := planRelease(t, p)
	ran := map[string]int{}
	o := fastUndo()
	o.executed = func(w string) { ran[w]++ }
	_, err := p.Undo(context.Background(), plan, o)
	if !errors.Is(err, ErrHalfway) {
		t.Fatalf("want ErrHalfway, got %v", err)
	}
	for _, want := range []string{"no_such_index", "1. [done] UPDATE orders", "3. [done] DROP TABLE audit", "4. [failed] DROP INDEX no_such_index ON orders  <- stopped here",
		"5. [not run] ALTER TABLE `orders` DROP COLUMN status", "CREATE TABLE `orders`", "history row is unchanged (still 2)", "resumes at the first statement not done"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	if err := os.WriteFile(down, good, 0o644); err != nil {
		t.Fatal(err)
	}
	p2 := openMy(t, dsn, dir)
	plan2, _ := planRelease(t, p2)
	o2 := fastUndo()
	o2.executed = func(w string) { ran[w]++ }
	res, v, err := p2.UndoAndVerify(context.Background(), plan2, rel, o2)
	if err != nil || !v.OK {
		t.Fatalf("resume: %v %v", err, v)
	}
	if res.Resumed != 3 || res.Statements != 2 {
		t.Errorf("resume ran %d statements and skipped %d, want 2 and 3", res.Statements, res.Resumed)
	}
	for w, n := range ran {
		if n > 1 {
			t.Errorf("%s ran %d times", w, n)
		}
	}
}

// A journal left by an undo that stopped, after which the schema was
// rolled forward by hand, must not skip the statements it says are done.
func TestMySQLUndoRefusesAStaleJournal(t *testing.T) {
	dsn, dir, db := myReleased(t)
	down := filepath.Join(dir, "2_release.down.sql")
	good, _ := os.ReadFile(down)
	if err := os.WriteFile(down, []byte(strings.Replace(string(good), "DROP INDEX orders_status ON orders", "DROP INDEX no_such_index ON orders", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := openMy(t, dsn, dir)
	plan, rel := planRelease(t, p)
	if _, err := p.Undo(context.Background(), plan, fastUndo()); !errors.Is(err, ErrHalfway) {
		t.Fatalf("want ErrHalfway, got %v", err)
	}
	// The team rolls forward by hand instead: the renamed column and the
	// dropped table come back.
	for _, q := range []string{"ALTER TABLE orders RENAME COLUMN note TO memo", "CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, msg TEXT)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(down, good, 0o644)
	p2 := openMy(t, dsn, dir)
	plan2, _ := planRelease(t, p2)
	_, err := p2.Undo(context.Background(), plan2, fastUndo())
	if !errors.Is(err, ErrHalfway) || !strings.Contains(err.Error(), "the journal is stale") || !strings.Contains(err.Error(), "DELETE FROM rollback_undo_journal WHERE version = '2'") {
		t.Fatalf("a stale journal was trusted: %v", err)
	}
	if _, err := db.Exec("DELETE FROM rollback_undo_journal WHERE version = '2'"); err != nil {
		t.Fatal(err)
	}
	p3 := openMy(t, dsn, dir)
	plan3, _ := planRelease(t, p3)
	if _, v, err := p3.UndoAndVerify(context.Background(), plan3, rel, fastUndo()); err != nil || !v.OK {
		t.Fatalf("after clearing the journal: %v %v", err, v)
	}
}

// A down script that would move the session (USE) or its transactions is
// refused before anything runs.
func TestMySQLUndoRefusesUSE(t *testing.T) {
	dsn, dir, _ := myReleased(t)
	down := filepath.Join(dir, "2_release.down.sql")
	good, _ := os.ReadFile(down)
	os.WriteFile(down, append([]byte("USE mysql;\n"), good...), 0o644)
	p := openMy(t, dsn, dir)
	plan, _ := planRelease(t, p)
	ran := 0
	o := fastUndo()
	o.executed = func(string) { ran++ }
	if _, err := p.Undo(context.Background(), plan, o); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "remove USE") || ran != 0 {
		t.Fatalf("USE: %v (%d statements ran)", err, ran)
	}
}

// A long transaction that read the table would hold its metadata lock and
// queue the ALTER and every reader behind it: the undo never waits longer
// than its lock timeout at a time, names the holder when its budget is
// spent, and goes through once the transaction ends.
func TestMySQLUndoNamesTheLongTransaction(t *testing.T) {
	dsn, dir, db := myReleased(t)
	holder, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var holderID int64
	holder.QueryRowContext(context.Background(), "SELECT CONNECTION_ID()").Scan(&holderID)
	if _, err := holder.ExecContext(context.Background(), "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.ExecContext(context.Background(), "SELECT COUNT(*) FROM orders"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // open for over a second
	p := openMy(t, dsn, dir)
	plan, _ := planRelease(t, p)
	var log []string
	o := fastUndo()
	o.Retries = 2
	o.Log = func(s string) { log = append(log, s) }
	start := time.Now()
	_, err = p.Undo(context.Background(), plan, o)
	if !errors.Is(err, ErrLockBudget) && !errors.Is(err, ErrHalfway) {
		t.Fatalf("want the lock budget spent, got %v", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("connection %d", holderID)) || !strings.Contains(err.Error(), "KILL") {
		t.Errorf("the error does not name connection %d:\n%v", holderID, err)
	}
	if !strings.Contains(strings.Join(log, "\n"), fmt.Sprintf("connection %d", holderID)) {
		t.Errorf("the log does not warn of connection %d before the statement:\n%s", holderID, strings.Join(log, "\n"))
	}
	// Three tries of 200 ms, not the server's default of a day.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the undo waited %s", d)
	}
	if _, err := holder.ExecContext(context.Background(), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	p2 := openMy(t, dsn, dir)
	plan2, rel := planRelease(t, p2)
	if _, v, err := p2.UndoAndVerify(context.Background(), plan2, rel, fastUndo()); err != nil || !v.OK {
		t.Fatalf("after the transaction ended: %v %v", err, v)
	}
}

// ALTER TABLE runs in its least blocking form: INSTANT where the engine
// can, INPLACE without a lock next, as written last (and says so).
func TestMySQLUndoTriesOnlineForms(t *testing.T) {
	dsn, _ := newMyDB(t)
	files := map[string]string{
		"1_init.up.sql":   "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10), b INT);\n",
		"1_init.down.sql": "DROP TABLE t;\n",
		"2_x.up.sql":      "ALTER TABLE t ADD COLUMN c INT;\nALTER TABLE t MODIFY COLUMN a VARCHAR(20);\nALTER TABLE t MODIFY COLUMN b BIGINT;\n",
		"2_x.down.sql":    "ALTER TABLE t MODIFY COLUMN b INT;\nALTER TABLE t MODIFY COLUMN a VARCHAR(10);\nALTER TABLE t DROP COLUMN c;\n",
	}
	dir := writeFiles(t, files)
	runMigrate(t, dir, dsn, "up")
	p := openMy(t, dsn, dir)
	plan, err := p.Plan(context.Background(), Version{parts: []uint64{1}})
	if err != nil {
		t.Fatal(err)
	}
	var log []string
	o := fastUndo()
	o.Log = func(s string) { log = append(log, s) }
	if _, err := p.Undo(context.Background(), plan, o); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(log, "\n")
	for _, want := range []string{
		"statement 1): ALGORITHM=INSTANT not possible",        // INT from BIGINT: a copy
		"statement 1): neither ALGORITHM=INSTANT nor INPLACE", // ran as written
	} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "statement 3): ALGORITHM=INSTANT not possible") {
		t.Errorf("DROP COLUMN did not run INSTANT:\n%s", all)
	}
}

// Flyway's history on MySQL: the undone version's row goes, the rest stay.
func TestMySQLFlywayHistory(t *testing.T) {
	dsn, db := newMyDB(t)
	dir := writeFiles(t, map[string]string{
		"V1__init.sql":       "CREATE TABLE t (id INT PRIMARY KEY);",
		"V2__add.sql":        "ALTER TABLE t ADD COLUMN v INT;",
		"U2__add.sql":        "ALTER TABLE t DROP COLUMN v;",
		"V1.1__more.sql":     "CREATE TABLE u (id INT PRIMARY KEY);",
		"U1.1__more.sql":     "DROP TABLE u;",
		"R__view.sql":        "CREATE OR REPLACE VIEW tv AS SELECT id FROM t;",
		"U1__init.sql":       "DROP TABLE t;",
		"ignored/readme.txt": "",
	})
	for _, q := range []string{
		// Flyway's MySQL history table, as Flyway creates it.
		"CREATE TABLE flyway_schema_history (installed_rank INT NOT NULL PRIMARY KEY, version VARCHAR(50), description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, checksum INT, installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, execution_time INT NOT NULL, success BOOL NOT NULL)",
		"CREATE TABLE t (id INT PRIMARY KEY, v INT)", "CREATE TABLE u (id INT PRIMARY KEY)",
		"INSERT INTO flyway_schema_history VALUES (1, '1', 'init', 'SQL', 'V1__init.sql', NULL, 'app', NOW(), 1, 1), (2, '1.1', 'more', 'SQL', 'V1.1__more.sql', NULL, 'app', NOW(), 1, 1), (3, '2', 'add', 'SQL', 'V2__add.sql', NULL, 'app', NOW(), 1, 1)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	p := openMy(t, dsn, dir)
	if p.Format != Flyway {
		t.Fatalf("format %s", p.Format)
	}
	plan, err := p.Plan(context.Background(), Version{parts: []uint64{1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Steps) != 2 || plan.Steps[0].VersionText != "2" {
		t.Fatalf("plan %+v", plan.Steps)
	}
	if _, err := p.Undo(context.Background(), plan, fastUndo()); err != nil {
		t.Fatal(err)
	}
	st, err := p.State(context.Background())
	if err != nil || st.Current.String() != "1" || len(st.Applied) != 1 {
		t.Fatalf("state %+v %v", st, err)
	}
}

// The snapshot holds the touched tables' rows; restored (by the client,
// or the driver-written SQL by the driver), they equal the originals.
func TestMySQLSnapshot(t *testing.T) {
	dsn, dir, db := myReleased(t)
	p := openMy(t, dsn, dir)
	plan, _ := planRelease(t, p)
	snap, err := p.Snapshot(context.Background(), plan, SnapshotTables, t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(snap.Tables, ",") != "audit,orders" || snap.Note != "" || !strings.Contains(snap.Restore, "mariadb -h 127.0.0.1") {
		t.Errorf("snapshot %+v", snap)
	}
	body, _ := os.ReadFile(snap.Path)
	if !strings.Contains(string(body), "'b;c'") || strings.Contains(string(body), "schema_migrations") {
		t.Errorf("dump does not hold what it should:\n%.2000s", body)
	}
	if fi, _ := os.Stat(snap.Path); fi.Mode().Perm() != 0o600 {
		t.Errorf("dump mode %v", fi.Mode())
	}
	// The driver's own dump restores to the same rows: odd strings,
	// dates and times, a generated column.
	native := filepath.Join(t.TempDir(), "n.sql")
	os.WriteFile(native, nil, 0o600)
	for _, q := range []string{"CREATE TABLE ev (id INT PRIMARY KEY, at DATETIME(6), ts TIMESTAMP NULL, d DATE, doubled INT AS (id * 2) STORED, b VARBINARY(8))",
		"INSERT INTO ev (id, at, ts, d, b) VALUES (1, '2024-01-02 03:04:05.123456', '2024-06-30 23:59:59', '1999-12-31', X'00ff27'), (2, NULL, NULL, NULL, NULL)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("INSERT INTO orders (id, total, memo) VALUES (4, 1, ?)", "q'uo\\te\n\"x\x00"); err != nil {
		t.Fatal(err)
	}
	if err := p.My.nativeDump(context.Background(), []string{"orders", "ev"}, native); err != nil {
		t.Fatal(err)
	}
	sums := func(db *sql.DB) string {
		var out []string
		for _, tb := range []string{"orders", "ev"} {
			var ignored, sum string
			db.QueryRow("CHECKSUM TABLE "+tb).Scan(&ignored, &sum)
			out = append(out, sum)
		}
		return strings.Join(out, ",")
	}
	before := sums(db)
	dsn2, db2 := newMyDB(t)
	q2 := openMy(t, dsn2, dir)
	if err := q2.My.runScript(context.Background(), native); err != nil {
		t.Fatal(err)
	}
	if after := sums(db2); strings.Contains(before, ",,") || before != after {
		t.Errorf("checksums before %q, after restoring the driver's dump %q", before, after)
	}
}

// The drill runs the round trip on a clone and leaves the database alone.
func TestMySQLDrill(t *testing.T) {
	dsn, dir, db := myReleased(t)
	p := openMy(t, dsn, dir)
	before, _ := p.My.fingerprint(context.Background())
	res, err := p.Drill(context.Background(), DrillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed || len(res.Steps) == 0 || res.Steps[0].Version != "2" || !res.Steps[0].Applied {
		t.Fatalf("drill %+v", res)
	}
	after, _ := p.My.fingerprint(context.Background())
	if before.Hash != after.Hash {
		t.Errorf("the drill changed the database: %v", after.Diff(before))
	}
	var n int
	db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", res.Clone).Scan(&n)
	if n != 0 {
		t.Errorf("clone %s left behind", res.Clone)
	}
	// A down script that forgets a table fails the drill (the release
	// cannot be applied again over what the undo left).
	down := filepath.Join(dir, "2_release.down.sql")
	good, _ := os.ReadFile(down)
	os.WriteFile(down, []byte(strings.Replace(string(good), "DROP TABLE audit;\n", "", 1)), 0o644)
	p2 := openMy(t, dsn, dir)
	res, err = p2.Drill(context.Background(), DrillOptions{})
	if err == nil && res.Passed {
		t.Errorf("a down script that leaves an index behind passed the drill: %+v", res)
	}
}

// Holding the migration tool's lock keeps golang-migrate itself out.
func TestMySQLLockIsGolangMigratesLock(t *testing.T) {
	t.Parallel()
	dsn, dir, _ := myReleased(t)
	p := openMy(t, dsn, dir)
	o := fastUndo()
	unlock, err := p.Lock(context.Background(), &o)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	out, err := exec.Command(migrateCLI(t), "-path", dir, "-database", dsn, "down", "1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "can't acquire lock") {
		t.Errorf("golang-migrate ran while rollback held its lock: %v\n%s", err, out)
	}
}

// A server of the test's own, for faults that would disturb the others.
func ownMariaDB(t *testing.T) *mytest.Server {
	t.Helper()
	s, err := mytest.Start(context.Background())
	if err != nil {
		t.Fatalf("MariaDB: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// The database restarts in the middle of the undo (after a DDL statement
// ran, before its journal row says so): the run fails, and the next one
// converges without repeating the statement.
func TestMySQLUndoSurvivesADatabaseRestart(t *testing.T) {
	srv := ownMariaDB(t)
	dsn, dir, _ := myReleasedOn(t, srv)
	p := openMy(t, dsn, dir)
	plan, rel := planRelease(t, p)
	ran := map[string]int{}
	o := fastUndo()
	o.executed = func(w string) { ran[w]++ }
	o.boundary = func(w string) {
		if strings.HasPrefix(w, "ran ") && strings.Contains(w, "statement 3") {
			if err := srv.Restart(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := p.Undo(context.Background(), plan, o); err == nil {
		t.Fatal("the undo went on through a restart")
	}
	p2 := openMy(t, dsn, dir)
	plan2, _ := planRelease(t, p2)
	o2 := fastUndo()
	o2.executed = o.executed
	res, v, err := p2.UndoAndVerify(context.Background(), plan2, rel, o2)
	if err != nil || !v.OK {
		t.Fatalf("after the restart: %v %v", err, v)
	}
	if res.Resumed != 3 {
		t.Errorf("resumed %d statements, want 3 (two journaled done, one judged from the schema)", res.Resumed)
	}
	for w, n := range ran {
		if n != 1 {
			t.Errorf("%s ran %d times", w, n)
		}
	}
	if got := runMigrate(t, dir, dsn, "version"); got != "1" {
		t.Errorf("golang-migrate reads %q", got)
	}
}

// The database hangs (its process stopped) while a statement runs: the
// undo returns at its deadline instead of waiting, and once the database
// is back the next run converges.
func TestMySQLUndoReturnsWhenTheDatabaseHangs(t *testing.T) {
	srv := ownMariaDB(t)
	dsn, dir, _ := myReleasedOn(t, srv)
	p := openMy(t, dsn, dir)
	plan, rel := planRelease(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	o := fastUndo()
	paused := false
	o.boundary = func(w string) {
		if strings.HasPrefix(w, "run ") && strings.Contains(w, "statement 4") {
			if err := srv.Pause(); err != nil {
				t.Fatal(err)
			}
			paused = true
		}
	}
	done := make(chan error, 1)
	go func() { _, err := p.Undo(ctx, plan, o); done <- err }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		srv.Continue()
		t.Fatal("the undo did not return from a hung database")
	}
	if err := srv.Continue(); err != nil {
		t.Fatal(err)
	}
	if !paused || err == nil {
		t.Fatalf("paused %v; undo error %v", paused, err)
	}
	p2 := openMy(t, dsn, dir)
	plan2, _ := planRelease(t, p2)
	if _, v, err := p2.UndoAndVerify(context.Background(), plan2, rel, fastUndo()); err != nil || !v.OK {
		t.Fatalf("after the hang: %v %v", err, v)
	}
}
