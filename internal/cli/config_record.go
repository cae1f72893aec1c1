package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/kube"
)

func newConfigCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Keep the ConfigMaps and Secrets of a release, so a rollback restores them with its pod template",
		Args:  exactArgs(0, "a subcommand"),
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "record SERVICE",
		Short: "Keep a copy of what the current revision mounts (run at release time, beside 'rollback db record')",
		Long: `A Deployment's revision holds its pod template, not the content of the
ConfigMaps and Secrets it mounts or references: rolling the template back
leaves the new config in place. 'config record' keeps a copy of each one the
current revision references, in the cluster beside the original
(NAME-rbk-HASH, HASH the revision's pod hash; Secret content never leaves the
cluster). 'rollback run' restores the target revision's copies before the undo
restarts the pods, and keeps the abandoned revision's first. ConfigMaps and
Secrets named by kustomize's hash suffix need no copy while the old objects
are not pruned.`,
		Example: `  rollback config record transaction-service
  rollback config record deployment/transaction-service -n payments`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			w, err := f.Resolve(args[0])
			if err != nil {
				return err
			}
			cur, lines, err := kube.KeepCurrentConfig(cmd.Context(), w.Client, w.Target)
			if err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "%s revision %d (%s):\n", w.Target.Ref(), cur.Number, cur.Object)
			if len(lines) == 0 {
				fmt.Fprintln(f.IO.Out, "  mounts no ConfigMap or Secret")
			}
			for _, l := range lines {
				fmt.Fprintln(f.IO.Out, "  "+l)
			}
			return nil
		},
	})
	return cmd
}
