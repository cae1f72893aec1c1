package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
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
// connection of its own, kept until unlock (or until this process dies and
// the server drops the connection). SQLite stores have only the lease: the
// file is local to one machine, and a dead local holder is detected by pid.
func (s *sqlStore) LockRun(ctx context.Context, service, holder string) (func(), error) {
	if !s.postgres {
		return func() {}, nil
	}
	key := runLockKey(service)
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("run lock: %w", err)
	}
	discard := func() {
		// Never return a connection that may hold the lock to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
	}
	if _, err := conn.ExecContext(ctx, `SELECT set_config('application_name', $1, false)`, "rollback "+holder); err != nil {
		discard()
		return nil, fmt.Errorf("run lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		discard()
		return nil, fmt.Errorf("run lock: %w", err)
	}
	if !ok {
		le := &LockError{Service: service}
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
			LIMIT 1`, key).Scan(&app, &pid, &since)
		if err == nil {
			le.Holder, le.PID = strings.TrimPrefix(app.String, "rollback "), int(pid.Int64)
			if since.Valid {
				le.Since = since.Time
			}
		} else if !errors.Is(err, sql.ErrNoRows) {
			le.Holder = "another session (" + err.Error() + ")"
		}
		discard()
		return nil, le
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, key)
		discard()
	}, nil
}
