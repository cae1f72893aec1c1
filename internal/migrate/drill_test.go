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
