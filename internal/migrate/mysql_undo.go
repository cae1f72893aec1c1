package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// A down migration on MySQL or MariaDB cannot be one transaction: each DDL
// statement commits by itself. So the undo keeps a journal in the database
// (rollback_undo_journal): a DDL statement is journaled as started before
// it runs and as done after; a DML statement runs in one transaction with
// its done row. A run killed anywhere resumes at the next statement and
// never repeats a finished one: a statement journaled as started is judged
// from information_schema (see effect). The history row is fixed, and the
// step's journal rows removed, in one transaction after its last statement.

const myJournalDDL = `CREATE TABLE IF NOT EXISTS rollback_undo_journal (
	version     VARCHAR(100) NOT NULL,
	stmt_sha    CHAR(64) NOT NULL,
	nth         INT NOT NULL,
	stmt_no     INT NOT NULL,
	state       VARCHAR(10) NOT NULL,
	sql_text    MEDIUMTEXT NOT NULL,
	ran_as      MEDIUMTEXT NULL,
	started_at  TIMESTAMP(6) NULL,
	done_at     TIMESTAMP(6) NULL,
	PRIMARY KEY (version, stmt_sha, nth)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`

// ErrHalfway means a down script stopped between two statements and a
// person must look before it goes on: the error says which statements ran,
// which did not, the schema of the tables it touches now, and what to do.
var ErrHalfway = errors.New("the down migration stopped half-way")

// myStmt is one statement of a step's down script with its journal key.
type myStmt struct {
	Statement
	no   int // 1-based position in the script
	sha  string
	nth  int // how many earlier statements of the script have this text
	kind StatementKind
}

func (s myStmt) where(step *Step) string {
	return fmt.Sprintf("%s:%d (statement %d)", step.Undo.Path, s.Line, s.no)
}

func myStatements(script string) []myStmt {
	seen := map[string]int{}
	var out []myStmt
	for i, st := range SplitMySQL(script) {
		h := sha256.Sum256([]byte(st.SQL))
		sha := hex.EncodeToString(h[:])
		out = append(out, myStmt{Statement: st, no: i + 1, sha: sha, nth: seen[sha], kind: ClassifyMySQL(st.SQL)})
		seen[sha]++
	}
	return out
}

// journalKey is a statement's place in the journal: its text's hash and
// how many earlier statements of the script have the same text.
type journalKey struct {
	sha string
	nth int
}

type journalRow struct {
	state string
	ranAs string
}

func (m *MySQL) journal(ctx context.Context, version string) (map[journalKey]journalRow, error) {
	rows, err := m.conn.QueryContext(ctx, `SELECT stmt_sha, nth, state, COALESCE(ran_as, '') FROM rollback_undo_journal WHERE version = ?`, version)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[journalKey]journalRow{}
	for rows.Next() {
		var sha string
		var nth int
		var r journalRow
		if err := rows.Scan(&sha, &nth, &r.state, &r.ranAs); err != nil {
			return nil, err
		}
		out[journalKey{sha, nth}] = r
	}
	return out, rows.Err()
}

// undo runs the plan's down scripts statement by statement (see above).
func (m *MySQL) undo(ctx context.Context, p *Plan, o UndoOptions) (*UndoResult, error) {
	start := time.Now()
	res := &UndoResult{DryRun: o.DryRun}
	logf := logger(o)
	done := func() (*UndoResult, error) {
		res.Duration = time.Since(start)
		res.Seconds = res.Duration.Seconds()
		return res, nil
	}
	if o.DryRun || len(p.Steps) == 0 {
		return done()
	}
	for _, step := range p.Steps {
		for _, st := range myStatements(step.Script) {
			if why := RefusedInUndo(st.SQL); why != "" {
				return nil, fmt.Errorf("%w: %s: %q: %s; nothing was run", ErrUnsafe, st.where(step), firstLine(st.SQL), why)
			}
		}
	}
	if !o.Locked {
		unlock, err := m.lock(ctx, p.Format, p.Table, o)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	if _, err := m.conn.ExecContext(ctx, myJournalDDL); err != nil {
		return nil, fmt.Errorf("create %s: %w", myJournal, err)
	}
	// A lock wait longer than the statement's own limit is cut short by
	// the watcher (see execBounded); this is the server's backstop, in
	// whole seconds as MariaDB and MySQL take it.
	backstop := max(1, int(math.Ceil(o.LockTimeout.Seconds())))
	for _, set := range []string{
		fmt.Sprintf("SET SESSION lock_wait_timeout = %d", backstop),
		fmt.Sprintf("SET SESSION innodb_lock_wait_timeout = %d", backstop),
	} {
		if _, err := m.conn.ExecContext(ctx, set); err != nil {
			return nil, err
		}
	}
	if o.StatementTimeout > 0 && m.MariaDB {
		if _, err := m.conn.ExecContext(ctx, fmt.Sprintf("SET SESSION max_statement_time = %.3f", o.StatementTimeout.Seconds())); err != nil {
			return nil, err
		}
	}
	for i, step := range p.Steps {
		if err := m.undoStep(ctx, p, i, o, res, logf); err != nil {
			return res, err
		}
		res.Segments++
		logf("%s undone; history fixed", step.VersionText)
	}
	return done()
}

func (m *MySQL) undoStep(ctx context.Context, p *Plan, i int, o UndoOptions, res *UndoResult, logf func(string, ...any)) error {
	step := p.Steps[i]
	stmts := myStatements(step.Script)
	journal, err := m.journal(ctx, step.VersionText)
	if err != nil {
		return fmt.Errorf("read %s: %w", myJournal, err)
	}
	boundary := func(where string) {
		if o.boundary != nil {
			o.boundary(where)
		}
	}
	for j, st := range stmts {
		where := st.where(step)
		boundary("before " + where)
		if err := ctx.Err(); err != nil {
			return err
		}
		row, seen := journal[journalKey{st.sha, st.nth}]
		switch {
		case st.kind == KindSession:
			if _, err := m.conn.ExecContext(ctx, st.SQL); err != nil {
				return m.halfway(ctx, step, stmts, j, journal, fmt.Errorf("%s: %w", where, err))
			}
			continue
		case seen && row.state == "done":
			if st.kind == KindDDL {
				// The journal's word, checked against the schema: a
				// journal left by an undo stopped long ago, after which
				// the schema moved on, must not skip a statement.
				if eff, why, err := m.effect(ctx, st.SQL); err != nil {
					return err
				} else if eff == EffectNotRun {
					return m.halfway(ctx, step, stmts, j, journal, fmt.Errorf("%s is journaled as done by an earlier undo, but its effect is not in the schema (%s): the journal is stale (the schema changed since that undo stopped); if so, clear it with DELETE FROM %s WHERE version = '%s' and run the undo again", where, why, myJournal, step.VersionText))
				}
			}
			logf("%s: done by an earlier run (journal): not run again", where)
			res.Resumed++
			continue
		case seen && row.state == "failed":
			logf("%s: failed in an earlier run, which the server rolled back: running it again", where)
		case seen && row.state == "started":
			eff, why, err := m.effect(ctx, st.SQL)
			if err != nil {
				return err
			}
			switch eff {
			case EffectDone:
				logf("%s: an earlier run was stopped after starting it; its effect is there (%s): not run again", where, why)
				if err := m.markDone(ctx, step.VersionText, st, row.ranAs); err != nil {
					return err
				}
				res.Resumed++
				continue
			case EffectNotRun:
				logf("%s: an earlier run was stopped before it took effect (%s): running it", where, why)
			default:
				return m.halfway(ctx, step, stmts, j, journal, fmt.Errorf("%s was started by an earlier run that was stopped, and its effect is %s (%s)", where, eff, why))
			}
		}
		if st.kind == KindDML {
			err := withMyLockRetries(ctx, o, logf, where, nil, func() error { return m.runDML(ctx, step.VersionText, st, boundary) }, &res.Retries)
			if err != nil {
				return m.halfway(ctx, step, stmts, j, journal, fmt.Errorf("%s: %w (its transaction was rolled back)", where, err))
			}
			if o.executed != nil {
				o.executed(where)
			}
			journal[journalKey{st.sha, st.nth}] = journalRow{state: "done", ranAs: st.SQL}
			res.Statements++
			continue
		}
		if _, err := m.conn.ExecContext(ctx, `INSERT INTO rollback_undo_journal (version, stmt_sha, nth, stmt_no, state, sql_text, started_at)
			VALUES (?, ?, ?, ?, 'started', ?, CURRENT_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE state = 'started', started_at = CURRENT_TIMESTAMP(6)`,
			step.VersionText, st.sha, st.nth, st.no, st.SQL); err != nil {
			return fmt.Errorf("journal %s: %w", where, err)
		}
		journal[journalKey{st.sha, st.nth}] = journalRow{state: "started"}
		boundary("run " + where)
		ranAs, err := m.runDDL(ctx, st, where, o, logf, &res.Retries)
		if err != nil {
			// An error the server reported (a lock wait cut short, the
			// statement refused) applied nothing: one DDL statement is
			// atomic on MariaDB 10.6+ and MySQL 8. A lost connection or a
			// cancelled run leaves it "started", judged on resume.
			if myErrNo(err) != 0 || errors.Is(err, ErrLockBudget) || errors.Is(err, errLockWatch) {
				if _, jerr := m.conn.ExecContext(context.WithoutCancel(ctx), `UPDATE rollback_undo_journal SET state = 'failed' WHERE version = ? AND stmt_sha = ? AND nth = ?`,
					step.VersionText, st.sha, st.nth); jerr == nil {
					journal[journalKey{st.sha, st.nth}] = journalRow{state: "failed"}
				}
			}
			return m.halfway(ctx, step, stmts, j, journal, err)
		}
		if o.executed != nil {
			o.executed(where)
		}
		boundary("ran " + where)
		if err := m.markDone(ctx, step.VersionText, st, ranAs); err != nil {
			return err
		}
		journal[journalKey{st.sha, st.nth}] = journalRow{state: "done", ranAs: ranAs}
		res.Statements++
	}
	boundary("history " + step.VersionText)
	return m.fixHistory(ctx, p, i)
}

func (m *MySQL) markDone(ctx context.Context, version string, st myStmt, ranAs string) error {
	_, err := m.conn.ExecContext(ctx, `UPDATE rollback_undo_journal SET state = 'done', ran_as = ?, done_at = CURRENT_TIMESTAMP(6)
		WHERE version = ? AND stmt_sha = ? AND nth = ?`, ranAs, version, st.sha, st.nth)
	return err
}

// runDML runs a DML statement and its journal row in one transaction.
func (m *MySQL) runDML(ctx context.Context, version string, st myStmt, boundary func(string)) error {
	tx, err := m.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, st.SQL); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO rollback_undo_journal (version, stmt_sha, nth, stmt_no, state, sql_text, ran_as, started_at, done_at)
		VALUES (?, ?, ?, ?, 'done', ?, ?, CURRENT_TIMESTAMP(6), CURRENT_TIMESTAMP(6))
		ON DUPLICATE KEY UPDATE state = 'done', done_at = CURRENT_TIMESTAMP(6)`, version, st.sha, st.nth, st.no, st.SQL, st.SQL); err != nil {
		return err
	}
	boundary("commit " + st.SQL)
	return tx.Commit()
}

// fixHistory takes step i out of the history and its statements out of
// the journal, in one transaction.
func (m *MySQL) fixHistory(ctx context.Context, p *Plan, i int) error {
	step := p.Steps[i]
	table := quoteIdent(historyTable(p.Format, p.Table))
	tx, err := m.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if p.Format == Flyway {
		_, err = tx.ExecContext(ctx, "DELETE FROM "+table+" WHERE version = ?", step.VersionText)
	} else {
		prev := p.after
		if i+1 < len(p.Steps) {
			prev = p.Steps[i+1].Version
		}
		if _, err = tx.ExecContext(ctx, "DELETE FROM "+table); err == nil && !prev.IsZero() {
			_, err = tx.ExecContext(ctx, "INSERT INTO "+table+" (version, dirty) VALUES (?, 0)", int64(prev.parts[0]))
		}
	}
	if err != nil {
		return fmt.Errorf("history fix for %s: %w", step.VersionText, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM rollback_undo_journal WHERE version = ?`, step.VersionText); err != nil {
		return err
	}
	return tx.Commit()
}

// halfway explains a stopped step: which statements ran, which did not,
// the tables it touches as they are now, and what to do.
func (m *MySQL) halfway(ctx context.Context, step *Step, stmts []myStmt, at int, journal map[journalKey]journalRow, cause error) error {
	if ctx.Err() != nil {
		return cause
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%v\n%s (%s) is half undone; its history row is unchanged (still %s). Statements:\n", cause, step.Undo.Path, step.VersionText, step.VersionText)
	tables := map[string]bool{}
	for j, st := range stmts {
		state := "not run"
		if r, ok := journal[journalKey{st.sha, st.nth}]; ok {
			state = r.state
		}
		if st.kind == KindSession {
			state = "session setting (runs again on resume)"
		}
		mark := ""
		if j == at {
			mark = "  <- stopped here"
		}
		fmt.Fprintf(&b, "  %d. [%s] %s%s\n", st.no, state, firstLine(st.SQL), mark)
		if checks, ok := effectChecks(st.SQL); ok {
			for _, c := range checks {
				tables[c.table] = true
			}
		}
	}
	for t := range tables {
		var name, ddl string
		if err := m.conn.QueryRowContext(context.WithoutCancel(ctx), "SHOW CREATE TABLE "+quoteIdent(t)).Scan(&name, &ddl); err == nil {
			fmt.Fprintf(&b, "Now: %s;\n", ddl)
		} else {
			fmt.Fprintf(&b, "Now: table %s does not exist\n", t)
		}
	}
	b.WriteString("Fix the cause (or the statement in the script), then run the undo again: it resumes at the first statement not done and never repeats a finished one.")
	return fmt.Errorf("%w: %s", ErrHalfway, b.String())
}

// mysql makes the plan one for m: statements split as the mariadb client
// splits them, and the engine named.
func (p *Plan) mysql(m *MySQL) {
	p.my, p.Engine = m, m.Engine()
	for _, s := range p.Steps {
		s.Statements = SplitMySQL(s.Script)
	}
	p.Warnings = append(p.Warnings, "what the release destroyed is not captured on "+m.Engine()+" (the keyed capture and merge are PostgreSQL's): the snapshot before the undo is the copy")
}

// describeMySQL is --dry-run's text on MySQL: each statement as it will
// run, journaled, with the forms an ALTER TABLE is tried in.
func (p *Plan) describeMySQL(o UndoOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- down migration %s -> %s on %s (%s, history table %s)\n", p.From, p.To, p.Engine, p.Format, historyTable(p.Format, p.Table))
	fmt.Fprintf(&b, "-- checks: the migration tool's named lock %q held throughout; each lock wait cut at %s, %d retries; each statement journaled in %s before and after it runs\n",
		MySQLLockName(p.Format, p.my.cfg.DBName, p.Table), o.LockTimeout, o.Retries, myJournal)
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "-- warning: %s\n", w)
	}
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "\n-- %s (%s): no transaction can hold DDL here; a stopped run resumes at the next statement\n", s.VersionText, s.Undo.Path)
		for _, st := range myStatements(s.Script) {
			switch st.kind {
			case KindDML:
				fmt.Fprintf(&b, "-- %s: in one transaction with its journal row\n", st.where(s))
			case KindSession:
				fmt.Fprintf(&b, "-- %s: session setting, run again on resume\n", st.where(s))
			default:
				forms := onlineForms(st.SQL)
				if len(forms) > 1 {
					fmt.Fprintf(&b, "-- %s: tried with ALGORITHM=INSTANT, then ALGORITHM=INPLACE, LOCK=NONE, then as written\n", st.where(s))
				} else {
					fmt.Fprintf(&b, "-- %s\n", st.where(s))
				}
			}
			fmt.Fprintf(&b, "%s;\n", st.SQL)
		}
		fmt.Fprintf(&b, "-- then, in one transaction: the history fix for %s and its journal rows removed\n", s.VersionText)
	}
	return b.String()
}
