package runbook

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/store"
)

// The run's hold on its service: losing it fences the run; an outside
// stop is an interruption, not a failure.

// leaseStealer hands the lease to someone else after the first renewal.
type leaseStealer struct {
	store.Store
	renewals atomic.Int32
}

func (l *leaseStealer) AcquireLease(ctx context.Context, service, holder string, ttl time.Duration) (*store.Lease, error) {
	if l.renewals.Add(1) > 1 {
		now := time.Now()
		return nil, &store.LeaseError{Lease: store.Lease{Service: service, Holder: "thief:1", Since: now, Expires: now.Add(ttl)}}
	}
	return l.Store.AcquireLease(ctx, service, holder, ttl)
}

// A run that loses its lease is fenced: the step in progress is
// cancelled within the renewal period (not at the next boundary), no side
// effect starts after the loss, the step is journaled interrupted (not
// failed), and the incident resumes.
func TestLostLeaseCancelsTheStepInProgress(t *testing.T) {
	s := newStore(t)
	id := newIncident(t, s)
	var effects atomic.Int32
	var cancelledAfter atomic.Int64
	finished := make(chan struct{})
	p := Plan{Service: "svc", Steps: []Step{
		{Name: "undo", Run: func(ctx context.Context, sc *StepContext) (string, error) {
			defer close(finished)
			start := time.Now()
			select { // renewals every 15ms: the second is refused
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
				cancelledAfter.Store(int64(time.Since(start)))
			}
			// A side effect attempted after the loss never starts.
			_, err := sc.Once(ctx, "patch", func() (string, error) { effects.Add(1); return "patched", nil })
			return "rolled back", err
		}},
		{Name: "down-migrate", Run: func(context.Context, *StepContext) (string, error) { return "undone", nil }},
	}}
	err := (&Executor{Store: &leaseStealer{Store: s}, Holder: "h", LeaseTTL: 90 * time.Millisecond}).Run(context.Background(), id, p)
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "thief:1") {
		t.Fatalf("got %v, want ErrLeaseLost naming the new holder", err)
	}
	select { // the abandoned body finishes
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned step never returned")
	}
	if d := time.Duration(cancelledAfter.Load()); d == 0 || d > time.Second {
		t.Errorf("the step in progress was cancelled after %s, want within the lease", d)
	}
	if n := effects.Load(); n != 0 {
		t.Errorf("%d side effects after the hold was lost, want 0", n)
	}
	ph := phases(t, s, id)
	if len(ph["undo/interrupted"]) != 1 || len(ph["undo/done"]) != 0 || len(ph["undo/failed"]) != 0 || len(ph["down-migrate/started"]) != 0 {
		t.Errorf("journal: %v", ph)
	}
	p.Steps[0].Run = func(ctx context.Context, sc *StepContext) (string, error) {
		return sc.Once(ctx, "patch", func() (string, error) { effects.Add(1); return "patched", nil })
	}
	if err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if n := effects.Load(); n != 1 {
		t.Errorf("the resumed run made the side effect %d times, want 1", n)
	}
}

// A run whose context ends (SIGTERM past the shutdown grace) journals its
// step interrupted, not failed, and starts no further step.
func TestCancelledRunIsInterruptedNotFailed(t *testing.T) {
	s := newStore(t)
	id := newIncident(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	p := Plan{Service: "svc", Steps: []Step{
		{Name: "undo", Run: func(ctx context.Context, sc *StepContext) (string, error) {
			cancel()
			<-ctx.Done()
			return "", ctx.Err()
		}},
		{Name: "notify", Soft: true, Run: func(context.Context, *StepContext) (string, error) { return "posted", nil }},
	}}
	if err := (&Executor{Store: s, Holder: "h"}).Run(ctx, id, p); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	ph := phases(t, s, id)
	if len(ph["undo/interrupted"]) != 1 || len(ph["undo/failed"]) != 0 || len(ph["notify/started"]) != 0 {
		t.Errorf("journal: %v", ph)
	}
}
