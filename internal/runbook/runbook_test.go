package runbook

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rollback/internal/store"
)

// crashingStore panics (like kill -9) instead of performing the n-th
// journal write.
type crashingStore struct {
	store.Store
	n, at int
}

type crash struct{}

func (c *crashingStore) AppendEvent(ctx context.Context, ev store.Event) (bool, error) {
	c.n++
	if c.n == c.at {
		panic(crash{})
	}
	return c.Store.AppendEvent(ctx, ev)
}

// effects counts the side effects a plan performed.
type effects struct{ slackStart, historyDelete, slackSummary atomic.Int32 }

func plan(fx *effects, crashInside func(string)) Plan {
	effect := func(name string, n *atomic.Int32) func(ctx context.Context, sc *StepContext) (string, error) {
		return func(ctx context.Context, sc *StepContext) (string, error) {
			return sc.Once(ctx, name, func() (string, error) {
				n.Add(1)
				crashInside(name) // a crash after the effect, before it is journaled
				return name + " ok", nil
			})
		}
	}
	return Plan{Service: "transaction-service", Steps: []Step{
		{Name: "declare", Title: "Declare incident and notify", Budget: BudgetDeclare, Run: effect("slack-start", &fx.slackStart)},
		{Name: "down-migrate", Title: "Database down migration", Run: effect("history-delete", &fx.historyDelete)},
		{Name: "flag-off", Title: "Feature flag off", Run: func(context.Context, *StepContext) (string, error) {
			return "", fmt.Errorf("no flag configured: %w", ErrSkip)
		}},
		{Name: "close", Title: "Communicate and close", Run: effect("slack-summary", &fx.slackSummary)},
	}}
}

func newStore(t *testing.T) store.Store {
	s, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func run(ex *Executor, inc string, p Plan) (err error, crashed bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			crashed = true
		}
	}()
	return ex.Run(context.Background(), inc, p), false
}

// TestCrashAnywhereThenResume kills the run at every journal write and
// inside every side effect, resumes it, and checks it converges with no
// side effect performed twice.
func TestCrashAnywhereThenResume(t *testing.T) {
	// A clean run makes this many journal writes: the crash points.
	total := func() int {
		s := newStore(t)
		inc := &store.Incident{Service: "transaction-service"}
		_ = s.CreateIncident(context.Background(), inc)
		cs := &crashingStore{Store: s}
		fx := &effects{}
		if err, _ := run(&Executor{Store: cs, Holder: "a"}, inc.ID, plan(fx, func(string) {})); err != nil {
			t.Fatal(err)
		}
		return cs.n
	}()
	if total < 12 {
		t.Fatalf("only %d journal writes", total)
	}
	points := []string{}
	for i := 1; i <= total; i++ {
		points = append(points, fmt.Sprintf("write %d", i))
	}
	points = append(points, "inside slack-start", "inside history-delete", "inside slack-summary")
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			s := newStore(t)
			ctx := context.Background()
			inc := &store.Incident{Service: "transaction-service"}
			if err := s.CreateIncident(ctx, inc); err != nil {
				t.Fatal(err)
			}
			fx := &effects{}
			cs := &crashingStore{Store: s}
			crashInside := func(string) {}
			if strings.HasPrefix(point, "write ") {
				fmt.Sscanf(point, "write %d", &cs.at)
			} else {
				name := strings.TrimPrefix(point, "inside ")
				crashInside = func(n string) {
					if n == name {
						panic(crash{})
					}
				}
			}
			_, crashed := run(&Executor{Store: cs, Holder: "host-1"}, inc.ID, plan(fx, crashInside))
			if !crashed {
				t.Fatal("the run did not crash where asked")
			}
			// Resume (the same machine comes back).
			if err, crashed := run(&Executor{Store: s, Holder: "host-1"}, inc.ID, plan(fx, func(string) {})); err != nil || crashed {
				t.Fatalf("resume: %v (crashed %v)", err, crashed)
			}
			for name, n := range map[string]int32{"slack-start": fx.slackStart.Load(), "history-delete": fx.historyDelete.Load(), "slack-summary": fx.slackSummary.Load()} {
				if n > 1 {
					t.Errorf("%s performed %d times", name, n)
				}
			}
			evs, _ := s.Events(ctx, inc.ID)
			done := 0
			for _, ev := range evs {
				if strings.HasPrefix(ev.Key, "done:step:") {
					done++
				}
			}
			if done != 4 {
				t.Errorf("%d of 4 steps done after resume", done)
			}
			// A third run changes nothing and performs nothing.
			before := len(evs)
			slack := fx.slackStart.Load() + fx.slackSummary.Load() + fx.historyDelete.Load()
			if err, _ := run(&Executor{Store: s, Holder: "host-1"}, inc.ID, plan(fx, func(string) {})); err != nil {
				t.Fatal(err)
			}
			after, _ := s.Events(ctx, inc.ID)
			if got := fx.slackStart.Load() + fx.slackSummary.Load() + fx.historyDelete.Load(); got != slack {
				t.Errorf("a finished run performed effects again")
			}
			for _, ev := range after[before:] {
				if ev.Phase != "started" {
					t.Errorf("a finished run journaled %+v", ev)
				}
			}
		})
	}
}

func TestOneRunPerService(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var ran atomic.Int32
	var held atomic.Int32
	release := make(chan struct{})
	for i := 0; i < 2; i++ {
		inc := &store.Incident{Service: "transaction-service"}
		if err := s.CreateIncident(ctx, inc); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int, id string) {
			defer wg.Done()
			ex := &Executor{Store: s, Holder: fmt.Sprintf("host-%d", i)}
			p := Plan{Service: "transaction-service", Steps: []Step{{Name: "undo", Run: func(context.Context, *StepContext) (string, error) {
				ran.Add(1)
				<-release
				return "ok", nil
			}}}}
			err := ex.Run(ctx, id, p)
			var le *store.LeaseError
			if errors.As(err, &le) {
				held.Add(1)
				if !strings.Contains(err.Error(), "already running") || le.Lease.Holder == ex.Holder {
					t.Errorf("lease error %v", err)
				}
				close(release)
			} else if err != nil {
				t.Error(err)
			}
		}(i, inc.ID)
	}
	wg.Wait()
	if ran.Load() != 1 || held.Load() != 1 {
		t.Errorf("ran %d, refused %d: want exactly one of each", ran.Load(), held.Load())
	}
}

func TestBudgetOverrunIsJournaled(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	inc := &store.Incident{Service: "svc"}
	_ = s.CreateIncident(ctx, inc)
	clock := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	p := Plan{Service: "svc", Steps: []Step{{Name: "undo", Budget: BudgetKube, Run: func(context.Context, *StepContext) (string, error) {
		mu.Lock()
		clock = clock.Add(4 * time.Minute)
		mu.Unlock()
		return "rolled back", nil
	}}}}
	if err := (&Executor{Store: s, Holder: "h", Now: now}).Run(ctx, inc.ID, p); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.Events(ctx, inc.ID)
	found := false
	for _, ev := range evs {
		found = found || ev.Phase == "overrun" && strings.Contains(ev.Message, "took 4m0s, budget 3m0s")
	}
	if !found {
		t.Errorf("no overrun journaled: %+v", evs)
	}
}

// TestOnceAcrossSteps: a later step asking for an effect an earlier step
// of the same run already performed gets its evidence, not a second effect.
func TestOnceAcrossSteps(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	inc := &store.Incident{Service: "svc"}
	_ = s.CreateIncident(ctx, inc)
	var n atomic.Int32
	use := func(ctx context.Context, sc *StepContext) (string, error) {
		return sc.Once(ctx, "slack-channel", func() (string, error) { n.Add(1); return "C1", nil })
	}
	p := Plan{Service: "svc", Steps: []Step{{Name: "declare", Run: use}, {Name: "close", Run: use}}}
	if err := (&Executor{Store: s, Holder: "h"}).Run(ctx, inc.ID, p); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Errorf("channel created %d times in one run", n.Load())
	}
}
