package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/mytest"
	"github.com/rollback-dev/rollback/internal/peerbuild"
)

var myLazy mytest.Lazy

// mariadb is the package's MariaDB server, started by the first test that
// needs it (TestMain stops it). Missing, it fails the test.
func mariadb(t *testing.T) *mytest.Server { t.Helper(); return myLazy.For(t) }

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
	peerbuild.Need(t, filepath.Dir(bin), "migrate")
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
