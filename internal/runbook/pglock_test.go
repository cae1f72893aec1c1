package runbook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/pgtest"
	"github.com/rollback-dev/rollback/internal/store"
)

var pg *pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "runbook", &pg)) }

// TestAdvisoryLockBesideLease: with a PostgreSQL store, a run whose lease
// has expired (its renewal stalled) still keeps a second run out through
// the advisory lock, and the second run says who holds it.
func TestAdvisoryLockBesideLease(t *testing.T) {
	ctx := context.Background()
	dsn, err := pg.CreateDB(ctx, fmt.Sprintf("runbook_%d", time.Now().UnixNano()%1e6))
	if err != nil {
		t.Fatal(err)
	}
	open := func() store.Store {
		s, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	sa, sb := open(), open()
	t0 := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	incA, incB := &store.Incident{Service: "svc"}, &store.Incident{Service: "svc"}
	if err := sa.CreateIncident(ctx, incA); err != nil {
		t.Fatal(err)
	}
	if err := sb.CreateIncident(ctx, incB); err != nil {
		t.Fatal(err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	a := &Executor{Store: sa, Holder: "host-a:1", LeaseTTL: time.Hour, Now: func() time.Time { return t0 }}
	done := make(chan error)
	go func() {
		done <- a.Run(ctx, incA.ID, Plan{Service: "svc", Steps: []Step{{Name: "undo", Run: func(context.Context, *StepContext) (string, error) {
			close(inside)
			<-release
			return "ok", nil
		}}}})
	}()
	<-inside
	// B's clock is two hours on: A's lease has expired as far as the
	// lease table goes.
	ranB := false
	b := &Executor{Store: sb, Holder: "host-b:2", LeaseTTL: time.Hour, Now: func() time.Time { return t0.Add(2 * time.Hour) }}
	err = b.Run(ctx, incB.ID, Plan{Service: "svc", Steps: []Step{{Name: "undo", Run: func(context.Context, *StepContext) (string, error) {
		ranB = true
		return "ok", nil
	}}}})
	var le *store.LockError
	if !errors.As(err, &le) || le.Holder != "host-a:1" || ranB {
		t.Errorf("second run with the lease expired: err %v, ran %v; want a LockError naming host-a:1", err, ranB)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Once A has finished, B runs.
	if err := b.Run(ctx, incB.ID, Plan{Service: "svc", Steps: []Step{{Name: "undo", Run: func(context.Context, *StepContext) (string, error) {
		ranB = true
		return "ok", nil
	}}}}); err != nil || !ranB {
		t.Errorf("after A: %v, ran %v", err, ranB)
	}
	// A caller that holds the service first (as 'rollback run' does before
	// it records an incident) runs under that hold, without locking twice;
	// meanwhile another executor is refused.
	unhold, err := a.Hold(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Hold(ctx, "svc"); !errors.As(err, &le) {
		t.Errorf("second hold: %v, want a LockError", err)
	}
	if err := a.Run(ctx, incA.ID, Plan{Service: "svc", Steps: []Step{{Name: "later", Run: func(context.Context, *StepContext) (string, error) {
		return "ok", nil
	}}}}); err != nil {
		t.Errorf("run under the caller's hold: %v", err)
	}
	unhold()
	if r, err := b.Hold(ctx, "svc"); err != nil {
		t.Errorf("after release: %v", err)
	} else {
		r()
	}
}
