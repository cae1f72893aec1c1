// Package runbook runs an ordered plan of steps, each with its time budget
// from the runbook, journaling every step before and after it acts in the
// store, so a run killed at any point resumes without repeating a finished
// step or a recorded side effect. One run per service at a time: the
// executor holds the service's lease in the store for the whole run (and,
// with PostgreSQL, a session advisory lock beside it).
package runbook

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"rollback/internal/progress"
	"rollback/internal/store"
)

// Step is one unit of the runbook.
type Step struct {
	Name   string
	Title  string
	Budget time.Duration
	// Run acts; it returns the evidence to journal, or ErrSkip (wrapped
	// with the reason) when the step does not apply.
	Run func(ctx context.Context, sc *StepContext) (evidence string, err error)
}

// ErrSkip marks a step that does not apply (no database, no flag, ...).
var ErrSkip = errors.New("skipped")

// Budgets from the runbook.
const (
	BudgetDeclare = 2 * time.Minute // Step 1: declare and notify
	BudgetKube    = 3 * time.Minute // Step 2: Kubernetes rollback
	BudgetVerify  = 5 * time.Minute // Step 4: recovery verified within 5 minutes
)

// Plan is the ordered steps of one run.
type Plan struct {
	Service string
	Steps   []Step
}

// Executor runs plans.
type Executor struct {
	Store    store.Store
	Holder   string        // who runs (host/user/pid), shown to a second run
	LeaseTTL time.Duration // default 1m, renewed every TTL/3
	Now      func() time.Time
	Events   progress.Func

	held string // the service Hold holds for this executor, if any
}

// StepContext gives a step its incident and at-most-once side effects.
type StepContext struct {
	Incident string
	Step     string
	ex       *Executor
	journal  map[string]store.Event
}

// Uncertain is the evidence of a side effect that was started before an
// interruption and not recorded as finished: it is not repeated.
const Uncertain = "uncertain: started before an interruption and not confirmed; not repeated, check by hand"

// Once performs a side effect at most once per incident: it journals the
// intent, runs fn, and journals the result under key. On resume a finished
// effect returns its recorded evidence; an effect that was started but not
// recorded is not repeated (a duplicate Slack post or history delete is
// worse than a missing one) and returns Uncertain, journaled as a note.
func (sc *StepContext) Once(ctx context.Context, key string, fn func() (string, error)) (string, error) {
	if ev, ok := sc.journal["done:"+key]; ok {
		return ev.Evidence, nil
	}
	if _, ok := sc.journal["intent:"+key]; ok {
		note := store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: "note",
			Key: "done:" + key, Evidence: Uncertain, Message: key + ": " + Uncertain}
		_, err := sc.ex.Store.AppendEvent(ctx, note)
		sc.journal[note.Key] = note
		return Uncertain, err
	}
	intent := store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: "intent", Key: "intent:" + key}
	if _, err := sc.ex.Store.AppendEvent(ctx, intent); err != nil {
		return "", err
	}
	sc.journal[intent.Key] = intent
	out, err := fn()
	if err != nil {
		// A failed attempt may be retried by a later run: forget the intent.
		_, _ = sc.ex.Store.AppendEvent(ctx, store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: "effect-failed", Message: key + ": " + err.Error()})
		return "", err
	}
	done := store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: "effect", Key: "done:" + key, Evidence: out}
	if _, err := sc.ex.Store.AppendEvent(ctx, done); err != nil {
		return "", err
	}
	sc.journal[done.Key] = done
	return out, nil
}

func (e *Executor) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Hold takes the service for this executor's holder: with PostgreSQL a
// session advisory lock first (the server drops it when the holder's
// connection dies, and it holds even if a lease renewal stalls past the
// TTL), then the store's lease, renewed every TTL/3 until release. Run
// holds the service itself unless the caller already does, as a caller
// does that must not record anything while another run has the service.
func (e *Executor) Hold(ctx context.Context, service string) (release func(), err error) {
	ttl := e.LeaseTTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	unlock := func() {}
	if l, ok := e.Store.(store.RunLocker); ok {
		if unlock, err = l.LockRun(ctx, service, e.Holder); err != nil {
			return nil, err
		}
	}
	if _, err := e.Store.AcquireLease(ctx, service, e.Holder, ttl, e.now()); err != nil {
		unlock()
		return nil, err
	}
	renewCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-t.C:
				_, _ = e.Store.AcquireLease(renewCtx, service, e.Holder, ttl, e.now())
			}
		}
	}()
	e.held = service
	return func() {
		stop()
		wg.Wait()
		e.held = ""
		_ = e.Store.ReleaseLease(context.WithoutCancel(ctx), service, e.Holder)
		unlock()
	}, nil
}

// Run executes the plan for the incident, resuming after whatever the
// journal says is done. It holds the service throughout (see Hold).
func (e *Executor) Run(ctx context.Context, incident string, p Plan) error {
	if e.held != p.Service {
		release, err := e.Hold(ctx, p.Service)
		if err != nil {
			return err
		}
		defer release()
	}

	evs, err := e.Store.Events(ctx, incident)
	if err != nil {
		return err
	}
	journal := map[string]store.Event{}
	for _, ev := range evs {
		if ev.Key != "" {
			journal[ev.Key] = ev
		}
	}
	for _, s := range p.Steps {
		if done, ok := journal["done:step:"+s.Name]; ok {
			e.Events.Emit(e.now(), s.Name, progress.Done, "already done: "+done.Evidence, nil)
			continue
		}
		start := e.now()
		if _, err := e.Store.AppendEvent(ctx, store.Event{Incident: incident, Time: start, Step: s.Name, Phase: "started"}); err != nil {
			return err
		}
		e.Events.Emit(start, s.Name, progress.Started, "", nil)
		sc := &StepContext{Incident: incident, Step: s.Name, ex: e, journal: journal}
		evidence, err := s.Run(ctx, sc)
		end := e.now()
		switch {
		case errors.Is(err, ErrSkip):
			evidence, err = "skipped: "+strings.TrimSuffix(strings.TrimSuffix(err.Error(), ErrSkip.Error()), ": "), nil
		case err != nil:
			_, _ = e.Store.AppendEvent(ctx, store.Event{Incident: incident, Time: end, Step: s.Name, Phase: "failed", Message: err.Error()})
			e.Events.Emit(end, s.Name, progress.Failed, "", err)
			return fmt.Errorf("step %s: %w", s.Name, err)
		}
		if s.Budget > 0 && end.Sub(start) > s.Budget {
			_, _ = e.Store.AppendEvent(ctx, store.Event{Incident: incident, Time: end, Step: s.Name, Phase: "overrun",
				Message: fmt.Sprintf("took %s, budget %s", end.Sub(start).Round(time.Second), s.Budget)})
		}
		if _, err := e.Store.AppendEvent(ctx, store.Event{Incident: incident, Time: end, Step: s.Name, Phase: "done", Key: "done:step:" + s.Name, Evidence: evidence}); err != nil {
			return err
		}
		journal["done:step:"+s.Name] = store.Event{Evidence: evidence}
		e.Events.Emit(end, s.Name, progress.Done, evidence, nil)
	}
	return nil
}
