package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"rollback/internal/config"
	"rollback/internal/decide"
	"rollback/internal/flags"
	"rollback/internal/incident"
	"rollback/internal/kube"
	"rollback/internal/metrics"
	"rollback/internal/migrate"
	"rollback/internal/notify"
	"rollback/internal/progress"
	"rollback/internal/runbook"
	"rollback/internal/store"
	"rollback/internal/verify"
)

// runTarget is journaled when an incident starts, so resume knows what to
// finish even if the run died before its first step.
type runTarget struct {
	Service        string `json:"service"` // as the user named it
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	Context        string `json:"context,omitempty"`
	ToReplicaSet   string `json:"to"`
	FromReplicaSet string `json:"from"`
	Timeout        string `json:"timeout"`
	// PagerDuty is the PagerDuty incident that paged on-call, whose status
	// the run sets through the REST API (--pagerduty-incident).
	PagerDuty string `json:"pagerduty,omitempty"`
}

func holderName() string {
	h, _ := os.Hostname()
	return h + ":" + strconv.Itoa(os.Getpid())
}

// startIncident creates the incident for a planned rollback and journals
// its target.
func startIncident(ctx context.Context, f *Factory, s store.Store, o *RunOptions, w *Workload, p *kube.Plan, dec *runDecisionResult) (*store.Incident, *runTarget, error) {
	inc := &store.Incident{Service: w.Key(), GoodVersion: tagOfRev(p.To), Decision: string(decide.RollBack), OpenedAt: f.Now()}
	if p.From != nil {
		inc.BadVersion = tagOfRev(p.From)
	}
	var reasons []decide.Reason
	if dec == nil {
		reasons = append(reasons, decide.Reason{Question: "Who decided?", Answer: "the operator ran 'rollback run' (the flowchart was not walked: no --severity)", Source: decide.Override})
	} else {
		inc.Severity, inc.Decision = string(dec.Severity), string(dec.Decision.Action)
		reasons = append(reasons, dec.Decision.Reasons...)
		for _, n := range dec.Decision.Notes {
			reasons = append(reasons, decide.Reason{Question: "Note", Answer: n})
		}
		if dec.Forced && !isRollBack(dec.Decision.Action) {
			inc.Decision = string(decide.RollBack)
			reasons = append(reasons, decide.Reason{Question: "Who decided?", Answer: fmt.Sprintf("the operator overruled the flowchart's %s with --force", dec.Decision.Action), Source: decide.Override})
		}
	}
	reasons = append(reasons, decide.Reason{Question: "Target", Answer: p.Summary(), Source: decide.Measured, Evidence: p.Reason})
	b, _ := json.Marshal(reasons)
	inc.Rationale = string(b)
	if err := s.CreateIncident(ctx, inc); err != nil {
		return nil, nil, err
	}
	t := &runTarget{Service: w.Key(), Namespace: w.Target.Namespace, Name: w.Target.Name, Context: w.Context,
		ToReplicaSet: p.To.ReplicaSet, Timeout: o.Timeout.String(), PagerDuty: o.PagerDutyIncident}
	if p.From != nil {
		t.FromReplicaSet = p.From.ReplicaSet
	}
	b, _ = json.Marshal(t)
	if _, err := s.AppendEvent(ctx, store.Event{Incident: inc.ID, Time: f.Now(), Step: "run", Phase: "note", Key: "target", Evidence: string(b)}); err != nil {
		return nil, nil, err
	}
	return inc, t, nil
}

func tagOfRev(r *kube.Revision) string {
	if r == nil || len(r.Images) == 0 {
		return ""
	}
	return tagOf(r.Images[0])
}

// runbookPlan is the runbook's order of steps for one incident. Steps that
// need settings this run does not have are skipped with the reason.
func runbookPlan(f *Factory, s store.Store, inc *store.Incident, t *runTarget, w *Workload, r *renderer, out *kube.Result) runbook.Plan {
	timeout, _ := time.ParseDuration(t.Timeout)
	if timeout <= 0 {
		timeout = 5 * time.Minute // run's --timeout default, for incidents that recorded none
	}
	svc := f.serviceConfig(t.Service)
	ninc := notify.Incident{ID: inc.ID, Service: inc.Service, BadVersion: inc.BadVersion, GoodVersion: inc.GoodVersion, Date: inc.OpenedAt, PagerDutyID: t.PagerDuty}
	return runbook.Plan{Service: runKey(t.Namespace, t.Name), Steps: []runbook.Step{
		// Communication runs beside recovery, never before it: a slow or
		// hung Slack is evidence, not a stall.
		{Name: incident.StepDeclare, Title: "Declare incident and notify", Budget: runbook.BudgetDeclare, Deadline: notifyDeadline(svc), Background: true, Soft: true,
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				head := fmt.Sprintf("incident %s: rollback of %s %s → %s", inc.ID, inc.Service, orNone(inc.BadVersion), orNone(inc.GoodVersion))
				return notifiedEvidence(head, announce(ctx, f, sc, svc, ninc)), nil
			}},
		{Name: incident.StepSnapshot, Title: "Database snapshot",
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				d, err := prepareDB(ctx, f, svc, inc, nil)
				if err != nil {
					return "", err
				}
				defer d.close()
				mode, _ := migrate.ParseSnapshotMode(firstNonEmpty(svc.Database.Snapshot, "tables"))
				dir, err := f.statePath("snapshots")
				if err != nil {
					return "", err
				}
				snap, err := migrate.TakeSnapshot(ctx, d.dsn, d.plan, mode, dir, f.Now())
				if err != nil {
					return "", err
				}
				if snap == nil {
					return "", fmt.Errorf("snapshot: none in rollback.yaml: %w", runbook.ErrSkip)
				}
				return fmt.Sprintf("%s (%d bytes, sha256 %s); restore: %s", snap.Path, snap.Bytes, snap.SHA256, snap.Restore) + noteOf(snap.Note), nil
			}},
		{Name: incident.StepKube, Title: "Kubernetes rollback", Budget: runbook.BudgetKube, Deadline: max(runbook.BudgetKube, timeout+30*time.Second),
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				events := func(e progress.Event) {
					r.Event(e)
					// The abandoned revision's bad mark is journaled as soon
					// as it is set, before the undo.
					if e.Step == "mark-bad" && e.Phase == progress.Done {
						_ = sc.Note(ctx, e.Message)
					}
				}
				res, err := kube.Rollback(ctx, w.Client, w.Target, kube.RollbackOptions{Timeout: timeout, Events: events, Now: f.Now,
					ToReplicaSet: t.ToReplicaSet, FromReplicaSet: t.FromReplicaSet, Resume: true})
				if res != nil {
					*out = *res
				}
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("%s; now revision %d, %d ready pod(s) on %s", res.Plan.Summary(), res.Revision, res.ReadyPods, strings.Join(res.Images, ",")), nil
			}},
		// Blocked as soon as the rollback has moved off the broken
		// version, whatever verification says later.
		{Name: incident.StepBlock, Title: "Block the broken version", Deadline: time.Minute,
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				if inc.BadVersion == "" {
					return "", fmt.Errorf("the abandoned version is unknown: %w", runbook.ErrSkip)
				}
				err := s.SetBlock(ctx, store.Block{Service: inc.Service, Version: inc.BadVersion, Incident: inc.ID,
					Reason: "rolled back in " + inc.ID + "; root cause open", At: f.Now()})
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("%s %s blocked: 'rollback gate %s %s' fails in CI", inc.Service, inc.BadVersion, inc.Service, inc.BadVersion), nil
			}},
		{Name: incident.StepDownMig, Title: "Database down migration",
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				// No Once: re-planning from the history makes this step
				// idempotent (the history fix commits with the undo).
				uo := migrate.DefaultUndoOptions()
				d, err := prepareDB(ctx, f, svc, inc, &uo)
				if err != nil {
					return "", err
				}
				defer d.close()
				res, err := migrate.Undo(ctx, d.conn, d.plan, uo)
				if err != nil {
					return "", err
				}
				v, err := migrate.Verify(ctx, d.conn, d.plan.Format, d.plan.Table, d.to, d.rel)
				if err != nil {
					return "", err
				}
				if !v.OK {
					return "", fmt.Errorf("%w: %s", ErrVerifyFailed, verifySummary(v))
				}
				return fmt.Sprintf("%d migration(s) undone in %d transaction(s); %s", len(d.plan.Steps), res.Segments, verifySummary(v)), nil
			}},
		{Name: incident.StepSmoke, Title: "Verify pods and smoke tests", Budget: runbook.BudgetVerify,
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				res, err := verify.Pods(ctx, w.Client, w.Target, 2*time.Second)
				if err != nil {
					return "", err
				}
				results := []verify.Result{res}
				if svc != nil && svc.Verify != nil {
					client := &http.Client{Timeout: 30 * time.Second}
					for _, sm := range svc.Verify.Smoke {
						results = append(results, verify.RunSmoke(ctx, client, sm, f.IO.Getenv))
					}
				}
				return verdict(results)
			}},
		{Name: incident.StepMetrics, Title: "Verify metrics", Budget: runbook.BudgetVerify, Deadline: metricsDeadline(svc),
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				if svc == nil || svc.Verify == nil || (svc.Verify.ErrorRateQuery == "" && svc.Verify.LatencyQuery == "") {
					return "", fmt.Errorf("no metric checks configured (verify: in rollback.yaml): %w", runbook.ErrSkip)
				}
				v := svc.Verify
				url := firstNonEmpty(v.Prometheus, f.IO.Getenv("ROLLBACK_PROMETHEUS_URL"))
				if url == "" {
					return "", fmt.Errorf("metric checks need verify.prometheus or $ROLLBACK_PROMETHEUS_URL")
				}
				p, err := metrics.NewPrometheus(url)
				if err != nil {
					return "", err
				}
				within := v.Within
				if within <= 0 {
					within = runbook.BudgetVerify
				}
				var results []verify.Result
				if v.ErrorRateQuery != "" {
					max := v.MaxErrorRate
					if max <= 0 {
						max = 0.001
					}
					r, err := verify.Metric(ctx, p, verify.Threshold{Name: "error-rate", Query: v.ErrorRateQuery, Max: max, Within: within,
						Unit: func(x float64) string { return fmt.Sprintf("%.3f%%", 100*x) }}, f.Now)
					if err != nil {
						return "", err
					}
					results = append(results, r)
				}
				if v.LatencyQuery != "" && v.MaxLatency > 0 {
					r, err := verify.Metric(ctx, p, verify.Threshold{Name: "p99-latency", Query: v.LatencyQuery, Max: v.MaxLatency.Seconds(), Within: within,
						Unit: func(x float64) string {
							return time.Duration(x * float64(time.Second)).Round(time.Millisecond).String()
						}}, f.Now)
					if err != nil {
						return "", err
					}
					results = append(results, r)
				}
				return verdict(results)
			}},
		{Name: incident.StepFlagOff, Title: "Feature flag off", Soft: true, Deadline: flagStepDeadline(svc),
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				if svc == nil || svc.Flag == nil {
					return "", fmt.Errorf("no feature flag configured (flag: in rollback.yaml): %w", runbook.ErrSkip)
				}
				p, err := flagProvider(f, svc.Flag)
				if err != nil {
					return "", err
				}
				return sc.Once(ctx, "flag-off", func() (string, error) {
					if err := flags.TurnOffAndConfirm(ctx, p, svc.Flag.Key, inc.ID+": rolled back "+inc.BadVersion); err != nil {
						return "", err
					}
					return fmt.Sprintf("%s flag %s off (read back)", svc.Flag.Provider, svc.Flag.Key), nil
				})
			}},
		{Name: incident.StepClose, Title: "Communicate and close", Join: true, Soft: true, Deadline: notifyDeadline(svc),
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				cur, err := s.GetIncident(ctx, inc.ID)
				if err != nil {
					return "", err
				}
				if cur.Status != "closed" {
					now := f.Now()
					cur.Status, cur.ClosedAt = "closed", &now
					if err := s.UpdateIncident(ctx, cur); err != nil {
						return "", err
					}
					*inc = *cur
				}
				evs, err := s.Events(ctx, inc.ID)
				if err != nil {
					return "", err
				}
				ttr, _ := incident.TimeToRecover(cur, evs)
				out := incident.SummaryOutcomes(incident.Checklist(cur, evs))
				sum := notify.Summary{TimeToRecover: ttr, ErrorRate: out.ErrorRate, DownMigration: out.DownMigration,
					SmokeTests: out.SmokeTests, PIRDue: incident.ReviewDue(cur), Blocked: inc.BadVersion != ""}
				return notifiedEvidence("incident closed at "+cur.ClosedAt.UTC().Format(time.RFC3339), conclude(ctx, f, sc, svc, ninc, sum)), nil
			}},
		{Name: incident.StepReview, Title: "Schedule post-incident review",
			Run: func(ctx context.Context, sc *runbook.StepContext) (string, error) {
				cur, err := s.GetIncident(ctx, inc.ID)
				if err != nil {
					return "", err
				}
				return "review due " + incident.ReviewDue(cur).UTC().Format(time.RFC3339) + "; draft: rollback report " + inc.ID, nil
			}},
	}}
}

// metricsDeadline is the metric step's enforced deadline: its window
// (verify.within, default the runbook's 5 minutes) and a last query.
func metricsDeadline(svc *config.Service) time.Duration {
	within := runbook.BudgetVerify
	if svc != nil && svc.Verify != nil && svc.Verify.Within > 0 {
		within = svc.Verify.Within
	}
	return within + metrics.QueryTimeout + 5*time.Second
}

// runKey is the service's lease and lock name, as the run's plan uses it.
func runKey(namespace, name string) string { return namespace + "/deployment/" + name }

func newExecutor(f *Factory, s store.Store, r *renderer) *runbook.Executor {
	return &runbook.Executor{Store: s, Holder: holderName(), Now: f.Now, Events: r.Event}
}

// hold takes the service for ex, taking over a lease left by a dead run of
// this machine.
func hold(ctx context.Context, ex *runbook.Executor, service string) (func(), error) {
	if ex.Holds(service) {
		return func() {}, nil
	}
	release, err := ex.Hold(ctx, service)
	var le *store.LeaseError
	if errors.As(err, &le) && deadLocalHolder(le.Lease.Holder) {
		_ = ex.Store.ReleaseLease(ctx, le.Lease.Service, le.Lease.Holder)
		release, err = ex.Hold(ctx, service)
	}
	return release, err
}

// execute runs (or resumes) the incident's runbook with ex, which holds
// the service (see hold).
func execute(ctx context.Context, f *Factory, ex *runbook.Executor, inc *store.Incident, t *runTarget, w *Workload, r *renderer) (*kube.Result, error) {
	res := &kube.Result{}
	return res, ex.Run(ctx, inc.ID, runbookPlan(f, ex.Store, inc, t, w, r, res))
}

// deadLocalHolder: the lease was held by a process of this host that no
// longer runs (a run killed before it could release it).
func deadLocalHolder(holder string) bool {
	host, pid, ok := strings.Cut(holder, ":")
	me, _ := os.Hostname()
	n, err := strconv.Atoi(pid)
	if !ok || host != me || err != nil || n <= 0 {
		return false
	}
	return syscall.Kill(n, 0) != nil
}

func newResumeCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "resume INCIDENT",
		Short: "Continue an interrupted 'rollback run' where its journal says it stopped",
		Long: `Continue a rollback that was interrupted (killed, machine lost, Ctrl-C):
finished steps are not repeated, recorded side effects are not repeated, and
the Kubernetes rollback finishes towards the target it had chosen.`,
		Example: "  rollback resume INC-20261126-1",
		Args:    exactArgs(1, "one INCIDENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := f.openStore(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			r := newRenderer(f.IO, f.Now)
			return resumeIncident(ctx, f, s, newExecutor(f, s, r), r, args[0])
		},
	}
}

// resumeIncident finishes an incident's run where its journal stopped,
// holding the service with ex (taken here unless ex holds it already).
func resumeIncident(ctx context.Context, f *Factory, s store.Store, ex *runbook.Executor, r *renderer, id string) error {
	inc, evs, err := loadIncident(ctx, s, id)
	if err != nil {
		return err
	}
	var t runTarget
	for _, ev := range evs {
		if ev.Key == "target" {
			_ = json.Unmarshal([]byte(ev.Evidence), &t)
		}
	}
	if t.Name == "" {
		return fmt.Errorf("incident %s has no recorded target; it was not started by 'rollback run'", inc.ID)
	}
	if f.Namespace == "" {
		f.Namespace = t.Namespace
	}
	if f.Context == "" {
		f.Context = t.Context
	}
	w, err := f.Resolve("deployment/" + t.Name)
	if err != nil {
		return err
	}
	release, err := hold(ctx, ex, runKey(t.Namespace, t.Name))
	if err != nil {
		return err
	}
	defer release()
	res, err := execute(ctx, f, ex, inc, &t, w, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(f.IO.Out, "Incident %s complete", inc.ID)
	if res.Plan != nil {
		fmt.Fprintf(f.IO.Out, ": %s", res.Plan.Summary())
	}
	fmt.Fprintf(f.IO.Out, "; see 'rollback status %s'.\n", inc.ID)
	return nil
}

// serviceConfig returns the configured service, or nil (deployment/NAME,
// or no rollback.yaml).
func (f *Factory) serviceConfig(name string) *config.Service {
	cfg, err := f.Config()
	if err != nil || cfg == nil {
		return nil
	}
	return cfg.Services[name]
}

// dbRun is a service's database prepared for the snapshot or the undo.
type dbRun struct {
	dsn  string
	conn *pgx.Conn
	plan *migrate.Plan
	rel  *migrate.Release
	to   migrate.Version
	// unlock releases the migration lock prepareDB took, if any.
	unlock func()
}

func (d *dbRun) close() {
	if d.unlock != nil {
		d.unlock()
	}
	d.conn.Close(context.Background())
}

// prepareDB plans the down migration of the abandoned release: its target
// is the version 'rollback db record --release BAD' stored at deploy time.
// It skips (ErrSkip, with the reason) when the service has no database, no
// record, or the migration has not run (or was already undone).
//
// With lock, the migration tool's lock is taken before planning and kept
// until close, and lock.Locked is set for the undo.
func prepareDB(ctx context.Context, f *Factory, svc *config.Service, inc *store.Incident, lock *migrate.UndoOptions) (*dbRun, error) {
	if svc == nil || svc.Database == nil {
		return nil, fmt.Errorf("no database configured (database: in rollback.yaml): %w", runbook.ErrSkip)
	}
	c := svc.Database
	dsn := f.IO.Getenv(c.DSNEnv)
	if dsn == "" {
		return nil, fmt.Errorf("database: $%s is not set", c.DSNEnv)
	}
	src, err := migrate.LoadDir(c.Dir)
	if err != nil {
		return nil, err
	}
	format := src.Format
	if c.Format != "" && c.Format != "auto" {
		format = migrate.Format(c.Format)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", migrate.SafeDSN(dsn), scrub(err, dsn))
	}
	d := &dbRun{dsn: dsn, conn: conn, unlock: func() {}}
	fail := func(err error) (*dbRun, error) { d.close(); return nil, err }
	if lock != nil {
		if d.unlock, err = migrate.LockMigrations(ctx, conn, format, "", *lock); err != nil {
			return fail(err)
		}
		lock.Locked = true
	}
	if d.rel, err = migrate.LoadRelease(ctx, conn, inc.BadVersion); err != nil {
		if errors.Is(err, migrate.ErrNoRecord) {
			return fail(fmt.Errorf("no release record for %s (run 'rollback db record --release %s' before migrating): %w", inc.BadVersion, inc.BadVersion, runbook.ErrSkip))
		}
		return fail(err)
	}
	if d.rel.Version != "" {
		if d.to, err = migrate.ParseVersion(d.rel.Version); err != nil {
			return fail(err)
		}
	}
	st, err := migrate.ReadState(ctx, conn, format, "")
	if err != nil {
		return fail(err)
	}
	if d.plan, err = migrate.PlanUndo(src, st, d.to); err != nil {
		return fail(err)
	}
	if len(d.plan.Steps) == 0 {
		v, err := migrate.Verify(ctx, conn, format, "", d.to, d.rel)
		if err == nil && v.OK {
			return fail(fmt.Errorf("database at %s, where %s started: nothing to undo (%s): %w", orNone(st.Current.String()), inc.BadVersion, verifySummary(v), runbook.ErrSkip))
		}
		return fail(fmt.Errorf("database at %s, where %s started: nothing to undo: %w", orNone(st.Current.String()), inc.BadVersion, runbook.ErrSkip))
	}
	return d, nil
}

// verdict joins check results into a step's evidence, failing when one failed.
func verdict(results []verify.Result) (string, error) {
	var parts, failed []string
	for _, r := range results {
		line := r.Check + ": " + r.Measured
		if !r.Passed {
			line += " (" + r.Message + ")"
			failed = append(failed, line)
		}
		parts = append(parts, line)
	}
	if len(failed) > 0 {
		return "", fmt.Errorf("%w: %s", ErrVerifyFailed, strings.Join(failed, "; "))
	}
	return strings.Join(parts, "; "), nil
}
