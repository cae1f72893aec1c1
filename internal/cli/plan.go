package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"rollback/internal/kube"
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
Nothing in the cluster is changed.`,
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
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return err
	}
	p, err := kube.PlanUndo(h, o.ToRevision)
	if err != nil {
		return err
	}
	if format != "" {
		return printStructured(f.IO.Out, format, p)
	}
	printPlan(f.IO, p)
	return nil
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
