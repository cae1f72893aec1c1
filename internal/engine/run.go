package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// Target is journaled when an incident starts, so resume knows what to
// finish even if the run died before its first step.
type Target struct {
	Service   string    `json:"service"` // the service key
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Kind      kube.Kind `json:"kind,omitempty"` // "" for incidents of Deployments from before kinds
	// ColorLabel is a blue/green Service's colour label.
	ColorLabel string `json:"colorLabel,omitempty"`
	Context    string `json:"context,omitempty"`
	// To and From are the objects holding the target and the abandoned
	// revision (ReplicaSets or ControllerRevisions).
	To      string `json:"to"`
	From    string `json:"from"`
	Timeout string `json:"timeout"`
	// ToImages and FromImages are the images of the target and the
	// abandoned revision (what a revert in Git writes back).
	ToImages   []string `json:"toImages,omitempty"`
	FromImages []string `json:"fromImages,omitempty"`
	// PagerDuty is the PagerDuty incident that paged on-call, whose status
	// the run sets through the REST API.
	PagerDuty string `json:"pagerduty,omitempty"`
}

// targetKey is the journal key of an incident's Target.
const targetKey = "target"

// Decision is how the rollback was decided, recorded as the incident's
// rationale.
type Decision struct {
	Severity decide.Severity
	Decision decide.Decision
	// Forced: the operator overruled a decision other than roll back.
	Forced bool
	// Detector is set when a canary detector decided (the runbook's
	// "a canary metric threshold is breached automatically").
	Detector *Breach
	// Trigger says what fired (an alert), when a trigger started it.
	Trigger string
	// ApprovedBy is the person who approved a proposed rollback, and
	// Proposal the proposed incident they approved.
	ApprovedBy, Proposal string
}

// IsRollBack reports whether an action rolls back.
func IsRollBack(a decide.Action) bool {
	return a == decide.RollBack || a == decide.RollBackWithDownMigrate
}

// RunRequest is one rollback to run.
type RunRequest struct {
	Workload   *Workload
	ToRevision int64
	Timeout    time.Duration
	PagerDuty  string
	// Resume finishes the service's open incident instead of refusing
	// with ErrOpenIncident.
	Resume bool
	// Decide walks the decision for the plan (nil: the operator decided).
	// It runs after planning, before anything changes.
	Decide func(ctx context.Context, p *kube.Plan) (*Decision, error)
	// Confirm asks before anything changes (nil: go ahead).
	Confirm func(p *kube.Plan) (bool, error)
	// Started is told the incident as soon as it is opened (a server
	// answers with it while the run goes on).
	Started func(incident string)
}

// Outcome is what a run did.
type Outcome struct {
	Incident string
	Plan     *kube.Plan
	Result   *kube.Result
	Resumed  bool
}

// ErrAborted: the operator declined the confirmation.
var ErrAborted = kube.ErrAborted

// Run rolls the workload back through the whole runbook: it takes the
// service (lease, and with PostgreSQL an advisory lock) before planning,
// refuses (or resumes) when an incident of the service is open, plans
// read-only, walks the decision, opens the incident and executes the
// journaled runbook. On error after the incident opened, Outcome.Incident
// names it for 'rollback resume'.
func (e *Engine) Run(ctx context.Context, r RunRequest) (*Outcome, error) {
	w, err := e.helmOwned(ctx, r.Workload)
	if err != nil {
		return nil, err
	}
	ex := e.Executor()
	release, err := Hold(ctx, ex, w.LeaseKey())
	if err != nil {
		return nil, err
	}
	defer release()
	// An interrupted rollback is finished, never started over: planning
	// anew from a half-rolled-out workload could pick the broken version
	// as the target.
	open, err := e.OpenIncident(ctx, w.Key())
	if err != nil {
		return nil, err
	}
	if open != nil {
		if !r.Resume {
			return nil, openIncidentError(open, w.Key())
		}
		out, err := e.resume(ctx, ex, open.ID, w)
		if out != nil {
			out.Resumed = true
		}
		return out, err
	}
	var p *kube.Plan
	err = e.Events.Run(e.now, kube.StepPlan, func() (string, error) {
		var err error
		if p, err = PlanRollback(ctx, w, r.ToRevision); err != nil {
			return "", err
		}
		return p.Summary() + "; " + p.Reason, nil
	})
	if err != nil {
		return nil, err
	}
	out := &Outcome{Plan: p, Result: &kube.Result{Plan: p, DryRun: kube.DryRunNone}}
	if p.NoOp {
		e.Events.Emit(e.now(), "undo", progress.Done, fmt.Sprintf("skipped rollback (current template already matches revision %d)", p.To.Number), nil)
		return out, nil
	}
	var dec *Decision
	if r.Decide != nil {
		if dec, err = r.Decide(ctx, p); err != nil {
			return nil, err
		}
	}
	if r.Confirm != nil {
		ok, err := r.Confirm(p)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, ErrAborted
		}
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	inc, t, err := e.StartIncident(ctx, w, p, dec, timeout, r.PagerDuty)
	if err != nil {
		return nil, err
	}
	out.Incident = inc.ID
	if r.Started != nil {
		r.Started(inc.ID)
	}
	res, err := e.execute(ctx, ex, inc, t, w)
	if res.Plan == nil {
		res.Plan = p
	}
	out.Result = res
	return out, err
}

// StartIncident creates the incident for a planned rollback and journals
// its target.
func (e *Engine) StartIncident(ctx context.Context, w *Workload, p *kube.Plan, dec *Decision, timeout time.Duration, pagerDuty string) (*store.Incident, *Target, error) {
	inc := &store.Incident{Service: w.Key(), GoodVersion: versionOf(p.To), Decision: string(decide.RollBack), OpenedAt: e.now()}
	if p.From != nil {
		inc.BadVersion = versionOf(p.From)
	}
	var reasons []decide.Reason
	switch {
	case dec == nil:
		reasons = append(reasons, decide.Reason{Question: "Who decided?", Answer: "the operator ran 'rollback run' (the flowchart was not walked: no --severity)", Source: decide.Override})
	case dec.Detector != nil:
		b := dec.Detector
		inc.Decision = string(decide.RollBack)
		reasons = append(reasons,
			decide.Reason{Question: "Who decided?", Answer: "the canary watch: a canary metric threshold was breached (the runbook's automatic trigger)", Source: decide.Measured},
			decide.Reason{Question: "Which detector?", Answer: b.Detector, Source: decide.Measured, Evidence: b.Reason})
	default:
		inc.Severity, inc.Decision = string(dec.Severity), string(dec.Decision.Action)
		reasons = append(reasons, dec.Decision.Reasons...)
		for _, n := range dec.Decision.Notes {
			reasons = append(reasons, decide.Reason{Question: "Note", Answer: n})
		}
		if dec.Forced && !IsRollBack(dec.Decision.Action) {
			inc.Decision = string(decide.RollBack)
			reasons = append(reasons, decide.Reason{Question: "Who decided?", Answer: fmt.Sprintf("the operator overruled the flowchart's %s with --force", dec.Decision.Action), Source: decide.Override})
		}
	}
	if dec != nil && dec.Trigger != "" {
		reasons = append(reasons, decide.Reason{Question: "What fired?", Answer: dec.Trigger, Source: decide.Measured})
	}
	if dec != nil && dec.ApprovedBy != "" {
		reasons = append(reasons, decide.Reason{Question: "Who decided?", Answer: "approved by " + dec.ApprovedBy, Source: decide.Override, Evidence: "proposal " + dec.Proposal})
	}
	reasons = append(reasons, decide.Reason{Question: "Target", Answer: p.Summary(), Source: decide.Measured, Evidence: p.Reason})
	b, _ := json.Marshal(reasons)
	inc.Rationale = string(b)
	if err := e.Store.CreateIncident(ctx, inc); err != nil {
		return nil, nil, err
	}
	t := &Target{Service: w.Key(), Namespace: w.Target.Namespace, Name: w.Target.Name, Kind: w.Target.Of(), ColorLabel: w.Target.ColorLabel, Context: w.Context,
		To: p.To.Object, Timeout: timeout.String(), PagerDuty: pagerDuty, ToImages: p.To.Images}
	if p.From != nil {
		t.From, t.FromImages = p.From.Object, p.From.Images
	}
	b, _ = json.Marshal(t)
	if _, err := e.Store.AppendEvent(ctx, store.Event{Incident: inc.ID, Time: e.now(), Step: "run", Phase: store.PhaseNote, Key: targetKey, Evidence: string(b)}); err != nil {
		return nil, nil, err
	}
	return inc, t, nil
}

// versionOf is a revision's version: its first image's tag, or for a
// colour without images (a load balancer's target group) its name.
func versionOf(r *kube.Revision) string {
	if r == nil {
		return ""
	}
	if len(r.Images) == 0 {
		return r.Colour
	}
	return image.VersionOf(r.Images[0])
}

// execute runs (or resumes) the incident's runbook with ex, which holds
// the service.
func (e *Engine) execute(ctx context.Context, ex *runbook.Executor, inc *store.Incident, t *Target, w *Workload) (*kube.Result, error) {
	res := &kube.Result{}
	return res, ex.Run(ctx, inc.ID, e.plan(inc, t, w, res))
}

// ErrNoTarget: the incident has no recorded target (not started by a run).
var ErrNoTarget = errors.New("the incident has no recorded target; it was not started by 'rollback run'")

// Resume finishes an incident's run where its journal stopped, holding the
// service.
func (e *Engine) Resume(ctx context.Context, id string) (*Outcome, error) {
	if w, err := e.wideOf(ctx, id); err != nil || w != nil {
		if err != nil {
			return nil, err
		}
		wo, err := e.resumeWide(ctx, w)
		if wo == nil {
			return nil, err
		}
		return &Outcome{Incident: wo.Incident, Resumed: true, Result: &kube.Result{}}, err
	}
	return e.resume(ctx, e.Executor(), id, nil)
}

// resume finishes incident id with ex (which takes the service unless it
// holds it already). w is the workload when the caller resolved it; else
// it is rebuilt from the journaled target.
func (e *Engine) resume(ctx context.Context, ex *runbook.Executor, id string, w *Workload) (*Outcome, error) {
	inc, err := e.Store.GetIncident(ctx, id)
	if err != nil {
		return nil, err
	}
	t, err := e.target(ctx, id)
	if err != nil {
		return nil, err
	}
	if w == nil {
		if e.Client == nil {
			return nil, errors.New("resume: no Kubernetes client")
		}
		cs, err := e.Client(t.Context)
		if err != nil && t.Kind != kube.KindLoadBalancer { // a load balancer needs no cluster
			return nil, err
		}
		w = &Workload{Service: serviceOf(t), Target: kube.Target{Namespace: t.Namespace, Name: t.Name, Kind: t.Kind, ColorLabel: t.ColorLabel}, Context: t.Context, Client: cs}
		if err := e.Attach(ctx, w); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
	}
	release, err := Hold(ctx, ex, w.LeaseKey())
	if err != nil {
		return nil, err
	}
	defer release()
	res, err := e.execute(ctx, ex, inc, t, w)
	return &Outcome{Incident: inc.ID, Plan: res.Plan, Result: res}, err
}

// serviceOf is the configured service name of a target ("" for a key
// such as NAMESPACE/KIND/NAME).
func serviceOf(t *Target) string {
	if strings.Contains(t.Service, "/") {
		return ""
	}
	return t.Service
}

// target reads an incident's journaled Target.
func (e *Engine) target(ctx context.Context, id string) (*Target, error) {
	evs, err := e.Store.Events(ctx, id)
	if err != nil {
		return nil, err
	}
	var t Target
	for _, ev := range evs {
		if ev.Key == targetKey {
			_ = json.Unmarshal([]byte(ev.Evidence), &t)
		}
	}
	if t.Name == "" {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNoTarget)
	}
	return &t, nil
}

// DryRun plans and, with dry client or server, sends nothing or lets the
// API server check the undo without storing it.
func (e *Engine) DryRun(ctx context.Context, w *Workload, toRevision int64, dry kube.DryRun, timeout time.Duration) (*kube.Result, error) {
	return kube.Rollback(ctx, w.Client, w.Target, kube.RollbackOptions{ToRevision: toRevision, DryRun: dry, Timeout: timeout, Events: e.Events, Now: e.Now})
}
