package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// How the undo runs one DDL statement on MySQL without stalling readers:
// its least blocking form first, every lock wait cut at the undo's lock
// timeout by a watcher on a second connection and retried, and the long
// transactions that block it named.

var (
	hasAlgoRe   = regexp.MustCompile(`(?i)\b(algorithm|lock)\s*=`)
	alterOnline = regexp.MustCompile(`(?is)^alter\s+(online\s+)?(ignore\s+)?table\b`)
)

// onlineForms are the ways to run a DDL statement, least blocking first:
// an ALTER TABLE that names no algorithm is tried with ALGORITHM=INSTANT,
// then INPLACE with LOCK=NONE, then as written.
func onlineForms(stmt string) []string {
	s := strings.TrimRight(stripAllMySQLComments(stmt), "; \t\r\n")
	if !alterOnline.MatchString(s) || hasAlgoRe.MatchString(s) || strings.Contains(strings.ToLower(s), " partition") {
		return []string{stmt}
	}
	return []string{s + ", " + onlineLabels[0], s + ", " + onlineLabels[1], stmt}
}

var onlineLabels = []string{"ALGORITHM=INSTANT", "ALGORITHM=INPLACE, LOCK=NONE"}

// MySQL error numbers the undo acts on.
const (
	erLockWait        = 1205
	erDeadlock        = 1213
	erQueryKilled     = 1317
	erStatementTime   = 1969 // MariaDB max_statement_time
	erParse           = 1064
	erAlterNotSupp    = 1845
	erAlterNotSuppWhy = 1846
)

func myErrNo(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// runDDL runs one DDL statement in its least blocking form under the
// lock budget; it returns the form that ran.
func (m *MySQL) runDDL(ctx context.Context, st myStmt, where string, o UndoOptions, logf func(string, ...any), retries *int) (string, error) {
	forms := onlineForms(st.SQL)
	table := ""
	if checks, ok := effectChecks(st.SQL); ok && len(checks) > 0 {
		table = checks[0].table
	}
	for k, form := range forms {
		last := k == len(forms)-1
		err := withMyLockRetries(ctx, o, logf, where, func() string { return m.blockers(ctx, table) }, func() error {
			return m.execBounded(ctx, form, o.LockTimeout)
		}, retries)
		if err == nil {
			if k == len(forms)-1 && len(forms) > 1 {
				logf("%s: neither ALGORITHM=INSTANT nor INPLACE, LOCK=NONE is possible: it ran as written (a table copy that blocks writes)", where)
			}
			return form, nil
		}
		if n := myErrNo(err); !last && (n == erAlterNotSupp || n == erAlterNotSuppWhy || n == erParse) {
			logf("%s: %s not possible (%v); trying the next form", where, onlineLabels[k], err)
			continue
		}
		return "", fmt.Errorf("%s: %w", where, err)
	}
	return "", fmt.Errorf("%s: no form ran", where)
}

// execBounded runs q on the session while a watcher looks at it from a
// second connection: a wait for a metadata or row lock longer than limit
// is cut short (KILL QUERY), so the statement never queues long enough to
// stall every reader behind it. MariaDB and MySQL take lock_wait_timeout
// in whole seconds only; the watcher gives the sub-second bound. A cut
// short wait returns errLockWatch.
func (m *MySQL) execBounded(ctx context.Context, q string, limit time.Duration) error {
	wctx, stop := context.WithCancel(ctx)
	var killed, finished bool
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var since time.Time
		tick := time.NewTicker(min(limit/4+time.Millisecond, 25*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			var state, info sql.NullString
			qctx, cancel := context.WithTimeout(wctx, time.Second)
			err := m.db.QueryRowContext(qctx, `SELECT STATE, INFO FROM information_schema.PROCESSLIST WHERE ID = ?`, m.connID).Scan(&state, &info)
			cancel()
			// Only this statement, seen waiting for a lock, is cut short.
			waiting := err == nil && strings.Contains(strings.ToLower(state.String), "waiting for") && strings.Contains(strings.ToLower(state.String), "lock") &&
				strings.HasPrefix(info.String, q[:min(len(q), 48)])
			switch {
			case !waiting:
				since = time.Time{}
			case since.IsZero():
				since = time.Now()
			case time.Since(since) >= limit:
				// Under mu: the statement cannot finish and the next one
				// start while the kill is on its way.
				mu.Lock()
				if !finished {
					killed = true
					kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
					_, _ = m.db.ExecContext(kctx, fmt.Sprintf("KILL QUERY %d", m.connID))
					cancel()
				}
				mu.Unlock()
				return
			}
		}
	}()
	_, err := m.conn.ExecContext(ctx, q)
	mu.Lock()
	finished = true
	mu.Unlock()
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if err != nil && killed && (myErrNo(err) == erQueryKilled || myErrNo(err) == erLockWait) {
		return fmt.Errorf("%w: waited %s for a lock", errLockWatch, limit)
	}
	return err
}

var errLockWatch = errors.New("lock wait cut short")

func isMyLockTimeout(err error) bool {
	n := myErrNo(err)
	return errors.Is(err, errLockWatch) || n == erLockWait || n == erDeadlock
}

// withMyLockRetries runs fn until it does not hit a lock timeout, with
// backoff, at most 1+o.Retries times. blockers, when not nil, says who
// holds the locks: it is logged before the first try when someone does,
// and named in the error when the budget is spent.
func withMyLockRetries(ctx context.Context, o UndoOptions, logf func(string, ...any), what string, blockers func() string, fn func() error, retries *int) error {
	who := ""
	if blockers != nil {
		if who = blockers(); who != "" {
			logf("%s: %s; the statement would queue behind it and stall every reader of the table: trying %s at a time", what, who, o.LockTimeout)
		}
	}
	for try := 0; ; try++ {
		err := fn()
		if err == nil || !isMyLockTimeout(err) {
			return err
		}
		if try >= o.Retries {
			if blockers != nil {
				who = blockers()
			}
			if who == "" {
				who = "no long transaction is open now; retry"
			}
			return fmt.Errorf("%w: %d tries of %s failed (%v); nothing of this statement was applied. %s", ErrLockBudget, try+1, o.LockTimeout, err, who)
		}
		if retries != nil {
			*retries++
		}
		wait := backoff(o.Backoff, try)
		logf("%s: lock wait cut at %s; retry %d/%d in %s", what, o.LockTimeout, try+1, o.Retries, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// blockers names the sessions whose open transactions can hold table's
// metadata lock: from MariaDB's METADATA_LOCK_INFO when the plugin is
// loaded (exact), else every transaction open for a second or more (any
// that read the table holds its lock until it ends).
func (m *MySQL) blockers(ctx context.Context, table string) string {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var exact bool
	if table != "" {
		var n int
		if err := m.db.QueryRowContext(qctx, `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'information_schema' AND TABLE_NAME = 'METADATA_LOCK_INFO'`).Scan(&n); err == nil && n > 0 {
			exact = true
		}
	}
	q := `SELECT t.trx_mysql_thread_id, COALESCE(p.USER, ''), COALESCE(p.HOST, ''), TIMESTAMPDIFF(SECOND, t.trx_started, NOW()),
	             COALESCE(t.trx_query, p.INFO, '')
	        FROM information_schema.INNODB_TRX t LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
	       WHERE t.trx_mysql_thread_id <> ? AND t.trx_started <= NOW() - INTERVAL 1 SECOND`
	args := []any{m.connID}
	if exact {
		q += ` AND t.trx_mysql_thread_id IN (SELECT THREAD_ID FROM information_schema.METADATA_LOCK_INFO WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?)`
		args = append(args, table)
	}
	rows, err := m.db.QueryContext(qctx, q+` ORDER BY t.trx_started LIMIT 5`, args...)
	if err != nil {
		return ""
	}
	defer rows.Close()
	var who []string
	for rows.Next() {
		var id, secs int64
		var user, host, query string
		if rows.Scan(&id, &user, &host, &secs, &query) != nil {
			continue
		}
		s := fmt.Sprintf("connection %d (%s@%s) has had a transaction open for %ds", id, user, host, secs)
		if query != "" {
			s += fmt.Sprintf(" (now: %s)", firstLine(query))
		} else {
			s += " (idle in it)"
		}
		who = append(who, s)
	}
	if len(who) == 0 {
		return ""
	}
	lead := "open transactions (any that read the table holds its metadata lock until it ends): "
	if exact {
		lead = "holding table " + table + "'s metadata lock: "
	}
	return lead + strings.Join(who, "; ") + fmt.Sprintf("; end it with KILL %s", strings.Fields(who[0])[1])
}
