package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rollback-dev/rollback/internal/pgtest"
)

var pg *pgtest.Server

func TestMain(m *testing.M) {
	code := pgtest.Main(m, "migrate", &pg)
	myLazy.Stop()
	os.Exit(code)
}

var dbSeq atomic.Int64

// newDB creates a fresh database and returns a connection and its DSN.
func newDB(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("t%d_%s", dbSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())))
	if len(name) > 60 {
		name = name[:60]
	}
	dsn, err := pg.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, dsn)
	return conn, dsn
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, db DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const flywayHistoryDDL = pgtest.FlywayHistoryDDL

// flywayApply runs every versioned migration of src the way Flyway does:
// the script, then a history row with its checksum.
func flywayApply(t *testing.T, db DB, src *Source, upTo string) {
	t.Helper()
	ctx := context.Background()
	var exists bool
	_ = db.QueryRow(ctx, `SELECT to_regclass('flyway_schema_history') IS NOT NULL`).Scan(&exists)
	if !exists {
		mustExec(t, db, flywayHistoryDDL)
	}
	limit := MustVersion(upTo)
	for _, m := range src.Migrations {
		var done bool
		_ = db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM flyway_schema_history WHERE version = $1)`, m.Version.String()).Scan(&done)
		if m.Version.Compare(limit) > 0 || done {
			continue
		}
		body, err := os.ReadFile(m.Up.Path)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, db, string(body))
		mustExec(t, db, `INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success)
			VALUES ((SELECT coalesce(max(installed_rank), 0) + 1 FROM flyway_schema_history), $1, $2, 'SQL', $3, $4, 'flyway', 5, true)`,
			m.Version.String(), m.Description, m.Up.Name(), FlywayChecksum(body))
	}
}

func loadPlan(t *testing.T, db DB, dir string, format Format, to string) (*Plan, error) {
	t.Helper()
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(context.Background(), db, format, "")
	if err != nil {
		t.Fatal(err)
	}
	var v Version
	if to != "" {
		v = MustVersion(to)
	}
	return PlanUndo(src, st, v)
}

func columns(t *testing.T, db DB, table string) string {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		_ = rows.Scan(&c)
		cols = append(cols, c)
	}
	return strings.Join(cols, ",")
}

func historyVersions(t *testing.T, db DB) string {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT coalesce(version, '') FROM flyway_schema_history ORDER BY installed_rank`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []string
	for rows.Next() {
		var v string
		_ = rows.Scan(&v)
		vs = append(vs, v)
	}
	return strings.Join(vs, ",")
}

func connectErr(dsn string) (*pgx.Conn, error) { return pgx.Connect(context.Background(), dsn) }
