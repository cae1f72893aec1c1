package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"rollback/internal/config"
	"rollback/internal/incident"
	"rollback/internal/kube"
	"rollback/internal/store"
)

// PlanOptions are the flags of `rollback plan`.
type PlanOptions struct {
	Service    string
	ToRevision int64
	Output     string
}

func newPlanCmd(f *Factory) *cobra.Command {
	o := &PlanOptions{}
	cmd := &cobra.Command{
		Use:   "plan SERVICE",
		Short: "Show exactly what a rollback would change, and change nothing",
		Long: `Show the revision and image(s) a rollback would move from and to, and why
that target was chosen. Without --to-revision the target is the newest older
revision marked good; with no marks, the previous revision (as kubectl).
Then the runbook 'rollback run' would follow, step by step, with each step's
time budget from the runbook and whether it applies to this service (what
rollback.yaml configures). Nothing in the cluster is changed.`,
		Example: `  rollback plan transaction-service
  rollback plan deployment/transaction-service -n payments --to-revision 1 -o json`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			return runPlan(cmd.Context(), f, o)
		},
	}
	cmd.Flags().Int64Var(&o.ToRevision, "to-revision", 0, "revision to roll back to (default: last known good)")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	return cmd
}

func runPlan(ctx context.Context, f *Factory, o *PlanOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	if o.ToRevision < 0 {
		return usagef("--to-revision must be a positive revision number, got %d", o.ToRevision)
	}
	w, err := f.Resolve(o.Service)
	if err != nil {
		return err
	}
	p, err := planUndo(ctx, w, o.ToRevision)
	if err != nil {
		return err
	}
	steps := runbookOutline(f, o.Service)
	if format != "" {
		return printStructured(f.IO.Out, format, struct {
			*kube.Plan
			Runbook []outlineStep `json:"runbook"`
		}{p, steps})
	}
	printPlan(f.IO, p)
	fmt.Fprintf(f.IO.Out, "\nThe runbook 'rollback run %s' follows:\n", o.Service)
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tSTEP\tBUDGET\tTHIS SERVICE")
	for i, st := range steps {
		budget := "-"
		if d, err := time.ParseDuration(st.Budget); err == nil && d%time.Minute == 0 {
			budget = fmt.Sprintf("< %d min", int(d.Minutes()))
		} else if st.Budget != "" {
			budget = "< " + st.Budget
		}
		fmt.Fprintf(tw, "  %d.\t%s\t%s\t%s\n", i+1, st.Title, budget, st.Applies)
	}
	return tw.Flush()
}

// planUndo reads the workload's history and chooses the rollback target.
func planUndo(ctx context.Context, w *Workload, toRevision int64) (*kube.Plan, error) {
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return nil, err
	}
	return kube.PlanUndo(h, toRevision)
}

// outlineStep is one runbook step as 'rollback plan' shows it.
type outlineStep struct {
	Step    string `json:"step"`
	Title   string `json:"title"`
	Budget  string `json:"budget,omitempty"`
	Applies string `json:"applies"`
}

// runbookOutline lists the steps 'rollback run' would take for the
// service, from the same plan the run executes, with what applies.
func runbookOutline(f *Factory, service string) []outlineStep {
	svc := f.serviceConfig(service)
	p := runbookPlan(f, nil, &store.Incident{}, &runTarget{Service: service}, nil, nil, &kube.Result{})
	var out []outlineStep
	for _, st := range p.Steps {
		o := outlineStep{Step: st.Name, Title: st.Title, Applies: stepApplies(svc, st.Name)}
		if st.Budget > 0 {
			o.Budget = st.Budget.String()
		}
		out = append(out, o)
	}
	return out
}

// stepApplies says whether a step will act for the service, or why not.
func stepApplies(svc *config.Service, step string) string {
	switch step {
	case incident.StepDeclare, incident.StepClose:
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
	case incident.StepSnapshot, incident.StepDownMig:
		if svc == nil || svc.Database == nil {
			return "skipped: no database: in rollback.yaml"
		}
		return "if the abandoned release migrated (its 'rollback db record')"
	case incident.StepSmoke:
		if svc != nil && svc.Verify != nil && len(svc.Verify.Smoke) > 0 {
			return fmt.Sprintf("pods + %d smoke check(s)", len(svc.Verify.Smoke))
		}
		return "pods (no smoke checks in rollback.yaml)"
	case incident.StepMetrics:
		if svc == nil || svc.Verify == nil || (svc.Verify.ErrorRateQuery == "" && svc.Verify.LatencyQuery == "") {
			return "skipped: no verify queries in rollback.yaml"
		}
		return "error rate / p99 from Prometheus"
	case incident.StepFlagOff:
		if svc == nil || svc.Flag == nil {
			return "skipped: no flag: in rollback.yaml"
		}
		return svc.Flag.Provider + " flag " + svc.Flag.Key
	}
	return "yes"
}

// printPlan writes the human form of a plan.
func printPlan(s *IOStreams, p *kube.Plan) {
	fmt.Fprintf(s.Out, "Rollback plan for deployment/%s in namespace %s\n", p.Target.Name, p.Target.Namespace)
	if p.From != nil {
		fmt.Fprintf(s.Out, "  now:    revision %d (%s, health %s)\n", p.From.Number, p.From.ReplicaSet, p.From.Health)
	} else {
		fmt.Fprintf(s.Out, "  now:    no revision matches the current template\n")
	}
	fmt.Fprintf(s.Out, "  target: revision %d (%s, health %s)\n", p.To.Number, p.To.ReplicaSet, p.To.Health)
	fmt.Fprintf(s.Out, "  why:    %s\n", p.Reason)
	for i, img := range p.To.Images {
		from := "(none)"
		if p.From != nil && i < len(p.From.Images) {
			from = p.From.Images[i]
		}
		fmt.Fprintf(s.Out, "  image:  %s -> %s\n", from, img)
	}
	if p.NoOp {
		fmt.Fprintf(s.Out, "Nothing to do: the current template already matches revision %d.\n", p.To.Number)
	}
}
