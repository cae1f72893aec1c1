package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const captureBase = `CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL, note text,
	status text NOT NULL DEFAULT 'active', score numeric(10,3) NOT NULL DEFAULT 0);
CREATE TABLE audit (id bigserial PRIMARY KEY, msg text);
`

// captureCase is a release that destroys data, the customers' writes
// after it, and what the undo must give back.
type captureCase struct {
	name, up, undo string
	// after runs once the release has migrated (customers' writes).
	after string
	// check asserts the data after the undo.
	check func(t *testing.T, conn *pgx.Conn, m Merged)
}

// releaseWithCapture: 100 accounts and 50 audit rows at version 1; the
// release (version 2) recorded (and captured), migrated, written to.
func releaseWithCapture(t *testing.T, up, undo string) (*pgx.Conn, string, *Source) {
	t.Helper()
	ctx := context.Background()
	conn, dsn := newDB(t)
	dir := writeFiles(t, map[string]string{"V1__base.sql": captureBase, "V2__release.sql": up, "rollback/V2__Undo__release.sql": undo})
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	flywayApply(t, conn, src, "1")
	mustExec(t, conn, `INSERT INTO accounts (email, note, status, score)
		SELECT 'u' || i || '@example.com', 'n' || i, CASE WHEN i % 5 = 0 THEN 'trial' ELSE 'active' END, i + 0.125 FROM generate_series(1, 100) i`)
	mustExec(t, conn, `INSERT INTO audit (msg) SELECT 'm' || i FROM generate_series(1, 50) i`)
	p := &Provider{DSN: dsn, Conn: conn, Source: src, Format: Flyway}
	if _, _, err := p.RecordRelease(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	flywayApply(t, conn, src, "2")
	return conn, dsn, src
}

func undoRelease(t *testing.T, conn *pgx.Conn, dir string, mode ...UndoOptions) (*UndoResult, error) {
	t.Helper()
	o := opts()
	if len(mode) > 0 {
		o = mode[0]
	}
	p, err := loadPlan(t, conn, dir, Flyway, "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.LoadCaptures(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	return Undo(context.Background(), conn, p, o)
}

// batched is the undo with every merge after the commit, in batches of
// 30 rows.
func batched(t *testing.T) UndoOptions {
	old := mergeBatch
	mergeBatch = 30
	t.Cleanup(func() { mergeBatch = old })
	o := opts()
	o.InlineMergeRows = -1
	return o
}

func ints(t *testing.T, conn *pgx.Conn, sql string) []int64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func one(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

var captureCases = []captureCase{
	{
		name: "drop column",
		up:   "ALTER TABLE accounts DROP COLUMN note;", undo: "ALTER TABLE accounts ADD COLUMN note text;",
		after: `DELETE FROM accounts WHERE id <= 5;
			UPDATE accounts SET email = 'changed' WHERE id = 50;
			INSERT INTO accounts (email) SELECT 'new' || i FROM generate_series(1, 10) i;`,
		check: func(t *testing.T, conn *pgx.Conn, m Merged) {
			if got := one(t, conn, `SELECT count(*) FROM accounts WHERE id BETWEEN 6 AND 100 AND note = 'n' || id`); got != "95" {
				t.Errorf("%s of 95 pre-release notes back", got)
			}
			if got := one(t, conn, `SELECT count(*) FROM accounts WHERE email LIKE 'new%' AND note IS NULL`); got != "10" {
				t.Errorf("%s of the 10 rows written since without a note", got)
			}
			if got := one(t, conn, `SELECT email FROM accounts WHERE id = 50`); got != "changed" {
				t.Errorf("the customer's write to row 50 was lost: %s", got)
			}
			if m.Restored != 95 || m.NotResurrected != 5 || m.Conflicts != 0 || m.Kept < 10 {
				t.Errorf("counts %+v", m)
			}
		},
	},
	{
		name: "drop table",
		up:   "DROP TABLE audit;", undo: "CREATE TABLE audit (id bigserial PRIMARY KEY, msg text);",
		check: func(t *testing.T, conn *pgx.Conn, m Merged) {
			if got := one(t, conn, `SELECT count(*) FROM audit WHERE msg = 'm' || id`); got != "50" {
				t.Errorf("%s of 50 audit rows back", got)
			}
			// The recreated table's sequence is past the restored keys.
			if got := one(t, conn, `INSERT INTO audit (msg) VALUES ('next') RETURNING id::text`); got != "51" {
				t.Errorf("next id %s, want 51", got)
			}
			if m.Restored != 50 || m.Conflicts != 0 {
				t.Errorf("counts %+v", m)
			}
		},
	},
	{
		name: "narrowing type change",
		up:   "ALTER TABLE accounts ALTER COLUMN score TYPE integer;", undo: "ALTER TABLE accounts ALTER COLUMN score TYPE numeric(10,3);",
		after: `DELETE FROM accounts WHERE id <= 5;
			UPDATE accounts SET score = 999 WHERE id BETWEEN 10 AND 14;
			INSERT INTO accounts (email, score) VALUES ('new', 7);`,
		check: func(t *testing.T, conn *pgx.Conn, m Merged) {
			if got := one(t, conn, `SELECT count(*) FROM accounts WHERE id BETWEEN 6 AND 100 AND id NOT BETWEEN 10 AND 14 AND score = id + 0.125`); got != "90" {
				t.Errorf("%s of 90 pre-release scores back (fractions the release rounded away)", got)
			}
			if got := one(t, conn, `SELECT count(*) FROM accounts WHERE id BETWEEN 10 AND 14 AND score = 999`); got != "5" {
				t.Errorf("%s of the 5 scores written since kept", got)
			}
			if got := one(t, conn, `SELECT score::text FROM accounts WHERE email = 'new'`); got != "7.000" {
				t.Errorf("new row's score %s", got)
			}
			if m.Restored != 90 || m.Conflicts != 5 || m.NotResurrected != 5 || strings.Join(m.ConflictKeys, " ") != "10 11 12 13 14" {
				t.Errorf("counts %+v", m)
			}
		},
	},
	{
		name: "data-rewriting update",
		up:   "UPDATE accounts SET status = 'legacy' WHERE status = 'trial';", undo: "SELECT 1;",
		after: `DELETE FROM accounts WHERE id = 5;
			UPDATE accounts SET status = 'active' WHERE id = 10;
			INSERT INTO accounts (email, status) VALUES ('new', 'legacy');`,
		check: func(t *testing.T, conn *pgx.Conn, m Merged) {
			if got := one(t, conn, `SELECT count(*) FROM accounts WHERE id % 5 = 0 AND id NOT IN (5, 10) AND status = 'trial'`); got != "18" {
				t.Errorf("%s of 18 trial statuses back", got)
			}
			if got := one(t, conn, `SELECT status FROM accounts WHERE id = 10`); got != "active" {
				t.Errorf("row 10 written since: %s, want the new write kept", got)
			}
			if got := one(t, conn, `SELECT status FROM accounts WHERE email = 'new'`); got != "legacy" {
				t.Errorf("a row written since with the new value was changed: %s", got)
			}
			if got := one(t, conn, `SELECT count(*) FROM accounts WHERE id = 5`); got != "0" {
				t.Error("a row deleted since came back")
			}
			if m.Restored != 18 || m.Conflicts != 1 || m.NotResurrected != 1 || strings.Join(m.ConflictKeys, " ") != "10" {
				t.Errorf("counts %+v", m)
			}
		},
	},
	{
		name: "delete",
		up:   "DELETE FROM accounts WHERE status = 'trial' AND id > 50;", undo: "SELECT 1;",
		after: `INSERT INTO accounts (id, email) VALUES (55, 'took the key');
			INSERT INTO accounts (email) SELECT 'new' || i FROM generate_series(1, 3) i;`,
		check: func(t *testing.T, conn *pgx.Conn, m Merged) {
			if got := one(t, conn, `SELECT count(*) FROM accounts WHERE id > 50 AND id % 5 = 0 AND id <> 55 AND status = 'trial' AND note = 'n' || id`); got != "9" {
				t.Errorf("%s of 9 deleted rows back", got)
			}
			if got := one(t, conn, `SELECT email FROM accounts WHERE id = 55`); got != "took the key" {
				t.Errorf("row 55 written since: %s, want the new write kept", got)
			}
			if m.Restored != 9 || m.Conflicts != 1 || strings.Join(m.ConflictKeys, " ") != "55" {
				t.Errorf("counts %+v", m)
			}
		},
	},
}

// Against the real PostgreSQL: for each kind of destroying release, with
// writers inserting throughout the undo, every pre-release value comes
// back for rows that still exist, rows written since are kept unchanged,
// rows deleted since stay deleted, and conflicts are counted and keyed.
func TestUndoMergesWhatTheReleaseDestroyed(t *testing.T) {
	for _, mode := range []string{"inline", "batched"} {
		for _, tc := range captureCases {
			t.Run(mode+"/"+tc.name, func(t *testing.T) { mergeCase(t, tc, mode) })
		}
	}
}

func mergeCase(t *testing.T, tc captureCase, mode string) {
	o := opts()
	if mode == "batched" {
		o = batched(t)
	}
	{
		{
			ctx := context.Background()
			conn, dsn, src := releaseWithCapture(t, tc.up, tc.undo)
			if tc.after != "" {
				mustExec(t, conn, tc.after)
			}
			// A writer inserts, updates and deletes throughout the undo:
			// every write it saw acknowledged must survive the merge.
			writer := connect(t, dsn)
			var mu sync.Mutex
			emails := map[int64]string{} // acknowledged: its row has this email
			gone := map[int64]bool{}     // acknowledged deletes
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []int64
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var id int64
					e := fmt.Sprintf("writer%d", i)
					if writer.QueryRow(ctx, `INSERT INTO accounts (email) VALUES ($1) RETURNING id`, e).Scan(&id) == nil {
						mu.Lock()
						emails[id] = e
						mu.Unlock()
						mine = append(mine, id)
					}
					if i%3 == 0 { // a pre-release row the cases do not look at
						id := int64(60 + i%30)
						e := fmt.Sprintf("updated%d", i)
						if tag, err := writer.Exec(ctx, `UPDATE accounts SET email = $1 WHERE id = $2`, e, id); err == nil && tag.RowsAffected() == 1 {
							mu.Lock()
							emails[id] = e
							mu.Unlock()
						}
					}
					if i%5 == 4 && len(mine) > 0 {
						id := mine[0]
						if _, err := writer.Exec(ctx, `DELETE FROM accounts WHERE id = $1`, id); err == nil {
							mu.Lock()
							delete(emails, id)
							gone[id] = true
							mu.Unlock()
							mine = mine[1:]
						}
					}
				}
			}()
			res, err := undoRelease(t, conn, src.Dir, o)
			// A dropped table takes writes only once the undo has put it
			// back, which a loaded machine may not schedule the writer in
			// before the undo ends: it writes on until it has one
			// acknowledged write, so the check below is never empty.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				mu.Lock()
				n := len(emails) + len(gone)
				mu.Unlock()
				if n > 0 {
					break
				}
			}
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			lost := 0
			for id, e := range emails {
				var got string
				if conn.QueryRow(ctx, `SELECT email FROM accounts WHERE id = $1`, id).Scan(&got); got != e {
					lost++
				}
			}
			for id := range gone {
				if one(t, conn, fmt.Sprintf(`SELECT count(*) FROM accounts WHERE id = %d`, id)) != "0" {
					lost++
				}
			}
			if lost > 0 || len(emails) == 0 {
				t.Errorf("%d of the writer's %d acknowledged writes lost", lost, len(emails)+len(gone))
			}
			if len(res.Merged) != 1 {
				t.Fatalf("merged %+v", res.Merged)
			}
			tc.check(t, conn, res.Merged[0])
			if got := historyVersions(t, conn); got != "1" {
				t.Errorf("history %s", got)
			}
			// Merged once: a second undo has nothing to do.
			if p, err := loadPlan(t, conn, src.Dir, Flyway, "1"); err != nil || len(p.Steps) != 0 {
				t.Errorf("second plan: %v %+v", err, p)
			}
			if again, err := undoRelease(t, conn, src.Dir, o); err != nil || len(again.Merged) != 0 {
				t.Errorf("second undo: %v, merged %+v", err, again.Merged)
			}
		}
	}
}

// A table the release destroys data of without a key is refused when the
// release is recorded, before it migrates: nothing is recorded.
func TestRecordRefusesATableWithoutAKey(t *testing.T) {
	ctx := context.Background()
	conn, dsn := newDB(t)
	dir := writeFiles(t, map[string]string{"V1__base.sql": "CREATE TABLE logs (msg text);", "V2__release.sql": "DELETE FROM logs WHERE msg LIKE 'debug%';",
		"rollback/V2__Undo__release.sql": "SELECT 1;"})
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	flywayApply(t, conn, src, "1")
	p := &Provider{DSN: dsn, Conn: conn, Source: src, Format: Flyway}
	_, _, err = p.RecordRelease(ctx, "v2")
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "V2__release.sql:1") || !strings.Contains(err.Error(), "primary key") {
		t.Fatalf("got %v, want the file, line and what to do", err)
	}
	if _, err := LoadRelease(ctx, conn, "v2"); !errors.Is(err, ErrNoRecord) {
		t.Errorf("a refused release was recorded: %v", err)
	}
	// 'rollback check' says so before the release too.
	ds, problems, err := Assess(ctx, conn, src, MustVersion("1"))
	if err != nil || len(ds) != 1 || len(problems) != 1 || !strings.Contains(problems[0], "V2__release.sql:1") {
		t.Errorf("assess: %v %v %v", ds, problems, err)
	}
}

// 'rollback db plan' after the release says what it destroyed and where
// the capture is; without a record, that nothing was captured.
func TestPlanSaysWhatWasDestroyed(t *testing.T) {
	tc := captureCases[0]
	conn, _, src := releaseWithCapture(t, tc.up, tc.undo)
	p, err := loadPlan(t, conn, src.Dir, Flyway, "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.LoadCaptures(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if len(p.Destroyed) != 1 || !p.Destroyed[0].Captured || p.Destroyed[0].Rows != 100 || !strings.Contains(p.Destroyed[0].String(), "accounts.note: captured 100 row(s)") {
		t.Errorf("destroyed %+v", p.Destroyed)
	}
	mustExec(t, conn, `DELETE FROM rollback.captures`)
	if err := p.LoadCaptures(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if len(p.Destroyed) != 1 || p.Destroyed[0].Captured || !strings.Contains(p.Destroyed[0].Note, "not captured") {
		t.Errorf("destroyed without a capture %+v", p.Destroyed)
	}
}

// The merge is part of the down script's transaction: a merge that fails
// (here: the capture was tampered with) leaves schema, data and history
// as the release left them, and the undo run again (once the capture is
// sound) reaches the same end state as one that never failed.
func TestMergeFailureLeavesNothingHalfDone(t *testing.T) {
	ctx := context.Background()
	tc := captureCases[0]
	conn, _, src := releaseWithCapture(t, tc.up, tc.undo)
	mustExec(t, conn, tc.after)
	var sum string
	_ = conn.QueryRow(ctx, `SELECT checksum FROM rollback.captures`).Scan(&sum)
	mustExec(t, conn, `UPDATE rollback.captures SET checksum = 'tampered'`)
	if _, err := undoRelease(t, conn, src.Dir); err == nil || !strings.Contains(err.Error(), "changed since it was taken") {
		t.Fatalf("got %v", err)
	}
	if got := historyVersions(t, conn); got != "1,2" {
		t.Errorf("history after the failed merge: %s", got)
	}
	if strings.Contains(columns(t, conn, "accounts"), "note") {
		t.Error("the down script's change was kept although the merge failed")
	}
	mustExec(t, conn, `UPDATE rollback.captures SET checksum = $1`, sum)
	res, err := undoRelease(t, conn, src.Dir)
	if err != nil {
		t.Fatal(err)
	}
	tc.check(t, conn, res.Merged[0])
}

// A statement the grammar cannot scope is captured whole and left to a
// person, said so at record and in the undo's evidence.
func TestUnscopedIsCapturedWhole(t *testing.T) {
	const up = "WITH old AS (SELECT id FROM accounts WHERE id > 90) DELETE FROM accounts WHERE id IN (SELECT id FROM old);"
	conn, _, src := releaseWithCapture(t, up, "SELECT 1;")
	var rows int64
	if err := conn.QueryRow(context.Background(), `SELECT rows FROM rollback.captures WHERE NOT scoped`).Scan(&rows); err != nil || rows != 100 {
		t.Fatalf("captured %d rows (%v), want the whole table's 100", rows, err)
	}
	res, err := undoRelease(t, conn, src.Dir)
	if err != nil || len(res.Merged) != 1 || res.Merged[0].ByHand != 100 || !strings.Contains(MergeSummary(res.Merged), "restore by hand") {
		t.Errorf("undo: %v %+v", err, res)
	}
	if got := one(t, conn, `SELECT count(*) FROM accounts`); got != "90" {
		t.Errorf("an unscoped capture was merged: %s rows", got)
	}
}

// From the review: a mixed-case table is the table the script named; a
// json column (no equality operator) is compared as text; a DELETE whose
// USING join meets a row twice captures it once; a statement after
// another that changed its table is captured whole; recording again while
// a merge is unfinished is refused.
func TestCaptureEdges(t *testing.T) {
	ctx := context.Background()
	conn, dsn := newDB(t)
	dir := writeFiles(t, map[string]string{
		"V1__base.sql": `CREATE TABLE "Orders" (id int PRIMARY KEY, doc json, memo text);
CREATE TABLE orders (id int PRIMARY KEY, memo text);
CREATE TABLE tags (order_id int, tag text);
CREATE TABLE items (id int PRIMARY KEY, n numeric);`,
		"rollback/V1__Undo__base.sql": `DROP TABLE "Orders"; DROP TABLE orders; DROP TABLE tags; DROP TABLE items;`,
		"V2__release.sql": `ALTER TABLE "Orders" DROP COLUMN memo;
UPDATE "Orders" SET doc = '{"v": 2}' WHERE id <= 10;
DELETE FROM orders o USING tags g WHERE g.order_id = o.id;
ALTER TABLE items ALTER COLUMN n TYPE int;
UPDATE items SET n = 0;`,
		"rollback/V2__Undo__release.sql": `ALTER TABLE "Orders" ADD COLUMN memo text;
ALTER TABLE items ALTER COLUMN n TYPE numeric;`,
	})
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	flywayApply(t, conn, src, "1")
	mustExec(t, conn, `INSERT INTO "Orders" SELECT i, '{"v": 1}', 'big ' || i FROM generate_series(1, 20) i;
INSERT INTO orders SELECT i, 'small ' || i FROM generate_series(1, 20) i;
INSERT INTO tags VALUES (3, 'a'), (3, 'b'), (4, 'c');
INSERT INTO items SELECT i, i + 0.5 FROM generate_series(1, 5) i;`)
	p := &Provider{DSN: dsn, Conn: conn, Source: src, Format: Flyway}
	_, caps, err := p.RecordRelease(ctx, "v2")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range caps {
		got[fmt.Sprintf("%d %s", c.Line, c.Kind)] = fmt.Sprintf("%s %d %v", c.Table, c.Rows, c.Scoped)
	}
	want := map[string]string{
		"1 drop-column": `public."Orders" 20 true`,
		"2 update":      `public."Orders" 10 true`,
		"3 delete":      "public.orders 2 true", // orders 3 and 4, each once
		"4 type-change": "public.items 5 true",
		"5 update":      "public.items 5 false", // after the type change: captured whole
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("capture %s: %q, want %q", k, got[k], w)
		}
	}
	flywayApply(t, conn, src, "2")
	mustExec(t, conn, `UPDATE "Orders" SET doc = '{"v": 3}' WHERE id = 1`)
	res, err := undoRelease(t, conn, dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM "Orders" WHERE memo = 'big ' || id AND (doc::text = '{"v": 1}' OR id = 1)`); n != "20" {
		t.Errorf("\"Orders\": %s of 20 rows back; merged %v", n, res.Merged)
	}
	if d := one(t, conn, `SELECT doc::text FROM "Orders" WHERE id = 1`); d != `{"v": 3}` {
		t.Errorf("the json written since was overwritten: %s", d)
	}
	if n := one(t, conn, `SELECT count(*) FROM orders WHERE id IN (3, 4)`); n != "2" {
		t.Errorf("the joined DELETE's rows: %s of 2 back", n)
	}
	// The type change is undone by its capture; the UPDATE after it was
	// captured whole and left to a person (n stays 0).
	if n := one(t, conn, `SELECT string_agg(n::text, ',' ORDER BY id) FROM items`); n != "0,0,0,0,0" {
		t.Errorf("items: %s", n)
	}
	// A record while a merge is unfinished is refused.
	mustExec(t, conn, `UPDATE rollback.captures SET undone_at = now(), merged_at = NULL WHERE seq = 1`)
	if _, _, err := p.RecordRelease(ctx, "v3"); err == nil || !strings.Contains(err.Error(), "not finished") {
		t.Errorf("record with a merge pending: %v", err)
	}
}
