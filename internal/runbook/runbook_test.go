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

	"github.com/rollback-dev/rollback/internal/store"
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
		{Name: "declare", Title: "Declare incident and notify", Budget: 2 * time.Minute, Run: effect("slack-start", &fx.slackStart)},
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
	err = ex.Run(context.Background(), inc, p)
	// A crash inside a step's body is recovered by the executor as that
	// step's failure; here it stands for the process dying there.
	var pe *PanicError
	if errors.As(err, &pe) {
		if _, ok := pe.Value.(crash); ok {
			return err, true
		}
	}
	return err, false
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
	p := Plan{Service: "svc", Steps: []Step{{Name: "undo", Budget: 3 * time.Minute, Run: func(context.Context, *StepContext) (string, error) {
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

func newIncident(t *testing.T, s store.Store) string {
	t.Helper()
	inc := &store.Incident{Service: "svc"}
	if err := s.CreateIncident(context.Background(), inc); err != nil {
		t.Fatal(err)
	}
	return inc.ID
}

// journalEvents appends evs to the store, timed now: a journal an earlier
// run left.
func journalEvents(t *testing.T, s store.Store, evs ...store.Event) {
	t.Helper()
	for _, ev := range evs {
		ev.Time = time.Now()
		if _, err := s.AppendEvent(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

func phases(t *testing.T, s store.Store, id string) map[string][]store.Event {
	t.Helper()
	evs, err := s.Events(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]store.Event{}
	for _, ev := range evs {
		out[ev.Step+"/"+string(ev.Phase)] = append(out[ev.Step+"/"+string(ev.Phase)], ev)
	}
	return out
}

// A panic inside a step is that step's failure, with the stack journaled;
// the run stops as for an error and resumes afterwards.
func TestPanicIsAStepFailure(t *testing.T) {
	s := newStore(t)
	id := newIncident(t, s)
	boom := true
	p := Plan{Service: "svc", Steps: []Step{{Name: "undo", Run: func(context.Context, *StepContext) (string, error) {
		if boom {
			var m map[string]int
			m["x"] = 1 // a nil-map write: a runtime panic
		}
		return "rolled back", nil
	}}, {Name: "after", Run: func(context.Context, *StepContext) (string, error) { return "ok", nil }}}}
	err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p)
	var pe *PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "step undo: panic: assignment to entry in nil map") {
		t.Fatalf("got %v, want the step's panic as its error", err)
	}
	ph := phases(t, s, id)
	if f := ph["undo/failed"]; len(f) != 1 || !strings.Contains(f[0].Evidence, "runtime/debug.Stack") && !strings.Contains(f[0].Evidence, "goroutine") {
		t.Errorf("failure journaled without its stack: %+v", f)
	}
	if len(ph["after/started"]) != 0 {
		t.Error("the run went on after a panicking hard step")
	}
	boom = false
	if err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p); err != nil {
		t.Fatalf("resume after the panic: %v", err)
	}
	if ph := phases(t, s, id); len(ph["undo/done"]) != 1 || len(ph["after/done"]) != 1 {
		t.Errorf("resume did not finish: %v", ph)
	}
}

// A step that ignores its context is abandoned at its deadline; a soft
// one's failure is evidence and the run goes on.
func TestDeadlineEnforcedAndSoftStepsNeverStop(t *testing.T) {
	s := newStore(t)
	id := newIncident(t, s)
	hang := make(chan struct{})
	defer close(hang)
	p := Plan{Service: "svc", Steps: []Step{
		{Name: "declare", Soft: true, Deadline: 50 * time.Millisecond, Run: func(context.Context, *StepContext) (string, error) {
			<-hang // ignores its context, like a client without a timeout
			return "posted", nil
		}},
		{Name: "undo", Run: func(context.Context, *StepContext) (string, error) { return "rolled back", nil }},
		{Name: "flag-off", Soft: true, Run: func(context.Context, *StepContext) (string, error) {
			return "", errors.New("HTTP 500 from flags.example")
		}},
		{Name: "block", Deadline: 50 * time.Millisecond, Run: func(ctx context.Context, _ *StepContext) (string, error) {
			<-ctx.Done()
			return "", ctx.Err()
		}},
	}}
	start := time.Now()
	err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p)
	if !errors.Is(err, ErrDeadline) || !strings.Contains(err.Error(), "step block") {
		t.Fatalf("got %v, want the hard step's deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the run waited %s on steps past their deadlines", took)
	}
	ph := phases(t, s, id)
	if len(ph["declare/failed"]) != 1 || !strings.Contains(ph["declare/failed"][0].Message, "still running after 50ms") {
		t.Errorf("declare: %+v", ph["declare/failed"])
	}
	if len(ph["undo/done"]) != 1 || len(ph["flag-off/failed"]) != 1 || len(ph["block/failed"]) != 1 {
		t.Errorf("journal: %v", ph)
	}
}

// A background step runs beside the steps after it: a slow notification
// does not delay the undo, and a Join step waits for it.
func TestBackgroundStepRunsBesideRecovery(t *testing.T) {
	s := newStore(t)
	id := newIncident(t, s)
	release := make(chan struct{})
	var order []string
	var mu sync.Mutex
	note := func(x string) { mu.Lock(); order = append(order, x); mu.Unlock() }
	p := Plan{Service: "svc", Steps: []Step{
		{Name: "declare", Background: true, Soft: true, Run: func(context.Context, *StepContext) (string, error) {
			<-release
			note("declare")
			return "posted", nil
		}},
		{Name: "undo", Run: func(context.Context, *StepContext) (string, error) {
			note("undo")
			close(release)
			return "rolled back", nil
		}},
		{Name: "close", Join: true, Run: func(context.Context, *StepContext) (string, error) {
			note("close")
			return "closed", nil
		}},
	}}
	if err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ","); got != "undo,declare,close" {
		t.Errorf("order %s, want undo,declare,close", got)
	}
}

// A failed side effect is not an interruption: the next step asking for
// it tries again and nothing says "uncertain".
func TestFailedEffectIsRetriedNotUncertain(t *testing.T) {
	s := newStore(t)
	id := newIncident(t, s)
	tries := 0
	use := func(ctx context.Context, sc *StepContext) (string, error) {
		return sc.Once(ctx, "slack-channel", func() (string, error) {
			tries++
			if tries == 1 {
				return "", errors.New("HTTP 500")
			}
			return "C1", nil
		})
	}
	p := Plan{Service: "svc", Steps: []Step{{Name: "declare", Soft: true, Run: use}, {Name: "close", Run: use}}}
	if err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.Events(context.Background(), id)
	for _, ev := range evs {
		if strings.Contains(ev.Evidence+ev.Message, "uncertain") {
			t.Errorf("journaled %+v after a plain failure", ev)
		}
	}
	if tries != 2 {
		t.Errorf("%d tries, want 2", tries)
	}
}

// A failure journaled by one run is read by the next (resume): the effect
// is tried again, not reported uncertain; and an attempt interrupted after
// a failed one is still seen as interrupted.
func TestFailedEffectAcrossRuns(t *testing.T) {
	s := newStore(t)
	id := newIncident(t, s)
	tries := 0
	fail := true
	p := Plan{Service: "svc", Steps: []Step{{Name: "declare", Soft: true, Run: func(ctx context.Context, sc *StepContext) (string, error) {
		return sc.Once(ctx, "slack-start", func() (string, error) {
			tries++
			if fail {
				return "", errors.New("HTTP 500")
			}
			return "posted", nil
		})
	}}}}
	if err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p); err != nil {
		t.Fatal(err)
	}
	fail = false
	if err := (&Executor{Store: s, Holder: "h"}).Run(context.Background(), id, p); err != nil {
		t.Fatal(err)
	}
	ph := phases(t, s, id)
	if tries != 2 || len(ph["declare/done"]) != 1 || ph["declare/done"][0].Evidence != "posted" {
		t.Fatalf("tries %d, journal %v: want the resumed run to try again and post", tries, ph)
	}
	if len(ph["declare/effect-failed"]) != 1 || len(ph["declare/intent"]) != 2 {
		t.Errorf("every attempt is journaled: %v", ph)
	}

	// failed, then a second attempt interrupted (intent, no outcome).
	id2 := newIncident(t, s)
	ctx := context.Background()
	journalEvents(t, s,
		store.Event{Incident: id2, Step: "declare", Phase: "intent", Key: "intent:slack-start#1"},
		store.Event{Incident: id2, Step: "declare", Phase: "effect-failed", Key: "failed:slack-start#1"},
		store.Event{Incident: id2, Step: "declare", Phase: "intent", Key: "intent:slack-start#2"},
	)
	tries = 0
	if err := (&Executor{Store: s, Holder: "h"}).Run(ctx, id2, p); err != nil {
		t.Fatal(err)
	}
	if tries != 0 {
		t.Errorf("an interrupted attempt was repeated (%d tries)", tries)
	}
}

// An effect that converges (a flag turned off) and was interrupted
// between its intent and its outcome is done again on resume, with a
// note saying so; once confirmed it is not done a third time. An
// at-most-once effect interrupted the same way is not repeated.
func TestInterruptedConvergentEffectIsDoneAgain(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	id := newIncident(t, s)
	journalEvents(t, s,
		store.Event{Incident: id, Step: "flag", Phase: "intent", Key: "intent:flag-off#1"},
		store.Event{Incident: id, Step: "flag", Phase: "intent", Key: "intent:slack-summary#1"},
	)
	flagOffs, posts := 0, 0
	p := Plan{Service: "svc", Steps: []Step{{Name: "flag", Run: func(ctx context.Context, sc *StepContext) (string, error) {
		ev, err := sc.Converge(ctx, "flag-off", func() (string, error) { flagOffs++; return "off", nil })
		if err != nil {
			return "", err
		}
		post, err := sc.Once(ctx, "slack-summary", func() (string, error) { posts++; return "posted", nil })
		return ev + "; " + post, err
	}}}}
	if err := (&Executor{Store: s, Holder: "h"}).Run(ctx, id, p); err != nil {
		t.Fatal(err)
	}
	if flagOffs != 1 || posts != 0 {
		t.Errorf("flag turned off %d times, summary posted %d times; want the flag once more and no post", flagOffs, posts)
	}
	ph := phases(t, s, id)
	if d := ph["flag/done"]; len(d) != 1 || !strings.HasPrefix(d[0].Evidence, "off; "+Uncertain) {
		t.Errorf("step evidence: %v", d)
	}
	repeated := false
	for _, n := range ph["flag/note"] {
		repeated = repeated || n.Message == "flag-off: "+Repeated
	}
	if !repeated {
		t.Errorf("no note that the flag was turned off again: %v", ph["flag/note"])
	}
	// A flag-off confirmed before the interruption is not done again.
	id2 := newIncident(t, s)
	journalEvents(t, s,
		store.Event{Incident: id2, Step: "flag", Phase: "intent", Key: "intent:flag-off#1"},
		store.Event{Incident: id2, Step: "flag", Phase: "effect", Key: "done:flag-off", Evidence: "off"},
		store.Event{Incident: id2, Step: "flag", Phase: "effect", Key: "done:slack-summary", Evidence: "posted"},
	)
	flagOffs = 0
	if err := (&Executor{Store: s, Holder: "h"}).Run(ctx, id2, p); err != nil {
		t.Fatal(err)
	}
	if flagOffs != 0 {
		t.Errorf("a confirmed flag-off was done again (%d)", flagOffs)
	}
	// A journal from before Converge called the interrupted flag-off
	// uncertain: it is done again too.
	id3 := newIncident(t, s)
	journalEvents(t, s,
		store.Event{Incident: id3, Step: "flag", Phase: "intent", Key: "intent:flag-off#1"},
		store.Event{Incident: id3, Step: "flag", Phase: "note", Key: "done:flag-off", Evidence: Uncertain},
		store.Event{Incident: id3, Step: "flag", Phase: "effect", Key: "done:slack-summary", Evidence: "posted"},
	)
	if err := (&Executor{Store: s, Holder: "h"}).Run(ctx, id3, p); err != nil {
		t.Fatal(err)
	}
	if d := phases(t, s, id3)["flag/done"]; flagOffs != 1 || len(d) != 1 || d[0].Evidence != "off; posted" {
		t.Errorf("an old journal's uncertain flag-off: done %d times, step evidence %v; want once more, off", flagOffs, d)
	}
}

// outageStore refuses journal writes while down is set, like a store
// that restarts mid-run.
type outageStore struct {
	store.Store
	down atomic.Bool
}

func (o *outageStore) AppendEvent(ctx context.Context, ev store.Event) (bool, error) {
	if o.down.Load() {
		return false, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
	}
	return o.Store.AppendEvent(ctx, ev)
}

// A store outage shorter than the executor's patience costs a pause, not
// a record: the background step's result is journaled after the store is
// back. A longer one stops the run (resumably) instead of closing an
// incident whose journal misses a step.
func TestJournalSurvivesStoreOutage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outage  time.Duration
		wantErr bool
	}{{"short outage", 300 * time.Millisecond, false}, {"outage past patience", 5 * time.Second, true}} {
		t.Run(tc.name, func(t *testing.T) {
			base := newStore(t)
			s := &outageStore{Store: base}
			id := newIncident(t, base)
			p := Plan{Service: "svc", Steps: []Step{
				{Name: "declare", Background: true, Soft: true, Run: func(context.Context, *StepContext) (string, error) {
					s.down.Store(true)
					time.AfterFunc(tc.outage, func() { s.down.Store(false) })
					return "posted", nil
				}},
				{Name: "close", Join: true, Run: func(context.Context, *StepContext) (string, error) { return "closed", nil }},
			}}
			err := (&Executor{Store: s, Holder: "h", JournalPatience: time.Second}).Run(context.Background(), id, p)
			ph := phases(t, base, id)
			if tc.wantErr {
				if !errors.Is(err, ErrJournal) || len(ph["close/started"]) != 0 {
					t.Fatalf("got %v, close started %d times; want the run stopped before close", err, len(ph["close/started"]))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ph["declare/done"]) != 1 || len(ph["close/done"]) != 1 {
				t.Errorf("journal after the outage: %v", ph)
			}
		})
	}
}
