package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newGitOpsCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gitops",
		Short: "The GitOps reconcilers (Argo CD, Flux) rollback paused",
		Args:  exactArgs(0, "a subcommand"),
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "resume INCIDENT",
		Short: "Resume the reconciler an incident paused, once the revert is in Git",
		Long: `'rollback run' pauses the Argo CD Application (automated sync and self-heal
off) or Flux Kustomization/HelmRelease (spec.suspend) that applies the
workload, so it does not re-apply the broken version from Git. It stays
paused, and 'rollback status' says so, until the revert is in Git and this
command puts back what was there before (recorded on the reconciler's
object and in the incident's journal).`,
		Example: `  rollback gitops resume INC-20261127-1`,
		Args:    exactArgs(1, "one INCIDENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			msg, err := f.engine(s, nil).ResumeGitOps(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(f.IO.Out, msg)
			return nil
		},
	})
	return cmd
}
