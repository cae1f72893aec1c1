package migrate

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// drill is Drill on MySQL: the database is cloned on the same server
// (each table's SHOW CREATE TABLE, then INSERT … SELECT; views after), and
// on the clone only every recent applied migration's undo (undo,
// re-apply, undo) and every pending migration's round trip (apply, undo)
// must leave the schema it started from. The undo is the one 'db undo'
// runs: statement by statement, journaled.
func (m *MySQL) drill(ctx context.Context, dsn string, src *Source, format Format, table string, o DrillOptions) (*DrillResult, error) {
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
	dbName := m.cfg.DBName
	clone := fmt.Sprintf("%s_drill_%d", dbName, start.Unix())
	if len(clone) > 64 {
		clone = clone[len(clone)-64:]
	}
	res := &DrillResult{Database: dbName, Clone: clone, At: start.UTC(), CloneBy: "CREATE TABLE + INSERT … SELECT on the same server"}
	logf("cloning %s into %s", dbName, clone)
	if err := m.cloneInto(ctx, clone); err != nil {
		_, _ = m.db.ExecContext(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+quoteIdent(clone))
		return nil, fmt.Errorf("clone %s: %w", dbName, err)
	}
	if !o.Keep {
		defer func() {
			_, _ = m.db.ExecContext(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+quoteIdent(clone))
		}()
	}
	cfg, err := mysqlConnConfig(dsn, clone)
	if err != nil {
		return nil, err
	}
	cm, err := openMySQLConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer cm.close()
	st, err := cm.state(ctx, format, table)
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
	plan.mysql(cm)
	uo := DefaultUndoOptions()
	uo.Log = func(s string) { logf("  %s", s) }
	if err := roundTrips(ctx, myDrill{cm}, src, st, plan, res, logf, uo); err != nil {
		return nil, err
	}
	res.Seconds = now().Sub(start).Seconds()
	return res, nil
}

// myDrill is a MySQL clone: scripts statement by statement, the undo
// journaled as 'db undo' runs it; data loss is not measured and nothing is
// captured (PostgreSQL's).
type myDrill struct{ m *MySQL }

func (d myDrill) fingerprint(ctx context.Context) (*Fingerprint, error) { return d.m.fingerprint(ctx) }

func (d myDrill) undoPlan(ctx context.Context, p *Plan, o UndoOptions) (*UndoResult, error) {
	return d.m.undo(ctx, p, o)
}

func (d myDrill) run(ctx context.Context, path string) error { return d.m.runScript(ctx, path) }

func (myDrill) dataLoss(context.Context, *Step) ([]DataLoss, error) { return nil, nil }

func (myDrill) forwardAndBack(_ context.Context, _ *Migration, _ *DrillStep, forward func() error, back func() (*UndoResult, error)) error {
	if err := forward(); err != nil {
		return err
	}
	_, err := back()
	return err
}

// cloneInto copies the database's tables (rows included) and views into
// a new database on the same server.
func (m *MySQL) cloneInto(ctx context.Context, clone string) error {
	c, err := m.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	src := m.cfg.DBName
	if _, err := c.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(clone)); err != nil {
		return err
	}
	var tables, views []string
	rows, err := c.QueryContext(ctx, `SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME`, src)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return err
		}
		if typ == "VIEW" {
			views = append(views, name)
		} else {
			tables = append(tables, name)
		}
	}
	rows.Close()
	for _, q := range []string{"USE " + quoteIdent(clone), "SET SESSION FOREIGN_KEY_CHECKS = 0"} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	defer func() { _, _ = c.ExecContext(context.WithoutCancel(ctx), "SET SESSION FOREIGN_KEY_CHECKS = 1") }()
	for _, t := range tables {
		var name, ddl string
		if err := c.QueryRowContext(ctx, "SHOW CREATE TABLE "+quoteIdent(src)+"."+quoteIdent(t)).Scan(&name, &ddl); err != nil {
			return err
		}
		if _, err := c.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("create %s: %w", t, err)
		}
		if _, err := c.ExecContext(ctx, "INSERT INTO "+quoteIdent(t)+" SELECT * FROM "+quoteIdent(src)+"."+quoteIdent(t)); err != nil {
			return fmt.Errorf("copy %s: %w", t, err)
		}
	}
	for _, v := range views {
		var name, ddl, cs, coll string
		if err := c.QueryRowContext(ctx, "SHOW CREATE VIEW "+quoteIdent(src)+"."+quoteIdent(v)).Scan(&name, &ddl, &cs, &coll); err != nil {
			return err
		}
		ddl = strings.ReplaceAll(ddl, quoteIdent(src)+".", quoteIdent(clone)+".")
		if _, err := c.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("create view %s: %w", v, err)
		}
	}
	return nil
}

// runScript runs a script's statements one by one (the drill's forward
// migrations, as golang-migrate or Flyway would).
func (m *MySQL) runScript(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, st := range SplitMySQL(string(b)) {
		if _, err := m.conn.ExecContext(ctx, st.SQL); err != nil {
			return fmt.Errorf("%s:%d: %w", path, st.Line, err)
		}
	}
	return nil
}
