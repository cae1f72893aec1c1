package migrate

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// UndoOptions configure Undo.
type UndoOptions struct {
	// LockTimeout bounds how long any statement waits for a lock, so an
	// undo never queues behind a long query and stalls all traffic.
	LockTimeout time.Duration
	// StatementTimeout bounds each statement.
	StatementTimeout time.Duration
	// Retries is how many more times a segment is tried after a lock
	// timeout, with exponential Backoff between tries.
	Retries int
	Backoff time.Duration
	// DryRun prints what would run and changes nothing.
	DryRun bool
	// Log receives progress lines; may be nil.
	Log func(string)
	// Locked: the caller holds the migration tool's lock (LockMigrations)
	// and planned under it; Undo does not take it again.
	Locked bool

	// InlineMergeRows: a step whose captures hold at most this many rows
	// is merged inside its down script's transaction, a larger one in
	// batches after it commits (0: DefaultInlineMergeRows; negative:
	// always in batches).
	InlineMergeRows int

	// boundary, in tests, is called before each statement, merge and
	// commit of a transaction (where a kill can land).
	boundary func(where string)
	// executed, in tests, is called after each statement took effect
	// (MySQL: a DDL statement ran, a DML statement committed).
	executed func(where string)
}

func (o UndoOptions) inline(rows int64) bool {
	switch {
	case o.InlineMergeRows < 0:
		return false
	case o.InlineMergeRows == 0:
		return rows <= DefaultInlineMergeRows
	}
	return rows <= int64(o.InlineMergeRows)
}

// DefaultUndoOptions are the defaults of `rollback db undo`: a short
// lock_timeout tried many times with backoff (as GitLab's lock retries
// do), so application queries never queue behind the undo's pending lock
// for more than 200 ms per try (make bench-db measures it), while the undo
// keeps trying for about two minutes.
func DefaultUndoOptions() UndoOptions {
	return UndoOptions{LockTimeout: 200 * time.Millisecond, StatementTimeout: 10 * time.Minute, Retries: 30, Backoff: 200 * time.Millisecond}
}

// ErrLockBudget means every try hit lock_timeout: something holds a lock
// the undo needs. Nothing of the failed segment was applied.
var ErrLockBudget = errors.New("could not take the locks the undo needs")

// ErrMigrationLocked means another process holds golang-migrate's lock.
var ErrMigrationLocked = errors.New("another migration is running")

// UndoResult reports what Undo did.
type UndoResult struct {
	Segments   int           `json:"segments"`
	Statements int           `json:"statements"`
	Retries    int           `json:"lockRetries"`
	Duration   time.Duration `json:"-"`
	Seconds    float64       `json:"seconds"`
	DryRun     bool          `json:"dryRun"`
	// Resumed counts the statements (MySQL) an earlier, stopped run had
	// finished: found in the journal or the schema, not run again.
	Resumed int `json:"resumed,omitempty"`
	// Merged is what each capture of the release's destroyed data gave
	// back, merged in its step's transaction.
	Merged []Merged `json:"merged,omitempty"`
}

// action is one statement to run, with where it came from.
type action struct {
	sql   string
	args  []any
	where string
	nonTx bool
	// merge, instead of sql: put a capture back by key.
	merge *Captured
}

// segment is a unit run atomically: a transaction, or one statement that
// PostgreSQL refuses to run inside a transaction.
type segment struct {
	actions []action
	nonTx   bool
	// mergeAfter: a step of this segment has captures merged in batches
	// once it commits, before the next step's down script can change the
	// table they go back into.
	mergeAfter bool
}

// AdvisoryLockID is the key golang-migrate's PostgreSQL driver locks with
// (pg_advisory_lock): CRC32 of "schema\x00table\x00database" times its salt,
// as an unsigned 32-bit number.
func AdvisoryLockID(database, schema, table string) int64 {
	sum := crc32.ChecksumIEEE([]byte(strings.Join([]string{schema, table, database}, "\x00")))
	return int64(sum * 1486364155)
}

// FlywayLockID is the advisory lock key Flyway takes on PostgreSQL while
// it migrates (flyway-database-postgresql, PostgreSQLAdvisoryLockTemplate
// and PostgreSQLConnection.lock): 77431708279161 plus the Java hashCode of
// the history table's quoted name, "schema"."flyway_schema_history", with
// pg_try_advisory_lock in a retry loop.
func FlywayLockID(schema, table string) int64 {
	quote := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	return 77431708279161 + int64(javaHash(quote(schema)+"."+quote(table)))
}

// javaHash is Java's String.hashCode: over UTF-16 code units, s[0]·31^(n-1)
// + … + s[n-1], in 32-bit arithmetic.
func javaHash(s string) int32 {
	var h int32
	for _, u := range utf16.Encode([]rune(s)) {
		h = 31*h + int32(u)
	}
	return h
}

// LockMigrations takes the lock the migration tool itself takes on the
// database (Flyway's or golang-migrate's advisory lock), so neither the
// tool nor another rollback migrates while an undo plans, snapshots and
// runs. It tries for the undo's retry budget.
func LockMigrations(ctx context.Context, conn *pgx.Conn, format Format, table string, o UndoOptions) (unlock func(), err error) {
	var dbName, schema string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_schema()`).Scan(&dbName, &schema); err != nil {
		return nil, err
	}
	var id int64
	if format == Flyway {
		id = FlywayLockID(schema, orDefault(table, FlywayTable))
	} else {
		id = AdvisoryLockID(dbName, schema, orDefault(table, GolangMigrateTable))
	}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			o.Log(fmt.Sprintf(format, a...))
		}
	}
	if err := advisoryLock(ctx, conn, id, format, o, logf); err != nil {
		return nil, err
	}
	return func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, id) }, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// segments groups the plan into transactions: every run of transactional
// statements, each step's history fix included, is one transaction; a
// statement that cannot run in one runs alone, guarded with IF [NOT] EXISTS
// so a re-run after a failure is safe.
func (p *Plan) segments(o UndoOptions) ([]segment, []string, error) {
	caps := p.captures
	var segs []segment
	var warnings []string
	cur := segment{}
	flush := func() {
		if len(cur.actions) > 0 {
			segs = append(segs, cur)
		}
		cur = segment{}
	}
	for i, s := range p.Steps {
		for _, st := range s.Statements {
			where := fmt.Sprintf("%s:%d", s.Undo.Path, st.Line)
			if nonTransactional(st.SQL) {
				guarded := guard(st.SQL)
				warnings = append(warnings, fmt.Sprintf("%s: %q cannot run in a transaction: it runs alone, outside the undo's transaction (guarded: %s)", where, firstLine(st.SQL), firstLine(guarded)))
				flush()
				segs = append(segs, segment{nonTx: true, actions: []action{{sql: guarded, where: where, nonTx: true}}})
				continue
			}
			cur.actions = append(cur.actions, action{sql: st.SQL, where: where})
		}
		// What the release destroyed goes back after the down script,
		// newest statement first: in its transaction when small, else in
		// batches once it has committed (marked undone here).
		var rows int64
		v := s.Version.String() // captures are keyed by the parsed version
		for _, c := range caps[v] {
			rows += c.Rows
		}
		if o.inline(rows) {
			for _, c := range caps[v] {
				cur.actions = append(cur.actions, action{merge: c, where: fmt.Sprintf("merge of %s:%d", c.File, c.Line)})
			}
		} else if len(caps[v]) > 0 {
			cur.actions = append(cur.actions, action{sql: `UPDATE rollback.captures SET undone_at = now() WHERE version = $1 AND merged_at IS NULL`,
				args: []any{v}, where: fmt.Sprintf("%d captured row(s) of %s to merge after the commit, in batches", rows, s.VersionText)})
			cur.actions = append(cur.actions, p.historyFix(i)...)
			cur.mergeAfter = true
			flush()
			continue
		}
		cur.actions = append(cur.actions, p.historyFix(i)...)
	}
	flush()
	return segs, warnings, nil
}

// historyFix returns the statements that take step i out of the history.
func (p *Plan) historyFix(i int) []action {
	table := pgx.Identifier{p.Table}.Sanitize()
	s := p.Steps[i]
	where := "history fix for " + s.VersionText
	if p.Format == Flyway {
		return []action{{sql: "DELETE FROM " + table + " WHERE version = $1", args: []any{s.VersionText}, where: where}}
	}
	// golang-migrate: the version below this step, or no row at all.
	prev := p.after
	if i+1 < len(p.Steps) {
		prev = p.Steps[i+1].Version
	}
	acts := []action{{sql: "DELETE FROM " + table, where: where}}
	if !prev.IsZero() {
		acts = append(acts, action{sql: "INSERT INTO " + table + " (version, dirty) VALUES ($1, false)", args: []any{int64(prev.parts[0])}, where: where})
	}
	return acts
}

var (
	nonTxRe   = regexp.MustCompile(`(?is)^\s*((create\s+(unique\s+)?index|drop\s+index|reindex\b.*)\s+concurrently\b|vacuum\b|create\s+database\b|drop\s+database\b|alter\s+system\b|(create|drop)\s+tablespace\b)`)
	createIdx = regexp.MustCompile(`(?is)^(\s*create\s+(unique\s+)?index\s+concurrently\s+)(if\s+not\s+exists\s+)?`)
	dropIdx   = regexp.MustCompile(`(?is)^(\s*drop\s+index\s+concurrently\s+)(if\s+exists\s+)?`)
)

func nonTransactional(sql string) bool { return nonTxRe.MatchString(stripLeadingComments(sql)) }

// guard makes a concurrent index statement safe to run twice.
func guard(sql string) string {
	s := stripLeadingComments(sql)
	if m := createIdx.FindStringSubmatch(s); m != nil && m[3] == "" {
		return m[1] + "IF NOT EXISTS " + s[len(m[0]):]
	}
	if m := dropIdx.FindStringSubmatch(s); m != nil && m[2] == "" {
		return m[1] + "IF EXISTS " + s[len(m[0]):]
	}
	return s
}

func stripLeadingComments(sql string) string {
	for {
		t := strings.TrimLeft(sql, " \t\r\n")
		if strings.HasPrefix(t, "--") {
			if i := strings.IndexByte(t, '\n'); i >= 0 {
				sql = t[i+1:]
				continue
			}
			return ""
		}
		return t
	}
}

func firstLine(s string) string {
	s = stripLeadingComments(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// Describe returns the SQL the undo would run, segment by segment, with
// the checks it makes: what --dry-run prints.
func (p *Plan) Describe(o UndoOptions) (string, error) {
	if p.my != nil {
		return p.describeMySQL(o), nil
	}
	segs, warnings, err := p.segments(o)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- down migration %s -> %s (%s, history table %s)\n", p.From, p.To, p.Format, p.Table)
	fmt.Fprintf(&b, "-- checks: golang-migrate's advisory lock held throughout; lock_timeout=%s with %d retries; statement_timeout=%s\n",
		o.LockTimeout, o.Retries, o.StatementTimeout)
	for _, w := range append(p.Warnings, warnings...) {
		fmt.Fprintf(&b, "-- warning: %s\n", w)
	}
	for _, s := range segs {
		if s.nonTx {
			fmt.Fprintf(&b, "\n-- outside a transaction (%s)\n%s;\n", s.actions[0].where, s.actions[0].sql)
			continue
		}
		fmt.Fprintf(&b, "\nBEGIN;\nSET LOCAL lock_timeout = '%dms';\nSET LOCAL statement_timeout = '%dms';\n", o.LockTimeout.Milliseconds(), o.StatementTimeout.Milliseconds())
		for _, a := range s.actions {
			if a.merge != nil {
				fmt.Fprintf(&b, "-- %s: give back %d captured row(s) of %s by key (%s)\n", a.where, a.merge.Rows, a.merge.Table, a.merge.Kind)
				continue
			}
			sql := a.sql
			for i, arg := range a.args {
				sql = strings.Replace(sql, fmt.Sprintf("$%d", i+1), fmt.Sprintf("'%v'", arg), 1)
			}
			fmt.Fprintf(&b, "-- %s\n%s;\n", a.where, sql)
		}
		fmt.Fprintf(&b, "COMMIT;\n")
	}
	return b.String(), nil
}

// Undo runs the plan on conn. Each transaction segment either applies
// whole or not at all; on a lock timeout it is rolled back and retried
// with backoff, and after the budget Undo fails with ErrLockBudget. The
// whole run holds golang-migrate's advisory lock, so the application
// cannot migrate at the same time.
func Undo(ctx context.Context, conn *pgx.Conn, p *Plan, o UndoOptions) (*UndoResult, error) {
	start := time.Now()
	res := &UndoResult{DryRun: o.DryRun}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			o.Log(fmt.Sprintf(format, a...))
		}
	}
	if len(p.Steps) == 0 && !o.DryRun {
		// Nothing left to undo; a merge a kill interrupted is finished,
		// under the migration tool's lock (the application must not
		// migrate between batches).
		if !o.Locked {
			unlock, err := LockMigrations(ctx, conn, p.Format, p.Table, o)
			if err != nil {
				return nil, err
			}
			defer unlock()
		}
		versions, err := finishMerges(ctx, conn, o, logf)
		if err == nil {
			res.Merged, err = reportMerges(ctx, conn, versions)
		}
		res.Duration = time.Since(start)
		res.Seconds = res.Duration.Seconds()
		return res, err
	}
	if o.DryRun {
		_, warnings, err := p.segments(o)
		if err != nil {
			return nil, err
		}
		for _, w := range warnings {
			logf("warning: %s", w)
		}
		res.Duration = time.Since(start)
		res.Seconds = res.Duration.Seconds()
		return res, nil
	}
	if !o.Locked {
		unlock, err := LockMigrations(ctx, conn, p.Format, p.Table, o)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	if err := p.LoadCaptures(ctx, conn); err != nil {
		return nil, err
	}
	segs, warnings, err := p.segments(o)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		logf("warning: %s", w)
	}

	for i, s := range segs {
		err := withLockRetries(ctx, o, logf, fmt.Sprintf("segment %d/%d", i+1, len(segs)), func() error {
			merged, err := runSegment(ctx, conn, s, o)
			if err == nil {
				for _, m := range merged {
					logf("merged %s", m)
				}
			}
			return err
		}, &res.Retries)
		if err != nil {
			return res, err
		}
		res.Segments++
		res.Statements += len(s.actions)
		logf("segment %d/%d applied (%d statements)", i+1, len(segs), len(s.actions))
		if s.mergeAfter {
			if _, err := finishMerges(ctx, conn, o, logf); err != nil {
				return res, err
			}
		}
	}
	versions, err := finishMerges(ctx, conn, o, logf)
	if err != nil {
		return res, err
	}
	for _, s := range p.Steps {
		if !slices.Contains(versions, s.Version.String()) {
			versions = append(versions, s.Version.String())
		}
	}
	if res.Merged, err = reportMerges(ctx, conn, versions); err != nil {
		return res, err
	}
	res.Duration = time.Since(start)
	res.Seconds = res.Duration.Seconds()
	return res, nil
}

// withLockRetries runs fn (one transaction) until it does not hit
// lock_timeout, with backoff, at most 1+o.Retries times; retries counts
// the retries (may be nil).
func withLockRetries(ctx context.Context, o UndoOptions, logf func(string, ...any), what string, fn func() error, retries ...*int) error {
	for try := 0; ; try++ {
		err := fn()
		if err == nil || !isLockTimeout(err) {
			return err
		}
		if try >= o.Retries {
			return fmt.Errorf("%w: %d tries of lock_timeout=%s failed (%v); nothing of this transaction was applied. Find the blocker with: SELECT pid, state, xact_start, query FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(<pid>)), or retry when traffic is lower",
				ErrLockBudget, try+1, o.LockTimeout, err)
		}
		for _, r := range retries {
			*r++
		}
		wait := backoff(o.Backoff, try)
		logf("%s: %s at %v; rolled back; retry %d/%d in %s", what, lockReason(err), lockWhere(err), try+1, o.Retries, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func runSegment(ctx context.Context, conn *pgx.Conn, s segment, o UndoOptions) ([]Merged, error) {
	if s.nonTx {
		a := s.actions[0]
		if _, err := conn.Exec(ctx, fmt.Sprintf("SET lock_timeout = '%dms'", o.LockTimeout.Milliseconds())); err != nil {
			return nil, err
		}
		if _, err := conn.Exec(ctx, a.sql, a.args...); err != nil {
			return nil, fmt.Errorf("%s: %w", a.where, err)
		}
		return nil, nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, set := range []string{
		fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", o.LockTimeout.Milliseconds()),
		fmt.Sprintf("SET LOCAL statement_timeout = '%dms'", o.StatementTimeout.Milliseconds()),
	} {
		if _, err := tx.Exec(ctx, set); err != nil {
			return nil, err
		}
	}
	var merged []Merged
	for _, a := range s.actions {
		if o.boundary != nil {
			o.boundary(a.where)
		}
		if a.merge != nil {
			m, err := a.merge.merge(ctx, tx)
			if err != nil {
				return nil, fmt.Errorf("%s: %w (the transaction was rolled back: schema, data and history are unchanged)", a.where, err)
			}
			merged = append(merged, m)
			continue
		}
		if _, err := tx.Exec(ctx, a.sql, a.args...); err != nil {
			return nil, fmt.Errorf("%s: %w (the transaction was rolled back: schema and history are unchanged)", a.where, err)
		}
	}
	if o.boundary != nil {
		o.boundary("commit")
	}
	return merged, tx.Commit(ctx)
}

// advisoryLock takes the migration tool's lock, trying for the same
// budget as the statements' locks.
func advisoryLock(ctx context.Context, conn *pgx.Conn, id int64, format Format, o UndoOptions, logf func(string, ...any)) error {
	for try := 0; ; try++ {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, id).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if try >= o.Retries {
			return fmt.Errorf("%w: %s's advisory lock %d is held by another session; wait for the migration to finish (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %d)", ErrMigrationLocked, format, id, uint32(id))
		}
		wait := backoff(o.Backoff, try)
		logf("advisory lock %d is held; retry %d/%d in %s", id, try+1, o.Retries, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// isLockTimeout reports a lock_timeout (55P03) or a deadlock (40P01): in
// both the transaction was rolled back and a later try may get through.
// backoff doubles base per try, up to 5 seconds.
func backoff(base time.Duration, try int) time.Duration {
	const limit = 5 * time.Second
	d := base
	for i := 0; i < try && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func isLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "55P03" || pe.Code == "40P01")
}

func lockReason(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "40P01" {
		return "deadlock"
	}
	return "lock_timeout"
}

func lockWhere(err error) string {
	if i := strings.Index(err.Error(), ": "); i > 0 {
		return err.Error()[:i]
	}
	return err.Error()
}

// Summary is the undo in one line, as 'db undo' and the runbook's step
// report it: migrations, statements, how they ran, lock retries, and what
// the merge gave back.
func (r *UndoResult) Summary(p *Plan) string {
	var msg string
	if p.my != nil {
		msg = fmt.Sprintf("%d migration(s) undone, %d statement(s) run one by one, journaled", len(p.Steps), r.Statements)
		if r.Resumed > 0 {
			msg += fmt.Sprintf(" (%d done by an earlier, stopped run: not run again)", r.Resumed)
		}
	} else {
		msg = fmt.Sprintf("%d migration(s) undone, %d statement(s) in %d transaction(s)", len(p.Steps), r.Statements, r.Segments)
	}
	msg += fmt.Sprintf(", %d lock retries", r.Retries)
	if m := MergeSummary(r.Merged); m != "" {
		msg += "; " + m
	}
	return msg
}
