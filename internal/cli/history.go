package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/kube"
)

// HistoryOptions are the flags of `rollback history`.
type HistoryOptions struct {
	Service string
	Output  string
}

func newHistoryCmd(f *Factory) *cobra.Command {
	o := &HistoryOptions{}
	cmd := &cobra.Command{
		Use:   "history SERVICE",
		Short: "Show every revision with its images, change-cause, age, replicas and health mark",
		Long: `Show a workload's rollout history, as kubectl rollout history reads it (a
Deployment's ReplicaSets, a StatefulSet's or DaemonSet's ControllerRevisions):
revision, image(s), change-cause, age, ready/current pods, and the health mark
(good, bad or unknown) that rollback keeps on each revision's object. The
current revision is marked with '*'.`,
		Example: `  rollback history transaction-service
  rollback history deployment/transaction-service -n payments -o json
  rollback history statefulset/ledger -n payments`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			return runHistory(cmd.Context(), f, o)
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml (default: a table)")
	return cmd
}

// historyView is the -o json|yaml shape of `rollback history`.
type historyView struct {
	Namespace  string          `json:"namespace"`
	Kind       kube.Kind       `json:"kind"`
	Deployment string          `json:"deployment,omitempty"` // kept for Deployments' consumers
	Name       string          `json:"name"`
	Current    int64           `json:"currentRevision"`
	Revisions  []kube.Revision `json:"revisions"`
}

func runHistory(ctx context.Context, f *Factory, o *HistoryOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	w, err := f.Resolve(o.Service)
	if err != nil {
		return err
	}
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return err
	}
	v := historyView{Namespace: w.Target.Namespace, Kind: w.Target.Of(), Name: w.Target.Name, Revisions: h.Revisions}
	if w.Target.Of() == kube.KindDeployment {
		v.Deployment = w.Target.Name
	}
	if c := h.Current(); c != nil {
		v.Current = c.Number
	}
	if v.Revisions == nil {
		v.Revisions = []kube.Revision{}
	}
	if format != "" {
		return printStructured(f.IO.Out, format, v)
	}
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REVISION\tIMAGES\tREADY\tAGE\tHEALTH\tCHANGE-CAUSE")
	now := f.Now()
	for _, r := range h.Revisions {
		mark := " "
		if r.Current {
			mark = "*"
		}
		cause := r.ChangeCause
		if cause == "" {
			cause = "<none>"
		}
		fmt.Fprintf(tw, "%d%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.Number, mark, strings.Join(r.Images, ","),
			r.Ready, r.Replicas, age(now.Sub(r.Created)), r.Health, cause)
	}
	return tw.Flush()
}
