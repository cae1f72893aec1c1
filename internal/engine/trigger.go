package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/store"
)

// Trigger is a request for a rollback with nobody at the keyboard: a
// firing alert, a chat command. It walks the decision flowchart from live
// facts; it runs the runbook only when Auto and the flowchart says roll
// back, else it opens a proposed incident for a person to approve.
type Trigger struct {
	Source string // alertmanager, slack, api
	// Key names what fired (Alertmanager's groupKey). Without Instances
	// it is the trigger's identity: a key already journaled on a recent
	// incident of the same release changes nothing.
	Key string
	// Instances identify each firing instance of what fired (for
	// Alertmanager each alert's fingerprint and startsAt): a trigger all
	// of whose instances were journaled on a recent incident of the
	// running release is a repeat and changes nothing; an instance never
	// seen (an alert that resolved and fires again, a new alert) or a
	// release no recent incident was about is a new trigger.
	Instances []string
	What      string // what fired, as people read it
	Severity  decide.Severity
	Auto      bool
	// Started is told the incident of a run as soon as it opens.
	Started func(string)
	// Wait is how long a trigger waits for another trigger of the same
	// service to be handled before it gives up with ErrTriggerBusy
	// (default 5s): nothing is recorded then, and the sender retries.
	Wait time.Duration
}

// ErrTriggerBusy: another trigger of the service was still being handled
// after Trigger.Wait; this one recorded nothing and should be retried.
var ErrTriggerBusy = errors.New("another trigger of this service is being handled; nothing was recorded, send it again")

// Trigger outcomes.
const (
	TriggerRan       = "ran"       // the runbook ran (Outcome says how it ended)
	TriggerProposed  = "proposed"  // a proposed incident waits for approval
	TriggerDuplicate = "duplicate" // already handled: Incident names where
	TriggerNothing   = "nothing"   // no revision to roll back to
)

// TriggerResult is what a trigger did.
type TriggerResult struct {
	Action   string           `json:"action"`
	Incident string           `json:"incident,omitempty"`
	Reason   string           `json:"reason,omitempty"`
	Decision *decide.Decision `json:"decision,omitempty"`
	Outcome  *Outcome         `json:"-"`
}

// recentIncidents is how many of a service's newest incidents a trigger
// key is looked for in.
const recentIncidents = 5

// HandleTrigger handles a trigger for the workload. Triggers of one
// service are serialised across processes by a lease of their own, so a
// storm of notifications, or two replicas, start at most one rollback.
func (e *Engine) HandleTrigger(ctx context.Context, w *Workload, t Trigger) (*TriggerResult, error) {
	// The common case in a storm: the service already has an open or
	// proposed incident. Joining it is an idempotent keyed append, so it
	// needs no lease and never waits for one.
	if dup, err := e.JoinOpen(ctx, w.Key(), t); dup != nil || err != nil {
		return dup, err
	}
	release, err := e.holdTrigger(ctx, w, t.Wait)
	if err != nil {
		return nil, err
	}
	defer release()
	p, err := PlanRollback(ctx, w, 0)
	if err != nil {
		// Nothing to roll back to (often: it was just rolled back): a
		// repeat is still a repeat, whatever runs.
		if dup, serr := e.seen(ctx, w.Key(), t, ""); dup != nil || serr != nil {
			return dup, serr
		}
		if errors.Is(err, kube.ErrNoTarget) {
			return &TriggerResult{Action: TriggerNothing, Reason: err.Error()}, nil
		}
		return nil, err
	}
	if dup, err := e.seen(ctx, w.Key(), t, versionOf(p.From)); dup != nil || err != nil {
		return dup, err
	}
	if p.NoOp {
		return &TriggerResult{Action: TriggerNothing, Reason: fmt.Sprintf("the current template already matches revision %d", p.To.Number)}, nil
	}
	r := FactsRequest{Service: w.Service, Severity: t.Severity}
	if p.From != nil {
		r.Release = versionOf(p.From)
	}
	facts, err := e.Facts(ctx, r)
	if err != nil && !errors.Is(err, ErrMetricsWithoutPrometheus) {
		return nil, err
	}
	d := decide.Decide(facts)
	res := &TriggerResult{Decision: &d}
	rolledBack, err := e.rolledBackTo(ctx, w.Key(), versionOf(p.From))
	if err != nil {
		return nil, err
	}
	if t.Auto && IsRollBack(d.Action) && rolledBack == "" {
		res.Action = TriggerRan
		res.Outcome, err = e.Run(ctx, RunRequest{Workload: w, Decide: func(context.Context, *kube.Plan) (*Decision, error) {
			return &Decision{Severity: t.Severity, Decision: d, Trigger: t.What}, nil
		}, Started: func(id string) {
			// Recorded: the next trigger finds this incident open and
			// joins it, so the trigger lease need not outlast the run.
			e.journalTrigger(ctx, id, t)
			release()
			if t.Started != nil {
				t.Started(id)
			}
		}})
		if res.Outcome != nil {
			res.Incident = res.Outcome.Incident
		}
		return res, err
	}
	why := "automatic rollback is off for this service (automation.auto)"
	switch {
	case !t.Auto:
	case rolledBack != "":
		why = "the running version is the one " + rolledBack + " rolled back to; rolling back further needs a person"
	default:
		why = "the decision flowchart says " + string(d.Action)
	}
	inc, err := e.propose(ctx, w, p, t, d, why)
	if err != nil {
		return nil, err
	}
	res.Action, res.Incident, res.Reason = TriggerProposed, inc.ID, why
	return res, nil
}

// triggerKeys are the journal keys of a trigger: one per instance, or
// its key when it has none.
func triggerKeys(t Trigger) []string {
	if len(t.Instances) == 0 {
		return []string{"trigger:" + t.Source + ":" + t.Key}
	}
	keys := make([]string, len(t.Instances))
	for i, in := range t.Instances {
		keys[i] = "trigger:" + t.Source + ":" + t.Key + "|" + in
	}
	return keys
}

// holdTrigger takes the service's trigger lease, waiting up to wait
// (default 5s) while another trigger of it is handled: a storm of
// notifications is handled one after the other, never dropped.
func (e *Engine) holdTrigger(ctx context.Context, w *Workload, wait time.Duration) (func(), error) {
	if wait <= 0 {
		wait = 5 * time.Second
	}
	ex := e.Executor()
	deadline := time.Now().Add(wait)
	pause := 50 * time.Millisecond
	for {
		release, err := ex.Hold(ctx, "trigger:"+w.LeaseKey())
		if err == nil {
			var once sync.Once
			return func() { once.Do(release) }, nil
		}
		if !errors.Is(err, store.ErrLeaseHeld) {
			return nil, err
		}
		if time.Now().Add(pause).After(deadline) {
			return nil, fmt.Errorf("%s: %w (%v)", w.Key(), ErrTriggerBusy, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// JoinOpen records the trigger on the service's open or proposed
// incident, if it has one (a duplicate of what that incident handles);
// nil when it has none.
func (e *Engine) JoinOpen(ctx context.Context, service string, t Trigger) (*TriggerResult, error) {
	incs, err := e.Store.ListIncidents(ctx, service)
	if err != nil {
		return nil, err
	}
	for i, inc := range incs {
		if i >= recentIncidents {
			break
		}
		if inc.Status == store.StatusOpen || inc.Status == store.StatusProposed {
			return e.join(ctx, &inc, t)
		}
	}
	return nil, nil
}

// join records t's instances on inc: a duplicate of what inc handles.
func (e *Engine) join(ctx context.Context, inc *store.Incident, t Trigger) (*TriggerResult, error) {
	added := false
	for _, k := range triggerKeys(t) {
		a, err := e.Store.AppendEvent(ctx, store.Event{Incident: inc.ID, Time: e.now(), Step: "trigger", Phase: store.PhaseNote, Key: k, Message: t.What})
		if err != nil {
			return nil, err
		}
		added = added || a
	}
	why := "recorded on the " + string(inc.Status) + " incident " + inc.ID
	if !added {
		why = "a repeated notification of what " + inc.ID + " already handles"
	}
	return &TriggerResult{Action: TriggerDuplicate, Incident: inc.ID, Reason: why}, nil
}

// seen finds the trigger already handled: recorded on the service's open
// or proposed incident (joining it), or every instance of it journaled on
// a recent incident about the running release (bad, or the good one it
// restored). Nil when it is a new trigger.
func (e *Engine) seen(ctx context.Context, service string, t Trigger, running string) (*TriggerResult, error) {
	incs, err := e.Store.ListIncidents(ctx, service)
	if err != nil {
		return nil, err
	}
	keys := triggerKeys(t)
	for i, inc := range incs {
		if i >= recentIncidents {
			break
		}
		if inc.Status == store.StatusOpen || inc.Status == store.StatusProposed {
			return e.join(ctx, &inc, t)
		}
		if t.Key == "" && len(t.Instances) == 0 {
			continue
		}
		if running != "" && running != inc.BadVersion && running != inc.GoodVersion {
			continue // about another release: not the one running now
		}
		evs, err := e.Store.Events(ctx, inc.ID)
		if err != nil {
			return nil, err
		}
		journaled := map[string]bool{}
		for _, ev := range evs {
			journaled[ev.Key] = true
		}
		all := true
		for _, k := range keys {
			all = all && journaled[k]
		}
		if all {
			return &TriggerResult{Action: TriggerDuplicate, Incident: inc.ID, Reason: "a repeated notification of what " + inc.ID + " handled"}, nil
		}
	}
	return nil, nil
}

// rolledBackTo names the newest closed rollback of the service that
// restored version ("" when none did): a trigger firing on the version a
// rollback restored must not roll back further on its own.
func (e *Engine) rolledBackTo(ctx context.Context, service, version string) (string, error) {
	incs, err := e.Store.ListIncidents(ctx, service)
	if err != nil {
		return "", err
	}
	for _, inc := range incs {
		if inc.Status == store.StatusClosed && inc.Decision != "" && inc.GoodVersion != "" {
			if inc.GoodVersion == version && IsRollBack(decide.Action(inc.Decision)) {
				return inc.ID, nil
			}
			return "", nil
		}
	}
	return "", nil
}

func (e *Engine) journalTrigger(ctx context.Context, id string, t Trigger) {
	for _, k := range triggerKeys(t) {
		_, _ = e.Store.AppendEvent(ctx, store.Event{Incident: id, Time: e.now(), Step: "trigger", Phase: store.PhaseNote, Key: k, Message: t.What})
	}
}

// propose opens a proposed incident: the decision and what fired, for a
// person to approve. Nothing in the cluster changes.
func (e *Engine) propose(ctx context.Context, w *Workload, p *kube.Plan, t Trigger, d decide.Decision, why string) (*store.Incident, error) {
	inc := &store.Incident{Service: w.Key(), Severity: string(t.Severity), Decision: string(d.Action), GoodVersion: versionOf(p.To),
		BadVersion: versionOf(p.From), Status: store.StatusProposed, OpenedAt: e.now()}
	reasons := append([]decide.Reason{}, d.Reasons...)
	reasons = append(reasons,
		decide.Reason{Question: "What fired?", Answer: t.What, Source: decide.Measured},
		decide.Reason{Question: "Why not automatically?", Answer: why},
		decide.Reason{Question: "Target", Answer: p.Summary(), Source: decide.Measured, Evidence: p.Reason})
	b, _ := json.Marshal(reasons)
	inc.Rationale = string(b)
	if err := e.Store.CreateIncident(ctx, inc); err != nil {
		return nil, err
	}
	e.journalTrigger(ctx, inc.ID, t)
	return inc, nil
}

// ErrNotProposed: the incident is not a proposal waiting for approval.
var ErrNotProposed = errors.New("not a proposed rollback")

// ErrStaleProposal: the running version is no longer the one a proposal
// named; approving it would roll back something nobody looked at.
var ErrStaleProposal = errors.New("the proposal is stale")

// Approve runs a proposed rollback as the approver's decision: the new
// incident's rationale says who approved which proposal, and the proposal
// is closed pointing at it. w is the proposal's workload.
func (e *Engine) Approve(ctx context.Context, id, by string, w *Workload, started func(string)) (*Outcome, error) {
	prop, err := e.Store.GetIncident(ctx, id)
	if err != nil {
		return nil, err
	}
	if prop.Status != store.StatusProposed {
		return nil, fmt.Errorf("%s is %s: %w", id, prop.Status, ErrNotProposed)
	}
	if w.Key() != prop.Service {
		return nil, fmt.Errorf("%s proposes a rollback of %s, not %s", id, prop.Service, w.Key())
	}
	// The world may have moved since the proposal: a fix deployed, the
	// release rolled back by hand. Approval is for what was proposed.
	p, err := PlanRollback(ctx, w, 0)
	if err != nil {
		return nil, err
	}
	if now, was := versionOf(p.From), prop.BadVersion; now != was || !p.NoOp && versionOf(p.To) != prop.GoodVersion {
		what := "running now is " + orNone(now) + " (proposed: rolling back " + orNone(was) + ")"
		if now == was {
			what = "the target now is " + orNone(versionOf(p.To)) + " (proposed: " + orNone(prop.GoodVersion) + ")"
		}
		return nil, fmt.Errorf("%s proposed rolling %s back from %s to %s, but %s: %w; decline it, and start a new rollback if one is still needed",
			id, prop.Service, orNone(prop.BadVersion), orNone(prop.GoodVersion), what, ErrStaleProposal)
	}
	var reasons []decide.Reason
	_ = json.Unmarshal([]byte(prop.Rationale), &reasons)
	sev, _ := decide.ParseSeverity(prop.Severity)
	dec := &Decision{Severity: sev, Decision: decide.Decision{Action: decide.Action(prop.Decision), Reasons: flowchartReasons(reasons)},
		Forced: !IsRollBack(decide.Action(prop.Decision)), ApprovedBy: by, Proposal: id}
	out, err := e.Run(ctx, RunRequest{Workload: w, Started: started, Decide: func(context.Context, *kube.Plan) (*Decision, error) { return dec, nil }})
	if out != nil && out.Incident != "" {
		_, _ = e.Store.AppendEvent(ctx, store.Event{Incident: id, Time: e.now(), Step: "approve", Phase: store.PhaseNote, Key: "approved",
			Message: "approved by " + by + ": rollback " + out.Incident})
		now := e.now()
		prop.Status, prop.ClosedAt = store.StatusClosed, &now
		if uerr := e.Store.UpdateIncident(ctx, prop); uerr != nil && err == nil {
			err = uerr
		}
	}
	return out, err
}

// Decline ends a proposal without a rollback.
func (e *Engine) Decline(ctx context.Context, id, by, reason string) error {
	prop, err := e.Store.GetIncident(ctx, id)
	if err != nil {
		return err
	}
	if prop.Status != store.StatusProposed {
		return fmt.Errorf("%s is %s: %w", id, prop.Status, ErrNotProposed)
	}
	now := e.now()
	prop.Status, prop.ClosedAt = store.StatusDeclined, &now
	if _, err := e.Store.AppendEvent(ctx, store.Event{Incident: id, Time: now, Step: "approve", Phase: store.PhaseNote, Key: "declined",
		Message: strings.TrimSpace("declined by " + by + ": " + reason)}); err != nil {
		return err
	}
	return e.Store.UpdateIncident(ctx, prop)
}

// flowchartReasons drops a proposal's own notes (what fired, why not
// automatic, the target) from its reasons: the run adds its own.
func flowchartReasons(rs []decide.Reason) []decide.Reason {
	var out []decide.Reason
	for _, r := range rs {
		switch r.Question {
		case "What fired?", "Why not automatically?", "Target":
			continue
		}
		out = append(out, r)
	}
	return out
}
