package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"
)

var _ RunLocker = (*sqlStore)(nil)

// runLockKey is the advisory lock key of a service's runs: 64 bits of
// FNV-1a over a name space and the service, so other applications' keys
// are unlikely to collide with it.
func runLockKey(service string) int64 {
	h := fnv.New64a()
	h.Write([]byte("rollback/run\x00" + service))
	return int64(h.Sum64())
}

// LockRun takes PostgreSQL's session advisory lock for the service on a
// connection of its own, kept until Unlock (or until this process dies and
// the server drops the connection). SQLite stores have only the lease: the
// file is local to one machine, and a dead local holder is detected by pid.
func (s *sqlStore) LockRun(ctx context.Context, service, holder string) (RunLock, error) {
	if !s.postgres {
		return nopLock{}, nil
	}
	l := &pgRunLock{s: s, service: service, holder: holder, key: runLockKey(service)}
	if err := l.take(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

type nopLock struct{}

func (nopLock) Check(context.Context) error { return nil }
func (nopLock) Unlock()                     {}

// pgRunLock is a session advisory lock on a dedicated connection.
type pgRunLock struct {
	s               *sqlStore
	service, holder string
	key             int64
	mu              sync.Mutex
	conn            *sql.Conn
}

// discard closes a connection that may hold the lock without returning
// it to the pool.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

func (l *pgRunLock) take(ctx context.Context) error {
	conn, err := l.s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("run lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT set_config('application_name', $1, false)`, "rollback "+l.holder); err != nil {
		discard(conn)
		return fmt.Errorf("run lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&ok); err != nil {
		discard(conn)
		return fmt.Errorf("run lock: %w", err)
	}
	if !ok {
		le := &LockError{Service: l.service}
		var app sql.NullString
		var pid sql.NullInt64
		var since sql.NullTime
		// An advisory lock on a bigint key shows as classid = high 32 bits,
		// objid = low 32 bits, objsubid = 1.
		err := conn.QueryRowContext(ctx, `SELECT a.application_name, a.pid, a.backend_start
			FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
			  AND l.classid = (($1::bigint >> 32) & 4294967295)::bigint::oid
			  AND l.objid = ($1::bigint & 4294967295)::bigint::oid
			LIMIT 1`, l.key).Scan(&app, &pid, &since)
		if err == nil {
			le.Holder, le.PID = strings.TrimPrefix(app.String, "rollback "), int(pid.Int64)
			if since.Valid {
				le.Since = since.Time
			}
		} else if !errors.Is(err, sql.ErrNoRows) {
			le.Holder = "another session (" + err.Error() + ")"
		}
		discard(conn)
		return le
	}
	l.mu.Lock()
	l.conn = conn
	l.mu.Unlock()
	return nil
}

// Check implements RunLock: the lock's connection answers and holds the
// lock, or the lock is taken again on a new connection.
func (l *pgRunLock) Check(ctx context.Context) error {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn != nil {
		var held bool
		err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND pid = pg_backend_pid() AND objsubid = 1
			AND classid = (($1::bigint >> 32) & 4294967295)::bigint::oid
			AND objid = ($1::bigint & 4294967295)::bigint::oid)`, l.key).Scan(&held)
		if err == nil && held {
			return nil
		}
		discard(conn)
		l.mu.Lock()
		l.conn = nil
		l.mu.Unlock()
	}
	return l.take(ctx)
}

// Unlock implements RunLock.
func (l *pgRunLock) Unlock() {
	l.mu.Lock()
	conn := l.conn
	l.conn = nil
	l.mu.Unlock()
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, l.key)
	discard(conn)
}
