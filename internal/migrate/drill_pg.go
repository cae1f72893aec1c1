package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The drill on PostgreSQL: the clone (TEMPLATE, or pg_dump and
// pg_restore), scripts in one transaction each, the rows an undo destroys
// counted, and the sample writes that prove a capture's merge.

// Drill clones the database (CREATE DATABASE ... TEMPLATE, or pg_dump and
// pg_restore when others are connected) and, on the clone only, proves
// every recent applied migration's undo and every pending migration's
// up/undo round trip: the schema after the undo equals the schema before.
// It reports the data each undo destroys, measured on the clone's copy of
// the data.
func Drill(ctx context.Context, dsn string, src *Source, format Format, table string, o DrillOptions) (*DrillResult, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	start := now()
	logf := func(format string, a ...any) {
		if o.Log != nil {
			o.Log(fmt.Sprintf(format, a...))
		}
	}
	dbName := DatabaseName(dsn)
	if dbName == "" {
		return nil, fmt.Errorf("drill needs a connection string that names a database (postgres://user@host:port/db or dbname=...), got %q", SafeDSN(dsn))
	}
	clone := fmt.Sprintf("%s_drill_%d", dbName, start.Unix())
	if len(clone) > 63 {
		clone = clone[len(clone)-63:]
	}
	res := &DrillResult{Database: dbName, Clone: clone, At: start.UTC()}
	// Both connections are built from the parsed configuration, so no
	// parameter of the original string (a dbname= in its query) can point
	// them back at the source database.
	adminCfg, err := connConfig(dsn, "postgres")
	if err != nil {
		return nil, fmt.Errorf("drill: %w", err)
	}
	cloneCfg, err := connConfig(dsn, clone)
	if err != nil {
		return nil, fmt.Errorf("drill: %w", err)
	}
	ac, err := pgx.ConnectConfig(ctx, adminCfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the maintenance database: %w", err)
	}
	defer ac.Close(context.WithoutCancel(ctx))
	logf("cloning %s into %s", dbName, clone)
	if _, err := ac.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", pgx.Identifier{clone}.Sanitize(), pgx.Identifier{dbName}.Sanitize())); err == nil {
		res.CloneBy = "template"
	} else {
		logf("CREATE DATABASE ... TEMPLATE failed (%v); copying with pg_dump/pg_restore", err)
		if err := dumpRestore(ctx, ac, dsn, clone); err != nil {
			return nil, err
		}
		res.CloneBy = "pg_dump"
	}
	if !o.Keep {
		defer func() {
			_, _ = ac.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+pgx.Identifier{clone}.Sanitize()+" WITH (FORCE)")
		}()
	}
	cc, err := pgx.ConnectConfig(ctx, cloneCfg)
	if err != nil {
		return nil, err
	}
	defer cc.Close(context.WithoutCancel(ctx))
	if err := onDatabase(ctx, cc, clone); err != nil {
		return nil, err
	}
	st, err := ReadState(ctx, cc, format, table)
	if err != nil {
		return nil, err
	}
	if st.Dirty || len(st.Failed) > 0 {
		return nil, fmt.Errorf("%w: the history shows a failed or dirty migration; repair it before a drill", ErrUnsafe)
	}
	plan, err := PlanUndo(src, st, drillTo(st, o.To))
	if err != nil {
		return nil, err
	}
	if err := roundTrips(ctx, pgDrill{cc}, src, st, plan, res, logf, DefaultUndoOptions()); err != nil {
		return nil, err
	}
	res.Seconds = now().Sub(start).Seconds()
	return res, nil
}

// pgDrill is a PostgreSQL clone: each script in one transaction; the
// rows an undo destroys counted; a pending migration that destroys data
// captured as 'db record' would, sample writes made after it, and the
// undo required to account for every captured row.
type pgDrill struct{ cc *pgx.Conn }

func (d pgDrill) fingerprint(ctx context.Context) (*Fingerprint, error) {
	return TakeFingerprint(ctx, d.cc)
}

func (d pgDrill) undoPlan(ctx context.Context, p *Plan, o UndoOptions) (*UndoResult, error) {
	return Undo(ctx, d.cc, p, o)
}

func (d pgDrill) run(ctx context.Context, path string) error { return runScript(ctx, d.cc, path) }

func (d pgDrill) dataLoss(ctx context.Context, s *Step) ([]DataLoss, error) {
	return measureLoss(ctx, d.cc, s)
}

func (d pgDrill) forwardAndBack(ctx context.Context, m *Migration, ds *DrillStep, forward func() error, back func() (*UndoResult, error)) error {
	caps, err := Capture(ctx, d.cc, "drill", &Source{Migrations: []*Migration{m}}, &State{})
	if err != nil {
		return fmt.Errorf("capture what %s destroys: %w", m.Up.Name(), err)
	}
	if err := forward(); err != nil {
		return err
	}
	sample, err := sampleWrites(ctx, d.cc, caps)
	if err != nil {
		return err
	}
	ds.Sample = sample.String()
	res, err := back()
	if err != nil {
		return err
	}
	ds.Merged = res.Merged
	return sample.check(ctx, d.cc, caps, res.Merged)
}

func runScript(ctx context.Context, db *pgx.Conn, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, st := range Split(string(b)) {
		if _, err := tx.Exec(ctx, st.SQL); err != nil {
			return fmt.Errorf("%s:%d: %w", path, st.Line, err)
		}
	}
	return tx.Commit(ctx)
}

// measureLoss counts, before the undo runs, the rows it destroys.
func measureLoss(ctx context.Context, db DB, s *Step) ([]DataLoss, error) {
	infos, err := AnalyzeScript(s.Undo.Path, s.Script)
	if err != nil {
		return nil, err
	}
	var out []DataLoss
	count := func(table, column string) error {
		var exists bool
		if err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil || !exists {
			return err
		}
		q := "SELECT count(*) FROM " + quoteQualified(table)
		if column != "" {
			var has bool
			if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)`, table, column).Scan(&has); err != nil || !has {
				return err
			}
			q += " WHERE " + pgx.Identifier{column}.Sanitize() + " IS NOT NULL"
		}
		var n int64
		if err := db.QueryRow(ctx, q).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			out = append(out, DataLoss{Table: table, Column: column, Rows: n})
		}
		return nil
	}
	for _, in := range infos {
		for _, c := range in.DropColumns {
			if err := count(c.Table, c.Column); err != nil {
				return nil, err
			}
		}
		for _, c := range in.NullingColumns {
			if err := count(c.Table, c.Column); err != nil {
				return nil, err
			}
		}
		for _, t := range in.DropTables {
			if err := count(t, ""); err != nil {
				return nil, err
			}
		}
	}
	return dedupeLoss(out), nil
}

func dedupeLoss(in []DataLoss) []DataLoss {
	seen := map[DataLoss]bool{}
	var out []DataLoss
	for _, d := range in {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

func quoteQualified(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}

// ErrNotClone means a drill's connection was not on its clone: the drill
// refuses before running any statement.
var ErrNotClone = errors.New("drill refused: connected to a database other than the clone")

// onDatabase checks that conn is on database want.
func onDatabase(ctx context.Context, conn *pgx.Conn, want string) error {
	var got string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil {
		return fmt.Errorf("drill: which database: %w", err)
	}
	if got != want {
		return fmt.Errorf("%w: on %q, clone %q", ErrNotClone, got, want)
	}
	return nil
}

func dumpRestore(ctx context.Context, ac *pgx.Conn, dsn, clone string) error {
	tmp, err := os.MkdirTemp("", "rollback-drill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dump := filepath.Join(tmp, "db.dump")
	src, env, err := childConn(dsn, "")
	if err != nil {
		return err
	}
	dst, _, err := childConn(dsn, clone)
	if err != nil {
		return err
	}
	dumpCmd := exec.CommandContext(ctx, "pg_dump", "--format=custom", "--no-owner", "--file", dump, "--dbname", src)
	dumpCmd.Env = env
	if out, err := dumpCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("clone with pg_dump: %v: %s", err, Redact(string(out), dsn))
	}
	if _, err := ac.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{clone}.Sanitize()); err != nil {
		return fmt.Errorf("create clone: %w", err)
	}
	restoreCmd := exec.CommandContext(ctx, "pg_restore", "--no-owner", "--dbname", dst, dump)
	restoreCmd.Env = env
	if out, err := restoreCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("clone with pg_restore: %v: %s", err, Redact(string(out), dsn))
	}
	return nil
}

// sample is what a drill wrote after the forward migration, per capture:
// rows deleted (which must stay deleted) and rows inserted (which must be
// kept).
type sample struct {
	deleted  map[string][]string // capture store -> keys
	inserted map[string]int64    // table -> rows
	notes    []string
}

func (s sample) String() string {
	var parts []string
	for store, keys := range s.deleted {
		parts = append(parts, fmt.Sprintf("%d captured row(s) of %s deleted", len(keys), store))
	}
	for table, n := range s.inserted {
		parts = append(parts, fmt.Sprintf("%d row(s) inserted into %s", n, table))
	}
	return strings.Join(append(parts, s.notes...), "; ")
}

// sampleWrites writes what customers would after the release: for each
// capture whose table still exists, it deletes two captured rows and
// inserts two rows copied from others (their key from its default; a
// table whose key has none, or whose copy breaks a constraint, gets no
// inserts and the sample says so).
func sampleWrites(ctx context.Context, conn *pgx.Conn, caps []Captured) (sample, error) {
	s := sample{deleted: map[string][]string{}, inserted: map[string]int64{}}
	for _, c := range caps {
		if c.Store == "" || !c.Scoped {
			continue
		}
		ti, exists, err := readTable(ctx, conn, c.ident)
		if err != nil {
			return s, err
		}
		if !exists {
			continue // dropped by the release
		}
		on, key := c.keyMatch()
		dtx, err := conn.Begin(ctx)
		if err != nil {
			return s, err
		}
		rows, err := dtx.Query(ctx, fmt.Sprintf(`DELETE FROM %s t USING (SELECT * FROM %s ORDER BY rn LIMIT 2) c WHERE %s RETURNING %s`,
			ti.ident, c.Store, on, key))
		var keys []string
		if err == nil {
			keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			// A foreign key to these rows, say: no sample deletes here.
			_ = dtx.Rollback(ctx)
			s.notes = append(s.notes, fmt.Sprintf("no sample deletes from %s (%v)", ti.ident, err))
			keys = nil
		} else if err := dtx.Commit(ctx); err != nil {
			return s, err
		}
		s.deleted[c.Store] = keys
		if _, done := s.inserted[ti.ident]; done {
			continue
		}
		var cols []string
		for _, col := range ti.cols {
			if !slices.Contains(ti.keys, col) {
				cols = append(cols, pgx.Identifier{col}.Sanitize())
			}
		}
		list := strings.Join(cols, ", ")
		tx, err := conn.Begin(ctx)
		if err != nil {
			return s, err
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s LIMIT 2`, ti.ident, list, list, ti.ident))
		if err != nil {
			_ = tx.Rollback(ctx)
			s.notes = append(s.notes, fmt.Sprintf("no sample inserts into %s (%v)", ti.ident, err))
			s.inserted[ti.ident] = 0
			continue
		}
		if err := tx.Commit(ctx); err != nil {
			return s, err
		}
		s.inserted[ti.ident] = tag.RowsAffected()
	}
	return s, nil
}

// check: every captured row is accounted for (restored, not resurrected
// or a conflict), the rows the sample deleted stayed deleted and the rows
// it inserted were kept.
func (s sample) check(ctx context.Context, conn *pgx.Conn, caps []Captured, merged []Merged) error {
	byCapture := map[string]Merged{}
	for _, m := range merged {
		byCapture[m.Capture] = m
	}
	for _, c := range caps {
		if c.Store == "" || !c.Scoped {
			continue
		}
		name := c.Table
		if c.Column != "" {
			name += "." + c.Column
		}
		m, ok := byCapture[name+" ("+c.Kind+")"]
		if !ok {
			return fmt.Errorf("the capture of %s was not merged", name)
		}
		if got := m.Restored + m.NotResurrected + m.Conflicts; got != c.Rows {
			return fmt.Errorf("merge of %s accounts for %d of %d captured row(s): %s", name, got, c.Rows, m)
		}
		if d := int64(len(s.deleted[c.Store])); c.Column != "" && m.NotResurrected < d {
			return fmt.Errorf("merge of %s: %d row(s) deleted after the release, %d counted as not resurrected", name, d, m.NotResurrected)
		}
		if n := s.inserted[c.Table]; m.Kept < n {
			return fmt.Errorf("merge of %s: %d row(s) inserted after the release, %d kept", name, n, m.Kept)
		}
	}
	return nil
}
