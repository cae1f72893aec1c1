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
	to := o.To
	if to.IsZero() && len(st.Applied) > 0 {
		for _, a := range st.Applied {
			if a.Version.Compare(st.Current) < 0 && a.Version.Compare(to) > 0 {
				to = a.Version
			}
		}
	}
	plan, err := PlanUndo(src, st, to)
	if err != nil {
		return nil, err
	}
	plan.mysql(cm)
	res.Passed = true
	uo := DefaultUndoOptions()
	uo.Log = func(s string) { logf("  %s", s) }
	for i, s := range plan.Steps {
		one := &Plan{Format: plan.Format, Table: plan.Table, From: s.VersionText, Steps: []*Step{s}, after: plan.after, my: cm}
		if i+1 < len(plan.Steps) {
			one.after = plan.Steps[i+1].Version
		}
		ds := DrillStep{Version: s.VersionText, Applied: true, UndoHash: hashString(s.Script)}
		err := func() error {
			before, err := cm.fingerprint(ctx)
			if err != nil {
				return err
			}
			if _, err := cm.undo(ctx, one, uo); err != nil {
				return fmt.Errorf("undo: %w", err)
			}
			if err := cm.runScript(ctx, s.Up.Path); err != nil {
				return fmt.Errorf("re-apply %s after the undo: %w", s.Up.Name(), err)
			}
			again, err := cm.fingerprint(ctx)
			if err != nil {
				return err
			}
			ds.Diff = again.Diff(before)
			if _, err := cm.undo(ctx, one, uo); err != nil {
				return fmt.Errorf("second undo: %w", err)
			}
			return nil
		}()
		finishStep(res, &ds, err)
		logf("version %s (applied): undo, re-apply, undo: %s", s.VersionText, verdict(ds))
	}
	pending := false
	for _, mg := range src.Migrations {
		pending = pending || mg.Version.Compare(st.Current) > 0
	}
	if pending {
		for i := len(plan.Steps) - 1; i >= 0; i-- {
			if err := cm.runScript(ctx, plan.Steps[i].Up.Path); err != nil {
				return nil, fmt.Errorf("drill: re-applying %s before the pending migrations: %w", plan.Steps[i].Up.Name(), err)
			}
		}
	}
	for _, mg := range src.Migrations {
		if mg.Version.Compare(st.Current) <= 0 {
			continue
		}
		ds := DrillStep{Version: mg.Version.String()}
		if mg.Undo == nil {
			ds.Error = fmt.Sprintf("%s has no undo script", mg.Up.Path)
			finishStep(res, &ds, nil)
			continue
		}
		undo, err := os.ReadFile(mg.Undo.Path)
		if err != nil {
			return nil, err
		}
		s := &Step{Version: mg.Version, VersionText: mg.Version.String(), Up: mg.Up, Undo: mg.Undo, Script: string(undo), Statements: SplitMySQL(string(undo))}
		ds.UndoHash = hashString(s.Script)
		err = func() error {
			before, err := cm.fingerprint(ctx)
			if err != nil {
				return err
			}
			if err := cm.runScript(ctx, mg.Up.Path); err != nil {
				return fmt.Errorf("apply %s: %w", mg.Up.Name(), err)
			}
			one := &Plan{Format: format, Table: st.Table, Steps: []*Step{s}, after: st.Current, my: cm}
			if _, err := cm.undo(ctx, one, uo); err != nil {
				return fmt.Errorf("undo: %w", err)
			}
			after, err := cm.fingerprint(ctx)
			if err != nil {
				return err
			}
			ds.Diff = after.Diff(before)
			return cm.runScript(ctx, mg.Up.Path)
		}()
		finishStep(res, &ds, err)
		logf("version %s (pending): apply, undo: %s", ds.Version, verdict(ds))
	}
	res.Seconds = now().Sub(start).Seconds()
	return res, nil
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
