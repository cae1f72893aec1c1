package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/mytest"
)

// The journaled undo on a real MariaDB: restored schema, resume after a
// kill at every boundary, failures, stale journals, refused statements,
// lock waits, online forms, a restarted and a hung database.

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
	if err := holder.QueryRowContext(context.Background(), "SELECT CONNECTION_ID()").Scan(&holderID); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.ExecContext(context.Background(), "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.ExecContext(context.Background(), "SELECT COUNT(*) FROM orders"); err != nil {
		t.Fatal(err)
	}
	// The undo names transactions open for a second or more: wait until
	// the server shows this one so.
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ? AND trx_started <= NOW() - INTERVAL 1 SECOND", holderID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			var rows []string
			r, _ := db.Query("SELECT CONCAT(trx_mysql_thread_id, ' ', trx_started, ' now ', NOW()) FROM information_schema.INNODB_TRX")
			for r != nil && r.Next() {
				var x string
				r.Scan(&x)
				rows = append(rows, x)
			}
			t.Fatalf("connection %d's transaction never showed as open for a second in INNODB_TRX: %v", holderID, rows)
		}
		// InnoDB refreshes what INNODB_TRX shows only when it was last
		// read over 100 ms ago: polling faster would see a stale list.
		time.Sleep(250 * time.Millisecond)
	}
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
