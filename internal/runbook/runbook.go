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
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/store"
)

// Step is one unit of the runbook.
type Step struct {
	Name  string
	Title string
	// Budget is the runbook's time for the step; a step that takes longer
	// is journaled as an overrun.
	Budget time.Duration
	// Deadline is enforced: the step's context ends then and the executor
	// stops waiting for it. Zero means Budget, or DefaultDeadline.
	Deadline time.Duration
	// Soft steps (communication, feature flags) never stop a run: their
	// failure, timeout or panic is journaled as the step's failure and the
	// run goes on; 'rollback resume' tries them again.
	Soft bool
	// Background steps run beside the steps after them (communication
	// must never delay recovery) and are waited for before the next step
	// with Join, or at the end. A background step is soft.
	Background bool
	// Join waits for the background steps started before it.
	Join bool
	// Run acts; it returns the evidence to journal, or ErrSkip (wrapped
	// with the reason) when the step does not apply.
	Run func(ctx context.Context, sc *StepContext) (evidence string, err error)
}

// ErrSkip marks a step that does not apply (no database, no flag, ...).
var ErrSkip = errors.New("skipped")

// ErrDeadline is a step that did not finish within its deadline.
var ErrDeadline = errors.New("step deadline exceeded")

// ErrLeaseLost means the run could no longer renew its hold on the
// service (lease or advisory lock) and stopped at a step boundary, so it
// never acts beside another run; the incident is resumable.
var ErrLeaseLost = errors.New("lost the hold on the service")

// ErrJournal means the store did not take a journal entry within the
// executor's patience: the run stops (resumably) rather than act on
// without a record of what it did.
var ErrJournal = errors.New("journal write failed")

// PanicError is a step that panicked: the run treats it as the step's
// failure; Stack is journaled as the failure's detail.
type PanicError struct {
	Value any
	Stack string
}

func (p *PanicError) Error() string { return fmt.Sprintf("panic: %v", p.Value) }

// DefaultDeadline bounds a step the runbook gives no budget (the
// runbook's budgets: incident.Runbook).
const DefaultDeadline = 10 * time.Minute

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
	// JournalPatience is how long a journal write is retried while the
	// store is unreachable (a restart, a failover); default 30s.
	JournalPatience time.Duration

	held string       // the service Hold holds for this executor, if any
	lost atomic.Value // error: why the hold was lost
	// fence ends when the hold is lost: the step in progress is
	// cancelled, so no side effect is started once another run may hold
	// the service.
	fence context.Context
}

// StepContext gives a step its incident and at-most-once side effects.
// Its methods are safe to call from several goroutines.
type StepContext struct {
	Incident string
	Step     string
	ex       *Executor
	journal  *journal
}

// Journal key prefixes: a step's completion, and one side effect's
// intent, failure and completion (see Once).
const (
	keyStepDone = "done:step:"
	keyIntent   = "intent:"
	keyFailed   = "failed:"
	keyDone     = "done:"
)

// journal is the run's view of the incident's keyed events. Each attempt
// at a side effect journals its own intent ("intent:KEY#ATTEMPT") and, if
// it fails, its own failure ("failed:KEY#ATTEMPT"), so the store (which
// keeps the first event of a key) holds every attempt, and an effect is
// pending (interrupted) when its last attempt has neither failed nor
// succeeded.
type journal struct {
	mu      sync.Mutex
	m       map[string]store.Event
	pending map[string]bool
}

func newJournal(evs []store.Event) *journal {
	j := &journal{m: map[string]store.Event{}, pending: map[string]bool{}}
	for _, ev := range evs {
		if ev.Key != "" {
			j.put(ev)
		}
	}
	return j
}

// effectKey is the side effect an intent or failure key is about.
func effectKey(k, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(k, prefix)
	if !ok {
		return "", false
	}
	key, _, _ := strings.Cut(rest, "#")
	return key, true
}

func (j *journal) get(key string) (store.Event, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ev, ok := j.m[key]
	return ev, ok
}

func (j *journal) isPending(key string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pending[key]
}

func (j *journal) put(ev store.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.m[ev.Key] = ev
	if k, ok := effectKey(ev.Key, keyIntent); ok {
		j.pending[k] = true
	}
	if k, ok := effectKey(ev.Key, keyFailed); ok {
		j.pending[k] = false
	}
	if k, ok := effectKey(ev.Key, keyDone); ok {
		j.pending[k] = false
	}
}

// Note journals msg as a note of the step (something it did that a later
// reader must know even if the step never finishes).
func (sc *StepContext) Note(ctx context.Context, msg string) error {
	return sc.ex.append(context.WithoutCancel(ctx), store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: store.PhaseNote, Message: msg})
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
	return sc.effect(ctx, key, false, fn)
}

// Repeated is the note journaled when an interrupted convergent effect is
// performed again.
const Repeated = "started before an interruption and not confirmed; done again (it sets a state, so doing it twice is safe)"

// Converge performs a side effect that sets a state rather than adds one
// (a feature flag turned off, an alert resolved under its dedup key, an
// incident's status set): journaled like Once, and a finished effect is
// not repeated, but one that was started and never confirmed is done
// again, since leaving it undone is the worse outcome. It never returns
// Uncertain (an older journal's uncertain record of it is done again too).
func (sc *StepContext) Converge(ctx context.Context, key string, fn func() (string, error)) (string, error) {
	return sc.effect(ctx, key, true, fn)
}

func (sc *StepContext) effect(ctx context.Context, key string, converges bool, fn func() (string, error)) (string, error) {
	// A convergent effect that a journal written before Converge existed
	// calls uncertain is done again, as an interrupted one is.
	again := false
	if ev, ok := sc.journal.get(keyDone + key); ok {
		if !converges || ev.Evidence != Uncertain {
			return ev.Evidence, nil
		}
		again = true
	}
	if sc.journal.isPending(key) {
		if !converges {
			note := store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: store.PhaseNote,
				Key: keyDone + key, Evidence: Uncertain, Message: key + ": " + Uncertain}
			err := sc.ex.append(context.WithoutCancel(ctx), note)
			sc.journal.put(note)
			return Uncertain, err
		}
		again = true
	}
	// Fencing: no side effect starts once the hold is lost.
	if err := sc.ex.Lost(); err != nil {
		return "", err
	}
	if again {
		if err := sc.Note(ctx, key+": "+Repeated); err != nil {
			return "", err
		}
	}
	attempt := fmt.Sprintf("%s#%d", key, time.Now().UnixNano())
	intent := store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: store.PhaseIntent, Key: keyIntent + attempt,
		Message: "by " + sc.ex.Holder}
	if err := sc.ex.append(ctx, intent); err != nil {
		return "", err
	}
	sc.journal.put(intent)
	out, err := fn()
	// The outcome is journaled even when the step's deadline has passed:
	// it is what happened.
	jctx := context.WithoutCancel(ctx)
	if err != nil {
		// A failed attempt may be retried by a later run or step: its
		// failure is journaled under the attempt, so it is never read as
		// an interruption.
		failed := store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: store.PhaseEffectFailed, Key: keyFailed + attempt, Message: key + ": " + err.Error()}
		_ = sc.ex.append(jctx, failed)
		sc.journal.put(failed)
		return "", err
	}
	done := store.Event{Incident: sc.Incident, Time: sc.ex.now(), Step: sc.Step, Phase: store.PhaseEffect, Key: keyDone + key, Evidence: out}
	if err := sc.ex.append(jctx, done); err != nil {
		return "", err
	}
	sc.journal.put(done)
	return out, nil
}

// append journals ev, retrying while the store is unreachable for up to
// JournalPatience (each attempt bounded): a store restarting mid-run
// costs a pause, not a lost record. The store keeps the first event of a
// key, so a retried keyed write is never recorded twice.
func (e *Executor) append(ctx context.Context, ev store.Event) error {
	patience := e.JournalPatience
	if patience <= 0 {
		patience = 30 * time.Second
	}
	deadline := time.Now().Add(patience)
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := e.Store.AppendEvent(actx, ev)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%w: %s %s: %v", ErrJournal, ev.Step, ev.Phase, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s %s: %v", ErrJournal, ev.Step, ev.Phase, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
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
	var lock store.RunLock = noLock{}
	if l, ok := e.Store.(store.RunLocker); ok {
		if lock, err = l.LockRun(ctx, service, e.Holder); err != nil {
			return nil, err
		}
	}
	if _, err := e.Store.AcquireLease(ctx, service, e.Holder, ttl); err != nil {
		lock.Unlock()
		return nil, err
	}
	e.lost = atomic.Value{}
	fence, lose := context.WithCancelCause(context.Background())
	e.fence = fence
	renewCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.keep(renewCtx, service, ttl, lock, lose)
	}()
	e.held = service
	return func() {
		stop()
		wg.Wait()
		lose(nil)
		e.held = ""
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = e.Store.ReleaseLease(rctx, service, e.Holder)
		lock.Unlock()
	}, nil
}

type noLock struct{}

func (noLock) Unlock()                         {}
func (noLock) Check(ctx context.Context) error { return nil }

// keep renews the lease every TTL/6 and checks the advisory lock (taking
// it again on a new connection if the store's connection was lost). The
// hold is lost when another holder has the lease or the lock, or when no
// renewal succeeded for half the TTL: the lease (judged by the store's
// clock) then ends within the other half, so the run is stopped (lose
// cancels the step in progress) before another run can take the service.
func (e *Executor) keep(ctx context.Context, service string, ttl time.Duration, lock store.RunLock, lose context.CancelCauseFunc) {
	every := ttl / 6
	lastOK := time.Now() // when the last successful renewal was sent
	t := time.NewTicker(every)
	defer t.Stop()
	fail := func(err error) {
		e.lost.Store(err)
		lose(err)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, every)
		_, err := e.Store.AcquireLease(rctx, service, e.Holder, ttl)
		if err == nil {
			err = lock.Check(rctx)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		var le *store.LeaseError
		var lk *store.LockError
		switch {
		case err == nil:
			lastOK = sent
		case errors.As(err, &le) || errors.As(err, &lk):
			fail(fmt.Errorf("%w: %v", ErrLeaseLost, err))
			return
		case time.Since(lastOK) >= ttl/2:
			fail(fmt.Errorf("%w: no renewal for %s of the %s lease (last error: %v)", ErrLeaseLost, time.Since(lastOK).Round(time.Millisecond), ttl, err))
			return
		}
	}
}

// Holds reports whether the executor holds service (see Hold).
func (e *Executor) Holds(service string) bool { return e.held == service }

// Lost is why the hold was lost, or nil while it is held.
func (e *Executor) Lost() error {
	if err, ok := e.lost.Load().(error); ok {
		return err
	}
	return nil
}

// Run executes the plan for the incident, resuming after whatever the
// journal says is done. It holds the service throughout (see Hold) and
// checks the hold at every step boundary.
func (e *Executor) Run(ctx context.Context, incident string, p Plan) error {
	if e.held != p.Service {
		release, err := e.Hold(ctx, p.Service)
		if err != nil {
			return err
		}
		defer release()
	}
	if e.fence != nil {
		fenced, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := context.AfterFunc(e.fence, func() { cancel(context.Cause(e.fence)) })
		defer stop()
		ctx = fenced
	}

	evs, err := e.Store.Events(ctx, incident)
	if err != nil {
		return err
	}
	j := newJournal(evs)
	var bg sync.WaitGroup
	var bgErr atomic.Value // error: a background step that could not be journaled
	joinBackground := func() error {
		bg.Wait()
		if err, ok := bgErr.Load().(error); ok {
			return err
		}
		return nil
	}
	defer bg.Wait()
	for _, s := range p.Steps {
		if s.Join {
			if err := joinBackground(); err != nil {
				return err
			}
		}
		if done, ok := j.get(keyStepDone + s.Name); ok {
			e.Events.Emit(e.now(), s.Name, progress.Done, "already done: "+done.Evidence, nil)
			continue
		}
		if err := e.Lost(); err != nil {
			_ = e.append(context.WithoutCancel(ctx), store.Event{Incident: incident, Time: e.now(), Step: s.Name, Phase: store.PhaseInterrupted, Message: "not started: " + err.Error()})
			e.Events.Emit(e.now(), s.Name, progress.Failed, "", err)
			return fmt.Errorf("before step %s: %w", s.Name, err)
		}
		if ctx.Err() != nil {
			err := fmt.Errorf("interrupted: %w", context.Cause(ctx))
			_ = e.append(context.WithoutCancel(ctx), store.Event{Incident: incident, Time: e.now(), Step: s.Name, Phase: store.PhaseInterrupted, Message: "not started: " + err.Error()})
			e.Events.Emit(e.now(), s.Name, progress.Failed, "", err)
			return fmt.Errorf("before step %s: %w", s.Name, err)
		}
		if s.Background {
			bg.Add(1)
			go func() {
				defer bg.Done()
				if err := e.step(ctx, incident, s, j); errors.Is(err, ErrJournal) {
					bgErr.CompareAndSwap(nil, fmt.Errorf("step %s: %w", s.Name, err))
				}
			}()
			continue
		}
		if err := e.step(ctx, incident, s, j); err != nil && (!s.Soft || errors.Is(err, ErrJournal) || ctx.Err() != nil) {
			return fmt.Errorf("step %s: %w", s.Name, err)
		}
	}
	return joinBackground()
}

// step runs one step under its deadline, journaling it before and after.
func (e *Executor) step(ctx context.Context, incident string, s Step, j *journal) error {
	start := e.now()
	if err := e.append(ctx, store.Event{Incident: incident, Time: start, Step: s.Name, Phase: store.PhaseStarted}); err != nil {
		return err
	}
	e.Events.Emit(start, s.Name, progress.Started, "", nil)
	sc := &StepContext{Incident: incident, Step: s.Name, ex: e, journal: j}
	evidence, err := e.call(ctx, s, sc)
	end := e.now()
	jctx := context.WithoutCancel(ctx)
	switch {
	case errors.Is(err, ErrSkip):
		evidence, err = "skipped: "+strings.TrimSuffix(strings.TrimSuffix(err.Error(), ErrSkip.Error()), ": "), nil
	case err != nil && ctx.Err() != nil:
		// Stopped from outside (SIGTERM, the hold lost): not the step's
		// failure; the run is resumable and a leader resumes it.
		cause := context.Cause(ctx)
		if lost := e.Lost(); lost != nil {
			cause = lost
		}
		err = fmt.Errorf("interrupted: %w", cause)
		_ = e.append(jctx, store.Event{Incident: incident, Time: end, Step: s.Name, Phase: store.PhaseInterrupted, Message: err.Error()})
		e.Events.Emit(end, s.Name, progress.Failed, "", err)
		return err
	case err != nil:
		ev := store.Event{Incident: incident, Time: end, Step: s.Name, Phase: store.PhaseFailed, Message: err.Error()}
		var pe *PanicError
		if errors.As(err, &pe) {
			ev.Evidence = pe.Stack
		}
		_ = e.append(jctx, ev)
		e.Events.Emit(end, s.Name, progress.Failed, "", err)
		return err
	}
	if s.Budget > 0 && end.Sub(start) > s.Budget {
		_ = e.append(jctx, store.Event{Incident: incident, Time: end, Step: s.Name, Phase: store.PhaseOverrun,
			Message: fmt.Sprintf("took %s, budget %s", end.Sub(start).Round(time.Second), s.Budget)})
	}
	done := store.Event{Incident: incident, Time: end, Step: s.Name, Phase: store.PhaseDone, Key: keyStepDone + s.Name, Evidence: evidence}
	if err := e.append(jctx, done); err != nil {
		return err
	}
	j.put(done)
	e.Events.Emit(end, s.Name, progress.Done, evidence, nil)
	return nil
}

// call runs the step's body with its deadline enforced: the body's
// context ends at the deadline, and the executor stops waiting then even
// if the body does not return. A panic in the body is its error.
func (e *Executor) call(ctx context.Context, s Step, sc *StepContext) (string, error) {
	deadline := s.Deadline
	if deadline <= 0 {
		deadline = s.Budget
	}
	if deadline <= 0 {
		deadline = DefaultDeadline
	}
	sctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	type result struct {
		evidence string
		err      error
	}
	ch := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				ch <- result{err: &PanicError{Value: r, Stack: string(debug.Stack())}}
			}
		}()
		ev, err := s.Run(sctx, sc)
		ch <- result{ev, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) && !errors.Is(r.err, ErrSkip) {
			r.err = fmt.Errorf("%w (%s): %v", ErrDeadline, deadline, r.err)
		}
		return r.evidence, r.err
	case <-sctx.Done():
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("%w: still running after %s", ErrDeadline, deadline)
	}
}
