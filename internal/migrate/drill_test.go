package migrate

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestDrill(t *testing.T) {
	ctx := context.Background()
	conn, dsn := newDB(t)
	files := seedFiles()
	// The pending migration builds on the applied one (its column): the
	// drill must put the applied one back before drilling it.
	files["V1_3_0__add_category_index.sql"] = "CREATE INDEX transactions_category_amount_idx ON transactions (category, amount);\n"
	files["U1_3_0__add_category_index.sql"] = "DROP INDEX IF EXISTS transactions_category_amount_idx;\n"
	dir := writeFiles(t, files)
	src, _ := LoadDir(dir)
	flywayApply(t, conn, src, "1.2.0")
	mustExec(t, conn, `INSERT INTO transactions (amount, category) SELECT g, CASE WHEN g % 4 = 0 THEN 'rent' END FROM generate_series(1, 200) g`)
	before, err := TakeFingerprint(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	// Our own connection is open, so TEMPLATE fails and the drill copies
	// with pg_dump/pg_restore.
	res, err := Drill(ctx, dsn, src, Flyway, "", DrillOptions{Log: func(s string) { logs = append(logs, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed || res.CloneBy != "pg_dump" || len(res.Steps) != 2 {
		t.Fatalf("drill %+v\n%s", res, strings.Join(logs, "\n"))
	}
	applied, pending := res.Steps[0], res.Steps[1]
	if applied.Version != "1.2.0" || !applied.Applied || pending.Version != "1.3.0" || pending.Applied {
		t.Errorf("steps %+v", res.Steps)
	}
	if len(applied.DataLoss) != 1 || applied.DataLoss[0] != (DataLoss{Table: "transactions", Column: "category", Rows: 50}) {
		t.Errorf("data loss %+v, want 50 rows of transactions.category", applied.DataLoss)
	}
	// The source database is untouched and the clone is gone.
	after, _ := TakeFingerprint(ctx, conn)
	if d := after.Diff(before); len(d) > 0 || historyVersions(t, conn) != "1.1.0,1.2.0" {
		t.Errorf("the drill changed the source: %v, history %s", d, historyVersions(t, conn))
	}
	var clones int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, res.Clone).Scan(&clones)
	if clones != 0 {
		t.Errorf("clone %s left behind", res.Clone)
	}
	log := DrillLog{Path: filepath.Join(t.TempDir(), "drills.jsonl")}
	if err := log.Append(res); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := log.Tested(res.Database, "1.2.0", seedUndo); !ok {
		t.Error("the drilled undo is not recorded as tested")
	}
	if ok, _, _ := log.Tested(res.Database, "1.2.0", seedUndo+"-- edited\n"); ok {
		t.Error("an edited undo script counts as tested")
	}
}

func TestDrillCatchesIncompleteUndo(t *testing.T) {
	ctx := context.Background()
	conn, dsn := newDB(t)
	files := seedFiles()
	// The undo forgets to take back the default the forward migration sets.
	files["V1_3_0__default_amount.sql"] = "ALTER TABLE transactions ALTER COLUMN amount SET DEFAULT 0;\n"
	files["U1_3_0__default_amount.sql"] = "SELECT 1;\n"
	dir := writeFiles(t, files)
	src, _ := LoadDir(dir)
	flywayApply(t, conn, src, "1.2.0")
	conn.Close(ctx) // nobody connected: the clone is made with TEMPLATE
	res, err := Drill(ctx, dsn, src, Flyway, "", DrillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.CloneBy != "template" {
		t.Errorf("clone by %s, want template", res.CloneBy)
	}
	if res.Passed {
		t.Fatalf("drill passed, want the 1.3.0 round trip to fail: %+v", res)
	}
	last := res.Steps[len(res.Steps)-1]
	if last.Version != "1.3.0" || last.Passed || len(last.Diff) == 0 || !strings.Contains(strings.Join(last.Diff, "\n"), "default 0") {
		t.Errorf("step %+v, want a schema diff naming the leftover default", last)
	}
}

// The drill proves the merge of a pending release that destroys data: on
// the clone, it captures, migrates, writes (deletes two captured rows,
// inserts two), undoes, and accounts for every captured row; an undo that
// cannot take the data back fails the drill.
func TestDrillProvesTheMerge(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, undo string
		pass       bool
	}{
		{"merges", "ALTER TABLE accounts ADD COLUMN note text;", true},
		{"down script forgets the column", "SELECT 1;", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, dsn := newDB(t)
			dir := writeFiles(t, map[string]string{"V1__base.sql": captureBase, "rollback/V1__Undo__base.sql": "DROP TABLE audit; DROP TABLE accounts;",
				"V1_1__index.sql": "CREATE INDEX accounts_email ON accounts (email);", "rollback/V1_1__Undo__index.sql": "DROP INDEX accounts_email;",
				"V2__release.sql": "ALTER TABLE accounts DROP COLUMN note;", "rollback/V2__Undo__release.sql": tc.undo})
			src, _ := LoadDir(dir)
			flywayApply(t, conn, src, "1.1")
			mustExec(t, conn, `INSERT INTO accounts (email, note) SELECT 'u' || i, 'n' || i FROM generate_series(1, 20) i`)
			res, err := Drill(ctx, dsn, src, Flyway, "", DrillOptions{})
			if err != nil {
				t.Fatal(err)
			}
			st := res.Steps[len(res.Steps)-1]
			if res.Passed != tc.pass {
				t.Fatalf("passed %v, want %v: %+v", res.Passed, tc.pass, st)
			}
			if !tc.pass {
				if !strings.Contains(st.Error, "note") {
					t.Errorf("the failure does not name the column: %s", st.Error)
				}
				return
			}
			m := st.Merged
			if len(m) != 1 || m[0].Restored != 18 || m[0].NotResurrected != 2 || m[0].Kept != 2 || !strings.Contains(st.Sample, "2 row(s) inserted") {
				t.Errorf("merged %+v, sample %q", m, st.Sample)
			}
			// The source database has no capture: the drill's was on its clone.
			var n int
			_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'rollback_capture'`).Scan(&n)
			if n != 0 {
				t.Error("the drill captured into the source database")
			}
		})
	}
}
