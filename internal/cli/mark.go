package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/kube"
)

// MarkOptions are the flags of `rollback mark`.
type MarkOptions struct {
	Service  string
	Revision int64
	Health   kube.Health
	Reason   string
}

func newMarkCmd(f *Factory) *cobra.Command {
	o := &MarkOptions{}
	cmd := &cobra.Command{
		Use:   "mark SERVICE REVISION good|bad|unknown",
		Short: "Mark a revision good or bad by hand (unknown clears the mark)",
		Long: `Set the health mark of one revision. Marks are annotations on the
revision's ReplicaSet, so everyone who reads the cluster sees them.
'rollback run' never rolls back to a revision marked bad, and prefers the
newest revision marked good.`,
		Example: `  rollback mark transaction-service 2 bad --reason "INC-42: 5xx on /pay"
  rollback mark deployment/transaction-service -n payments 1 good
  rollback mark transaction-service 2 unknown`,
		Args: exactArgs(3, "SERVICE, REVISION and good|bad|unknown"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			n, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || n <= 0 {
				return usagef("REVISION must be a positive number, got %q", args[1])
			}
			o.Revision = n
			if o.Health, err = kube.ParseHealth(args[2]); err != nil {
				return usageError{err: err}
			}
			return runMark(cmd.Context(), f, o)
		},
	}
	cmd.Flags().StringVar(&o.Reason, "reason", "", "why the revision is good or bad (shown in history and plans)")
	return cmd
}

func runMark(ctx context.Context, f *Factory, o *MarkOptions) error {
	w, err := f.Resolve(o.Service)
	if err != nil {
		return err
	}
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return err
	}
	r := h.Find(o.Revision)
	if r == nil {
		return fmt.Errorf("%w: revision %d is not in the history of %s; see 'rollback history'", kube.ErrRevisionNotFound, o.Revision, w.Target.Ref())
	}
	if err := kube.Mark(ctx, w.Client, w.Target, r.Object, o.Health, o.Reason, f.Now()); err != nil {
		return err
	}
	fmt.Fprintf(f.IO.Out, "revision %d of %s (%s) marked %s\n", r.Number, w.Target.Ref(), r.Object, o.Health)
	return nil
}
