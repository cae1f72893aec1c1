package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
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
  rollback plan deployment/transaction-service -n payments --to-revision 1 -o json
  rollback plan statefulset/ledger -n payments`,
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
	p, err := engine.PlanRollback(ctx, w, o.ToRevision)
	if err != nil {
		return err
	}
	steps := f.engine(nil, nil).Outline(w.Service)
	if format != "" {
		return printStructured(f.IO.Out, format, struct {
			*kube.Plan
			Runbook []engine.OutlineStep `json:"runbook"`
		}{p, steps})
	}
	printPlan(f.IO, p)
	fmt.Fprintf(f.IO.Out, "\nThe runbook 'rollback run %s' follows:\n", o.Service)
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tSTEP\tBUDGET\tTHIS SERVICE\tWHERE, AND WHY")
	for i, st := range steps {
		budget := "-"
		if d, err := time.ParseDuration(st.Budget); err == nil && d%time.Minute == 0 {
			budget = fmt.Sprintf("< %d min", int(d.Minutes()))
		} else if st.Budget != "" {
			budget = "< " + st.Budget
		}
		fmt.Fprintf(tw, "  %d.\t%s\t%s\t%s\t%s\n", i+1, st.Title, budget, st.Applies, st.Why)
	}
	return tw.Flush()
}

// printPlan writes the human form of a plan.
func printPlan(s *IOStreams, p *kube.Plan) {
	fmt.Fprintf(s.Out, "Rollback plan for %s in namespace %s\n", p.Target.Ref(), p.Target.Namespace)
	if p.From != nil {
		fmt.Fprintf(s.Out, "  now:    revision %d (%s, health %s)\n", p.From.Number, p.From.Object, p.From.Health)
	} else {
		fmt.Fprintf(s.Out, "  now:    no revision matches the current template\n")
	}
	fmt.Fprintf(s.Out, "  target: revision %d (%s, health %s)\n", p.To.Number, p.To.Object, p.To.Health)
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
