package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"rollback/internal/kube"
	"rollback/internal/progress"
	"rollback/internal/store"
)

var pagerDutyID = regexp.MustCompile(`^[A-Z0-9]{2,32}$`)

// RunOptions are the flags of `rollback run`.
type RunOptions struct {
	Service    string
	ToRevision int64
	DryRun     string
	Timeout    time.Duration
	Yes        bool
	Output     string
	// Decide: with a severity, the flowchart is walked from live signals
	// before anything changes, and its decision is the incident's.
	Decide DecideOptions
	Force  bool
	// Resume finishes the service's open incident instead of refusing.
	Resume bool
	// PagerDutyIncident is the incident that paged on-call: acknowledged
	// when the run starts, resolved when it closes (REST API).
	PagerDutyIncident string
}

func newRunCmd(f *Factory) *cobra.Command {
	o := &RunOptions{}
	cmd := &cobra.Command{
		Use:   "run SERVICE",
		Short: "Roll a Deployment back to its last known-good revision and verify it",
		Long: `Roll back a Deployment: choose the target (--to-revision, or the newest
older revision marked good, never one marked bad; with no marks at all the
previous revision, as kubectl does), apply kubectl's undo (the target
ReplicaSet's pod template and annotations), watch until it has rolled out
with kubectl rollout status' conditions, check that the running image is the
target's, then mark the abandoned revision bad and the restored one good, so
a second rollback never returns to the broken version.

With --severity, the runbook's decision flowchart is walked first from live
signals, as 'rollback decide' does (database and Prometheus from
rollback.yaml, overrides by flag); the decision and its reasons become the
incident's rationale, and a decision other than "roll back" refuses the run
(exit 3) unless --force, which is recorded as the operator overruling it.
Without --severity the operator's run is recorded as the decision.

The run is the whole runbook, journaled: declare and notify, snapshot, the
Kubernetes rollback, the down migration, verification, feature flag off,
close and notify, block the broken version, schedule the review. See
'rollback plan SERVICE' for the steps and their budgets, 'rollback status'
for the checklist, 'rollback resume' after an interruption.

On a terminal it asks for confirmation unless --yes; without a terminal it
never prompts.`,
		Example: `  rollback run transaction-service
  rollback run deployment/transaction-service -n payments --yes
  rollback run transaction-service --to-revision 1 --timeout 3m
  rollback run transaction-service --dry-run=server
  rollback run transaction-service --yes -o json
  rollback run transaction-service --severity P1 --hotfix-eta 40m --yes
  rollback run transaction-service --severity P1 --api-adopted=false --yes
  rollback run transaction-service --pagerduty-incident Q1ABC2DEF3GH --yes
  rollback run transaction-service --resume --yes   # finish an interrupted rollback`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			for _, ov := range overrideFlags {
				if !cmd.Flags().Changed(ov.flag) {
					delete(o.Decide.Overrides, ov.fact)
				}
			}
			return runRun(cmd.Context(), f, o)
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&o.ToRevision, "to-revision", 0, "revision to roll back to (default: last known good)")
	fl.StringVar(&o.DryRun, "dry-run", "none", "none, client (send nothing) or server (the API server checks the change, stores nothing)")
	fl.Lookup("dry-run").NoOptDefVal = "client"
	fl.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long to wait for the rollout to finish")
	fl.BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	fl.StringVarP(&o.Output, "output", "o", "", "print the result as json or yaml")
	fl.StringVar(&o.Decide.Severity, "severity", "", "walk the decision flowchart first: P1, P2, P3 or P4")
	fl.DurationVar(&o.Decide.Hotfix, "hotfix-eta", 0, "with --severity: how far away a fix is (e.g. 40m)")
	fl.StringVar(&o.PagerDutyIncident, "pagerduty-incident", "", "the PagerDuty incident that paged on-call (e.g. Q1ABC2DEF3GH): set to acknowledged, then resolved (needs pagerduty.apiTokenEnv)")
	fl.BoolVar(&o.Resume, "resume", false, "if an earlier rollback of the service is unfinished, finish it (as 'rollback resume INCIDENT') instead of refusing")
	fl.BoolVar(&o.Force, "force", false, "with --severity: roll back even when the flowchart says otherwise (recorded)")
	o.Decide.Overrides = map[string]*string{}
	for _, ov := range overrideFlags {
		o.Decide.Overrides[ov.fact] = fl.String(ov.flag, "", "with --severity, "+ov.help)
	}
	return cmd
}

func runRun(ctx context.Context, f *Factory, o *RunOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	dry, err := kube.ParseDryRun(o.DryRun)
	if err != nil {
		return usageError{err: err}
	}
	if o.Timeout <= 0 {
		return usagef("--timeout must be positive, got %s", o.Timeout)
	}
	if o.ToRevision < 0 {
		return usagef("--to-revision must be a positive revision number, got %d", o.ToRevision)
	}
	if err := checkDecideFlags(o); err != nil {
		return err
	}
	if o.PagerDutyIncident != "" && !pagerDutyID.MatchString(o.PagerDutyIncident) {
		return usagef("--pagerduty-incident %q: expected a PagerDuty incident ID such as Q1ABC2DEF3GH (letters and digits, from the incident's URL)", o.PagerDutyIncident)
	}
	w, err := f.Resolve(o.Service)
	if err != nil {
		return err
	}
	pr := newRenderer(f.IO, f.Now)
	if dry != kube.DryRunNone {
		if o.Decide.Severity != "" {
			// A dry run walks the decision too: it says whether the real
			// run would proceed.
			p, err := planUndo(ctx, w, o.ToRevision)
			if err != nil {
				return err
			}
			if _, err := runDecision(ctx, f, o, p, pr); err != nil {
				return err
			}
		}
		res, err := kube.Rollback(ctx, w.Client, w.Target, kube.RollbackOptions{ToRevision: o.ToRevision, DryRun: dry, Timeout: o.Timeout, Events: pr.Event, Now: f.Now})
		return printRun(f, format, res, err, "")
	}
	s, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	// Take the service before planning or recording anything: a second
	// run is refused naming the holder, never plans against a rollback in
	// flight, and opens no incident.
	ex := newExecutor(f, s, pr)
	release, err := hold(ctx, ex, runKey(w.Target.Namespace, w.Target.Name))
	if err != nil {
		return err
	}
	defer release()
	// An interrupted rollback is finished, never started over: planning
	// anew from a half-rolled-out Deployment could pick the broken
	// version as the target.
	if open, err := openIncident(ctx, s, w.Key()); err != nil {
		return err
	} else if open != nil {
		if !o.Resume {
			return fmt.Errorf("%w: incident %s for %s is still open (opened %s); finish it with 'rollback resume %s' (or pass --resume), see 'rollback status %s'; if it was finished by hand, 'rollback close %s --reason ...'",
				ErrOpenIncident, open.ID, w.Key(), open.OpenedAt.UTC().Format(time.RFC3339), open.ID, open.ID, open.ID)
		}
		return resumeIncident(ctx, f, s, ex, pr, open.ID)
	}
	// Plan, read-only: a refusal or "nothing to do" opens no incident.
	var p *kube.Plan
	err = progress.Func(pr.Event).Run(f.Now, "plan", func() (string, error) {
		var err error
		if p, err = planUndo(ctx, w, o.ToRevision); err != nil {
			return "", err
		}
		return p.Summary() + "; " + p.Reason, nil
	})
	if err != nil {
		return err
	}
	if p.NoOp {
		pr.Event(progress.Event{Time: f.Now(), Step: "undo", Phase: progress.Done, Message: fmt.Sprintf("skipped rollback (current template already matches revision %d)", p.To.Number)})
		return printRun(f, format, &kube.Result{Plan: p, DryRun: dry}, nil, "")
	}
	dec, err := runDecision(ctx, f, o, p, pr)
	if err != nil {
		return err
	}
	if !o.Yes && f.IO.CanPrompt() {
		ok, err := confirm(f.IO, p)
		if err != nil {
			return err
		}
		if !ok {
			return kube.ErrAborted
		}
	}
	inc, t, err := startIncident(ctx, f, s, o, w, p, dec)
	if err != nil {
		return err
	}
	res, err := execute(ctx, f, ex, inc, t, w, pr)
	if err != nil {
		fmt.Fprintf(f.IO.ErrOut, "incident %s is open: see 'rollback status %s'; continue with 'rollback resume %s'\n", inc.ID, inc.ID, inc.ID)
	}
	if res.Plan == nil {
		res.Plan = p
	}
	return printRun(f, format, res, err, inc.ID)
}

// ErrOpenIncident: the service has an unfinished rollback incident.
var ErrOpenIncident = errors.New("an earlier rollback is unfinished")

// openIncident is the service's open incident started by 'rollback run',
// or nil.
func openIncident(ctx context.Context, s store.Store, service string) (*store.Incident, error) {
	incs, err := s.ListIncidents(ctx, service)
	if err != nil {
		return nil, err
	}
	for i := range incs {
		if incs[i].Status == "open" {
			return &incs[i], nil
		}
	}
	return nil, nil
}

func printRun(f *Factory, format string, res *kube.Result, err error, incID string) error {
	if format != "" && res != nil && res.Plan != nil {
		v := runView(res, err)
		v.Incident = incID
		if perr := printStructured(f.IO.Out, format, v); perr != nil {
			return perr
		}
	} else if err == nil {
		printRunSummary(f.IO, res)
		if incID != "" {
			fmt.Fprintf(f.IO.Out, "Incident %s: checklist with 'rollback status %s', review draft with 'rollback report %s'.\n", incID, incID, incID)
		}
	}
	return err
}

// runResult is the -o json|yaml shape of `rollback run`.
type runResult struct {
	*kube.Result
	Incident string `json:"incident,omitempty"`
	Outcome  string `json:"outcome"`
	Error    string `json:"error,omitempty"`
	Exit     int    `json:"exitCode"`
}

func runView(res *kube.Result, err error) runResult {
	v := runResult{Result: res, Outcome: "rolled-back", Exit: ExitCode(err)}
	switch {
	case err != nil:
		v.Outcome, v.Error = "failed", err.Error()
	case res.Plan.NoOp:
		v.Outcome = "noop"
	case res.DryRun != kube.DryRunNone:
		v.Outcome = "dry-run"
	}
	return v
}

func printRunSummary(s *IOStreams, res *kube.Result) {
	p := res.Plan
	switch {
	case p.NoOp:
		fmt.Fprintf(s.Out, "Nothing to do: deployment/%s already runs revision %d (%s).\n", p.Target.Name, p.To.Number, strings.Join(p.To.Images, ", "))
	case res.DryRun != kube.DryRunNone:
		fmt.Fprintf(s.Out, "Dry run (%s): would roll back %s. Nothing was changed.\n", res.DryRun, p.Summary())
	default:
		fmt.Fprintf(s.Out, "Rolled back %s in %s; now revision %d, %d ready pod(s) on %s.\n",
			p.Summary(), fmtDur(res.Duration), res.Revision, res.ReadyPods, strings.Join(res.Images, ", "))
	}
}

// confirm shows the plan and asks on the terminal.
func confirm(s *IOStreams, p *kube.Plan) (bool, error) {
	printPlan(&IOStreams{Out: s.ErrOut}, p)
	fmt.Fprintf(s.ErrOut, "Roll back deployment/%s to revision %d? [y/N] ", p.Target.Name, p.To.Number)
	line, err := bufio.NewReader(s.In).ReadString('\n')
	if err != nil && line == "" {
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
