package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// TestRunLockPostgres: the advisory lock keeps a second run out even when
// the lease is gone, says who holds it, and frees itself when the holder's
// connection dies.
func TestRunLockPostgres(t *testing.T) {
	ctx := context.Background()
	dsn, err := pg.CreateDB(ctx, fmt.Sprintf("lock_%d", time.Now().UnixNano()%1e6))
	if err != nil {
		t.Fatal(err)
	}
	open := func() Store {
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open().(RunLocker), open().(RunLocker)

	unlock, err := a.LockRun(ctx, "svc", "host-a:101")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.LockRun(ctx, "svc", "host-b:202")
	var le *LockError
	if !errors.As(err, &le) || !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second lock: got %v, want a *LockError", err)
	}
	if le.Holder != "host-a:101" || le.PID <= 0 || le.Since.IsZero() || !strings.Contains(err.Error(), "host-a:101") {
		t.Errorf("lock error does not say who holds it: %+v (%v)", le, err)
	}
	// Another service is independent.
	u2, err := b.LockRun(ctx, "other-svc", "host-b:202")
	if err != nil {
		t.Fatalf("other service: %v", err)
	}
	u2.Unlock()
	unlock.Unlock()
	u3, err := b.LockRun(ctx, "svc", "host-b:202")
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	// The holder's connection dies (as when its process is killed): the
	// server drops the lock.
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var n int
	if err := admin.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'rollback host-b:202'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the holder's backend: %d, %v", n, err)
	}
	var got error
	for i := 0; i < 50; i++ {
		var u RunLock
		if u, got = a.LockRun(ctx, "svc", "host-a:101"); got == nil {
			u.Unlock()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != nil {
		t.Errorf("lock not freed after the holder's connection died: %v", got)
	}
	u3.Unlock() // unlocking on a dead connection does not panic or hang
}

func TestRunLockSQLiteIsLeaseOnly(t *testing.T) {
	s := backends(t)["sqlite"]()
	u, err := s.(RunLocker).LockRun(context.Background(), "svc", "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
}

// A run's lock connection dies (the store restarted): Check takes the lock
// again on a new connection; if another session took it meanwhile, Check
// says who.
func TestRunLockCheckRetakesOrReportsLoss(t *testing.T) {
	ctx := context.Background()
	dsn, err := pg.CreateDB(ctx, fmt.Sprintf("relock_%d", time.Now().UnixNano()%1e6))
	if err != nil {
		t.Fatal(err)
	}
	open := func() RunLocker {
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s.(RunLocker)
	}
	a, b := open(), open()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	kill := func(app string) {
		t.Helper()
		var n int
		if err := admin.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil || n != 1 {
			t.Fatalf("terminate %s: %d, %v", app, n, err)
		}
		// pg_terminate_backend only signals: the session (and its
		// advisory lock) is gone once the backend has exited.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err == nil && n == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the session of %s still there 30s after it was terminated (%d, %v)", app, n, err)
			}
		}
	}
	l, err := a.LockRun(ctx, "svc", "host-a:1")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	kill("rollback host-a:1")
	if err := l.Check(ctx); err != nil {
		t.Fatalf("check after the connection died: %v, want the lock taken again", err)
	}
	if _, err := b.LockRun(ctx, "svc", "host-b:2"); err == nil {
		t.Fatal("a second session took the lock the first one re-took")
	}
	kill("rollback host-a:1")
	other, err := b.LockRun(ctx, "svc", "host-b:2")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Unlock()
	var le *LockError
	if err := l.Check(ctx); !errors.As(err, &le) || le.Holder != "host-b:2" {
		t.Fatalf("check after another took the lock: %v, want a *LockError naming host-b:2", err)
	}
}
