package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/flags"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/notify"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/snapstore"
	"github.com/rollback-dev/rollback/internal/store"
	"github.com/rollback-dev/rollback/internal/verify"
)

// Step is one step of the runbook: its definition (name, title,
// checklist item, budget and place in the order: incident.Runbook, the one
// table every part of rollback reads) and how the engine runs it.
type Step struct {
	incident.Def
	body
}

// body is how the engine runs a step: beside the others or not, its
// enforced deadline, whether it applies to a service, and what it does.
type body struct {
	// Soft, Background and Join: see runbook.Step.
	Soft, Background, Join bool
	// Deadline is the enforced deadline for the service (nil: the budget,
	// else runbook.DefaultDeadline).
	Deadline func(svc *config.Service, timeout time.Duration) time.Duration
	// Applies says what the step will do for the service, or why it is
	// skipped ("skipped: ..."); nil means it always acts.
	Applies func(svc *config.Service) string
	// Why says why the step is where it is relative to the Kubernetes
	// undo (what traffic waits for), for 'rollback plan'.
	Why string
	Run func(ctx context.Context, r *execution, sc *runbook.StepContext) (string, error)
}

// execution is one incident's run: what the step bodies work on.
type execution struct {
	e       *Engine
	svc     *config.Service
	inc     *store.Incident
	t       *Target
	w       *Workload
	ninc    notify.Incident
	timeout time.Duration
	res     *kube.Result
}

// bodies are the engine's steps by name.
var bodies = map[string]body{
	incident.StepDeclare: {Background: true, Soft: true, Deadline: notifyDeadline, Applies: notifyApplies, Run: declare,
		Why: "beside the undo, never before it: a slow notifier delays nothing"},
	incident.StepSnapshot: {Applies: dbApplies, Run: snapshot,
		Why: "after the undo: only the down migration needs it"},
	incident.StepGitOps: {Run: pauseGitOps, Why: "before the undo: a running reconciler would re-apply the broken version",
		Applies:  func(*config.Service) string { return "when Argo CD or Flux applies the workload" },
		Deadline: func(*config.Service, time.Duration) time.Duration { return time.Minute }},
	incident.StepKube: {Run: kubeUndo, Why: "traffic goes back to the good version here",
		Deadline: func(_ *config.Service, timeout time.Duration) time.Duration {
			return max(incident.BudgetKube, timeout+30*time.Second)
		}},
	incident.StepBlock: {Run: block, Why: "after the undo: nothing may deploy the broken version again",
		Deadline: func(*config.Service, time.Duration) time.Duration { return time.Minute }},
	incident.StepGitOpsRevert: {Background: true, Run: revertGitOps, Deadline: gitopsDeadline,
		Applies: func(svc *config.Service) string {
			if svc != nil && svc.GitOps != nil && svc.GitOps.Revert == config.RevertOff {
				return "skipped: gitops.revert is off (the reconciler stays paused for a person)"
			}
			return "when the reconciler was paused"
		},
		Why: "beside the steps after the undo: Git gets the version the cluster now runs; the reconciler resumes once its source has it"},
	incident.StepDownMig: {Applies: dbApplies, Run: downMigrate, Why: "after the undo and the snapshot"},
	incident.StepSmoke:   {Applies: smokeApplies, Run: smoke, Why: "after the undo: it checks the rolled-back pods"},
	incident.StepMetrics: {Deadline: metricsDeadline, Applies: metricsApplies, Run: checkMetrics, Why: "after the undo: it measures the recovery"},
	incident.StepFlagOff: {Soft: true, Deadline: flagStepDeadline, Applies: flagApplies, Run: flagOff, Why: "after recovery: belt and braces, never on its path"},
	incident.StepClose: {Join: true, Soft: true, Deadline: notifyDeadline, Applies: notifyApplies, Run: closeIncident,
		Why: "after the verification: the summary reports what it measured"},
	incident.StepReview: {Run: scheduleReview, Why: "last: due 48 hours after the close"},
}

// Steps is the runbook in incident.Runbook's order, each step with its
// body (the decision, recorded when the incident opens, is not run).
var Steps = func() []Step {
	var out []Step
	for _, d := range incident.Runbook {
		if !d.OnIncident {
			out = append(out, Step{Def: d, body: bodies[d.Name]})
		}
	}
	return out
}()

// Title is a step's title, for progress lines.
func Title(name string) string {
	for _, s := range Steps {
		if s.Name == name {
			return s.Title
		}
	}
	for _, s := range kube.SubSteps {
		if s.Name == name {
			return s.Title
		}
	}
	return name
}

// OutlineStep is one runbook step as 'rollback plan' shows it.
type OutlineStep struct {
	Step    string `json:"step"`
	Title   string `json:"title"`
	Budget  string `json:"budget,omitempty"`
	Applies string `json:"applies"`
	Why     string `json:"why,omitempty"`
}

// Outline lists the steps a run would take for the service, with what
// each will do.
func (e *Engine) Outline(service string) []OutlineStep {
	svc := e.service(service)
	out := make([]OutlineStep, 0, len(Steps))
	for _, st := range Steps {
		o := OutlineStep{Step: st.Name, Title: st.Title, Applies: "yes", Why: st.Why}
		if st.Applies != nil {
			o.Applies = st.Applies(svc)
		}
		if st.Budget > 0 {
			o.Budget = st.Budget.String()
		}
		out = append(out, o)
	}
	return out
}

// plan is the runbook for one incident, from Steps.
func (e *Engine) plan(inc *store.Incident, t *Target, w *Workload, res *kube.Result) runbook.Plan {
	timeout, _ := time.ParseDuration(t.Timeout)
	if timeout <= 0 {
		timeout = DefaultTimeout // for incidents that recorded none
	}
	x := &execution{e: e, svc: e.service(t.Service), inc: inc, t: t, w: w, timeout: timeout, res: res,
		ninc: notify.Incident{ID: inc.ID, Service: inc.Service, BadVersion: inc.BadVersion, GoodVersion: inc.GoodVersion, Date: inc.OpenedAt, PagerDutyID: t.PagerDuty}}
	return x.plan(w.LeaseKey(), Steps)
}

// plan runs steps on the execution, holding key.
func (x *execution) plan(key string, steps []Step) runbook.Plan {
	p := runbook.Plan{Service: key}
	for _, st := range steps {
		rs := runbook.Step{Name: st.Name, Title: st.Title, Budget: st.Budget, Soft: st.Soft, Background: st.Background, Join: st.Join}
		if st.Deadline != nil {
			rs.Deadline = st.Deadline(x.svc, x.timeout)
		}
		run := st.Run
		rs.Run = func(ctx context.Context, sc *runbook.StepContext) (string, error) { return run(ctx, x, sc) }
		p.Steps = append(p.Steps, rs)
	}
	return p
}

// DefaultTimeout is how long the rollout may take unless the run says.
const DefaultTimeout = 5 * time.Minute

func declare(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	inc := x.inc
	head := fmt.Sprintf("incident %s: rollback of %s %s → %s", inc.ID, inc.Service, orNone(inc.BadVersion), orNone(inc.GoodVersion))
	return notifiedEvidence(head, x.e.announce(ctx, sc, x.svc, x.ninc)), nil
}

func snapshot(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	d, err := x.e.prepareDB(ctx, x.svc, x.inc, nil)
	if err != nil {
		return "", err
	}
	defer d.close()
	if len(d.plan.Steps) == 0 {
		return "", fmt.Errorf("the down migration already ran (its merge resumes): %w", runbook.ErrSkip)
	}
	mode, _ := migrate.ParseSnapshotMode(cmp.Or(x.svc.Database.Snapshot, "tables"))
	if x.e.StateDir == nil {
		return "", errors.New("snapshot: no state directory to keep it in")
	}
	dir, err := x.e.StateDir("snapshots")
	if err != nil {
		return "", err
	}
	snap, err := d.p.Snapshot(ctx, d.plan, mode, dir, x.e.now())
	if err != nil {
		return "", err
	}
	if snap == nil {
		return "", fmt.Errorf("snapshot: none in rollback.yaml: %w", runbook.ErrSkip)
	}
	note := ""
	if snap.Note != "" {
		note = "; " + snap.Note
	}
	if st := x.svc.Database.SnapshotStore; st != nil {
		// Where a replica that resumes this run finds it: the pod's own
		// disk does not outlive the pod.
		obj, err := x.e.keepSnapshot(ctx, st, snap, x.inc.ID)
		if err != nil {
			return "", fmt.Errorf("snapshot taken (%s) but not kept in %s: %w", snap.Path, st.URL, err)
		}
		return fmt.Sprintf("%s (%d bytes, sha256 %s, read back and checked); restore: aws s3 cp %s . && %s", obj.URL, obj.Bytes, obj.SHA256,
			obj.URL, strings.ReplaceAll(snap.Restore, filepath.Dir(snap.Path)+"/", "")) + note, nil
	}
	return fmt.Sprintf("%s (%d bytes, sha256 %s); restore: %s", snap.Path, snap.Bytes, snap.SHA256, snap.Restore) + note, nil
}

// keepSnapshot uploads a snapshot to the service's snapshot store, checks
// it, and removes the local copy.
func (e *Engine) keepSnapshot(ctx context.Context, st *config.SnapshotStore, snap *migrate.Snapshot, incident string) (*snapstore.Object, error) {
	o := snapstore.Options{URL: st.URL, Endpoint: st.Endpoint, Region: st.Region, MaxBytes: st.MaxBytes}
	if st.AccessKeyIDEnv != "" {
		o.AccessKeyID, o.SecretAccessKey = e.getenv(st.AccessKeyIDEnv), e.getenv(st.SecretAccessKeyEnv)
		if o.AccessKeyID == "" || o.SecretAccessKey == "" {
			return nil, fmt.Errorf("$%s or $%s is empty", st.AccessKeyIDEnv, st.SecretAccessKeyEnv)
		}
	}
	s, err := snapstore.Open(ctx, o)
	if err != nil {
		return nil, err
	}
	obj, err := s.Put(ctx, snap.Path, incident)
	if err != nil {
		return nil, err
	}
	_ = os.Remove(snap.Path)
	_ = os.Remove(snap.Path + ".sha256")
	return obj, nil
}

func kubeUndo(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	events := func(ev progress.Event) {
		x.e.Events.Emit(ev.Time, ev.Step, ev.Phase, ev.Message, ev.Err)
		// The abandoned revision's bad mark and the config restored are
		// journaled as soon as they are done, before the undo.
		if (ev.Step == kube.StepMarkBad || ev.Step == kube.StepConfig) && ev.Phase == progress.Done {
			_ = sc.Note(ctx, ev.Message)
		}
	}
	res, err := kube.Rollback(ctx, x.w.Client, x.w.Target, kube.RollbackOptions{Timeout: x.timeout, Events: events, Now: x.e.Now,
		ToObject: x.t.To, FromObject: x.t.From, Resume: true})
	if res != nil {
		*x.res = *res
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; now revision %d, %d ready pod(s) on %s", res.Plan.Summary(), res.Revision, res.ReadyPods, strings.Join(res.Images, ",")), nil
}

func block(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	inc := x.inc
	if inc.BadVersion == "" {
		return "", fmt.Errorf("the abandoned version is unknown: %w", runbook.ErrSkip)
	}
	err := x.e.Store.SetBlock(ctx, store.Block{Service: inc.Service, Version: inc.BadVersion, Incident: inc.ID,
		Reason: "rolled back in " + inc.ID + "; root cause open", At: x.e.now()})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s blocked: 'rollback gate %s %s' fails in CI", inc.Service, inc.BadVersion, inc.Service, inc.BadVersion), nil
}

func downMigrate(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	// No Once: re-planning from the history makes this step idempotent
	// (the history fix commits with the undo).
	uo := migrate.DefaultUndoOptions()
	d, err := x.e.prepareDB(ctx, x.svc, x.inc, &uo)
	if err != nil {
		return "", err
	}
	defer d.close()
	res, v, err := d.p.UndoAndVerify(ctx, d.plan, d.rel, uo)
	if errors.Is(err, migrate.ErrNotRestored) {
		return "", fmt.Errorf("%w: %s", verify.ErrFailed, v.Summary())
	}
	if err != nil {
		return "", err
	}
	return res.Summary(d.plan) + "; " + v.Summary(), nil
}

// verifySpec is the run's verification: the service's verify section,
// with restarts counted from when the rollback began.
func (x *execution) verifySpec() verify.Spec {
	var v *config.Verify
	if x.svc != nil {
		v = x.svc.Verify
	}
	s := verify.SpecFor(v, x.e.getenv, x.e.Now)
	s.Pods.Since = x.res.Started
	if s.Pods.Since.IsZero() && s.Pods.Window == 0 {
		// Resumed after the Kubernetes step: no rollout to count from.
		s.Pods.Window = 2 * time.Second
	}
	return s
}

func smoke(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	s := x.verifySpec()
	results, err := s.Health(ctx, x.w.Client, x.w.Target)
	if err != nil {
		return "", err
	}
	return verify.Verdict(results)
}

func checkMetrics(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	s := x.verifySpec()
	if !s.HasMetrics() {
		return "", fmt.Errorf("no metric checks configured (verify: in rollback.yaml): %w", runbook.ErrSkip)
	}
	s.Log = func(line string) { _ = sc.Note(ctx, line) }
	results, err := s.Metrics(ctx, x.w.Client, x.w.Target)
	if err != nil {
		return "", err
	}
	return verify.Verdict(results)
}

func flagOff(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	svc := x.svc
	if svc == nil || svc.Flag == nil {
		return "", fmt.Errorf("no feature flag configured (flag: in rollback.yaml): %w", runbook.ErrSkip)
	}
	p, err := x.e.flagProvider(svc.Flag)
	if err != nil {
		return "", err
	}
	// Turning a flag off converges: a kill between the journaled intent
	// and the provider's answer leaves it on, so the resumed run turns it
	// off again rather than call it uncertain.
	return sc.Converge(ctx, "flag-off", func() (string, error) {
		if err := flags.TurnOffAndConfirm(ctx, p, svc.Flag.Key, x.inc.ID+": rolled back "+x.inc.BadVersion); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s flag %s off (read back)", svc.Flag.Provider, svc.Flag.Key), nil
	})
}

func closeIncident(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	s, inc := x.e.Store, x.inc
	cur, err := x.e.markClosed(ctx, inc.ID)
	if err != nil {
		return "", err
	}
	*inc = *cur
	evs, err := s.Events(ctx, inc.ID)
	if err != nil {
		return "", err
	}
	ttr, _ := incident.TimeToRecover(cur, evs)
	out := incident.SummaryOutcomes(incident.Checklist(cur, evs))
	sum := notify.Summary{TimeToRecover: ttr, ErrorRate: out.ErrorRate, DownMigration: out.DownMigration,
		SmokeTests: out.SmokeTests, PIRDue: incident.ReviewDue(cur), Blocked: inc.BadVersion != ""}
	return notifiedEvidence("incident closed at "+cur.ClosedAt.UTC().Format(time.RFC3339), x.e.conclude(ctx, sc, x.svc, x.ninc, sum)), nil
}

// markClosed closes the incident (once: closing a closed one changes
// nothing) and returns it as stored.
func (e *Engine) markClosed(ctx context.Context, id string) (*store.Incident, error) {
	cur, err := e.Store.GetIncident(ctx, id)
	if err != nil {
		return nil, err
	}
	if cur.Status != store.StatusClosed {
		now := e.now()
		cur.Status, cur.ClosedAt = store.StatusClosed, &now
		if err := e.Store.UpdateIncident(ctx, cur); err != nil {
			return nil, err
		}
	}
	return cur, nil
}

func scheduleReview(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	cur, err := x.e.Store.GetIncident(ctx, x.inc.ID)
	if err != nil {
		return "", err
	}
	return "review due " + incident.ReviewDue(cur).UTC().Format(time.RFC3339) + "; draft: rollback report " + x.inc.ID, nil
}

// metricsDeadline is the metric step's enforced deadline: its window
// (verify.within, default the runbook's 5 minutes) and a last query.
func metricsDeadline(svc *config.Service, _ time.Duration) time.Duration {
	within := incident.BudgetVerify
	if svc != nil && svc.Verify != nil && svc.Verify.Within > 0 {
		within = svc.Verify.Within
	}
	return within + metrics.QueryTimeout + 5*time.Second
}

func notifyApplies(svc *config.Service) string {
	if svc == nil || svc.Notify == nil {
		return "incident record only (no notify: in rollback.yaml)"
	}
	var to []string
	if svc.Notify.Slack != nil {
		to = append(to, "Slack")
	}
	if svc.Notify.PagerDuty != nil {
		to = append(to, "PagerDuty")
	}
	for _, w := range svc.Notify.Webhooks {
		to = append(to, "webhook "+w.Name)
	}
	return "notifies " + strings.Join(to, ", ")
}

func dbApplies(svc *config.Service) string {
	if svc == nil || svc.Database == nil {
		return "skipped: no database: in rollback.yaml"
	}
	return "if the abandoned release migrated (its 'rollback db record')"
}

func smokeApplies(svc *config.Service) string {
	if svc != nil && svc.Verify != nil && len(svc.Verify.Smoke) > 0 {
		return fmt.Sprintf("pods + %d smoke check(s)", len(svc.Verify.Smoke))
	}
	return "pods (no smoke checks in rollback.yaml)"
}

func metricsApplies(svc *config.Service) string {
	if svc == nil || svc.Verify == nil || (svc.Verify.ErrorRateQuery == "" && svc.Verify.LatencyQuery == "" && svc.Verify.RequestsQuery == "") {
		return "skipped: no verify queries in rollback.yaml"
	}
	if svc.Verify.RequestsQuery != "" {
		return "error rate under the bound with 95% confidence (request and error counts), p99 from Prometheus"
	}
	if svc.Verify.LatencyFactor > 0 {
		return fmt.Sprintf("error rate / p99 (at most %gx the pre-release baseline) from Prometheus", svc.Verify.LatencyFactor)
	}
	return "error rate / p99 from Prometheus"
}

func flagApplies(svc *config.Service) string {
	if svc == nil || svc.Flag == nil {
		return "skipped: no flag: in rollback.yaml"
	}
	return svc.Flag.Provider + " flag " + svc.Flag.Key
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}
