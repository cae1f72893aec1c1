package cli

import (
	"bufio"
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/server"
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
	// Selector makes it a wide rollback; Parallel bounds it.
	Selector string
	Parallel int
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
		Short: "Roll a workload back to its last known-good revision and verify it",
		Long: `Roll back a Deployment, StatefulSet or DaemonSet: choose the target
(--to-revision, or the newest older revision marked good, never one marked
bad; with no marks at all the previous revision, as kubectl does), apply
kubectl's undo (a Deployment gets the target ReplicaSet's pod template and
annotations; a StatefulSet or DaemonSet its ControllerRevision's template),
watch until it has rolled out with kubectl rollout status' conditions for
the kind (StatefulSet partitions included; with updateStrategy OnDelete the
pods are replaced one at a time), check that the running image is the
target's, then mark the abandoned revision bad and the restored one good, so
a second rollback never returns to the broken version.

Blue/green and canary: service/NAME switches a Service's selector back to
the standby colour; httproute/NAME (Gateway API) and ingress/NAME (AWS Load
Balancer Controller forward actions) move all backend weight to the standby
colour's Service; a service with loadBalancer: in rollback.yaml forwards an
AWS ALB listener back to the standby target group. Each switch happens only
after the standby is checked (Ready pods on its template, or healthy
targets); the abandoned colour keeps running, marked bad, for inspection.
rollout/NAME (Argo Rollouts) aborts the update in progress and puts the
stable template back, as 'kubectl argo rollouts abort' + 'undo' do, with
the canary steps and analysis skipped (Argo's fast track, or promote
--full).

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
  rollback run statefulset/ledger -n payments --yes
  rollback run daemonset/log-shipper -n infra --yes
  rollback run service/checkout -n shop --yes        # blue/green selector
  rollback run httproute/checkout -n shop --yes      # Gateway API weights
  rollback run rollout/transaction-service -n payments --yes
  rollback run transaction-service --to-revision 1 --timeout 3m
  rollback run transaction-service --dry-run=server
  rollback run transaction-service --yes -o json
  rollback run transaction-service --severity P1 --hotfix-eta 40m --yes
  rollback run transaction-service --severity P1 --api-adopted=false --yes
  rollback run transaction-service --pagerduty-incident Q1ABC2DEF3GH --yes
  rollback run transaction-service --resume --yes   # finish an interrupted rollback
  rollback run -l release=2026-11-26 -n shop --yes  # wide: every matching workload, one incident`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Selector != "" {
				if len(args) != 0 {
					return usagef("--selector rolls back every matching workload: give no SERVICE")
				}
				return runWide(cmd.Context(), f, o)
			}
			if len(args) != 1 {
				return usagef("run expects one SERVICE, got %d arguments (or --selector LABELS for a wide rollback)", len(args))
			}
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
	fl.StringVarP(&o.Selector, "selector", "l", "", "wide rollback: every Deployment, StatefulSet and DaemonSet with these labels in the namespace, as one incident")
	fl.IntVar(&o.Parallel, "parallel", 20, "with --selector: workloads rolled back at once")
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
	if c, err := f.remote(); c != nil || err != nil {
		if err != nil {
			return err
		}
		if dry != kube.DryRunNone || o.Decide.Severity != "" || o.PagerDutyIncident != "" {
			return usagef("with --server, run takes SERVICE, --to-revision, --timeout and --resume (the server decides the rest from its rollback.yaml)")
		}
		return remoteRun(ctx, f, c, func() (*server.RunAccepted, error) {
			return c.Run(ctx, server.RunRequest{Service: o.Service, ToRevision: o.ToRevision, Resume: o.Resume, Timeout: o.Timeout.String()})
		})
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
			p, err := engine.PlanRollback(ctx, w, o.ToRevision)
			if err != nil {
				return err
			}
			if _, err := runDecision(ctx, f, o, p, pr); err != nil {
				return err
			}
		}
		res, err := f.engine(nil, pr).DryRun(ctx, w, o.ToRevision, dry, o.Timeout)
		return printRun(f, format, res, err, "")
	}
	s, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	req := engine.RunRequest{Workload: w, ToRevision: o.ToRevision, Timeout: o.Timeout, PagerDuty: o.PagerDutyIncident, Resume: o.Resume,
		Decide: func(ctx context.Context, p *kube.Plan) (*engine.Decision, error) {
			return runDecision(ctx, f, o, p, pr)
		}}
	if !o.Yes && f.IO.CanPrompt() {
		req.Confirm = func(p *kube.Plan) (bool, error) { return confirm(f.IO, p) }
	}
	out, err := f.engine(s, pr).Run(ctx, req)
	if out == nil {
		return err
	}
	if err != nil && out.Incident != "" {
		fmt.Fprintf(f.IO.ErrOut, "incident %s is open: see 'rollback status %s'; continue with 'rollback resume %s'\n", out.Incident, out.Incident, out.Incident)
	}
	if out.Resumed {
		if err == nil {
			printResumed(f, out)
		}
		return err
	}
	return printRun(f, format, out.Result, err, out.Incident)
}

// ErrOpenIncident: the service has an unfinished rollback incident.
var ErrOpenIncident = engine.ErrOpenIncident

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
		fmt.Fprintf(s.Out, "Nothing to do: %s already runs revision %d (%s).\n", p.Target.Ref(), p.To.Number, strings.Join(p.To.Images, ", "))
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
	return askYes(s, fmt.Sprintf("Roll back %s to revision %d?", p.Target.Ref(), p.To.Number)), nil
}

// askYes asks a yes/no question on the terminal; anything but y or yes
// (or no answer) is no.
func askYes(s *IOStreams, question string) bool {
	fmt.Fprintf(s.ErrOut, "%s [y/N] ", question)
	line, err := bufio.NewReader(s.In).ReadString('\n')
	if err != nil && line == "" {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
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
			if c, err := f.remote(); c != nil || err != nil {
				if err != nil {
					return err
				}
				return remoteRun(ctx, f, c, func() (*server.RunAccepted, error) { return c.Resume(ctx, args[0]) })
			}
			s, err := f.openStore(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			if _, _, err := loadIncident(ctx, s, args[0]); err != nil {
				return err
			}
			out, err := f.engine(s, newRenderer(f.IO, f.Now)).Resume(ctx, args[0])
			if err != nil {
				return err
			}
			printResumed(f, out)
			return nil
		},
	}
}

func printResumed(f *Factory, out *engine.Outcome) {
	fmt.Fprintf(f.IO.Out, "Incident %s complete", out.Incident)
	if out.Result != nil && out.Result.Plan != nil {
		fmt.Fprintf(f.IO.Out, ": %s", out.Result.Plan.Summary())
	}
	fmt.Fprintf(f.IO.Out, "; see 'rollback status %s'.\n", out.Incident)
}
