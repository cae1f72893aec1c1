// Command rollback-sandbox runs a real, local Kubernetes control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) with a
// kwok-simulated node, for trying and testing rollback.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"rollback/sandbox/internal/cluster"
	"rollback/sandbox/internal/components"
)

func main() {
	// The sandbox starts itself once per control-plane component.
	if len(os.Args) > 2 && os.Args[1] == "component" {
		c, err := components.Command(os.Args[2], os.Args[3:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "rollback-sandbox:", err)
			os.Exit(2)
		}
		if err := c.Execute(); err != nil {
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "rollback-sandbox:", err)
		if errors.Is(err, cluster.ErrRunning) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

func defaultDir() string {
	if d := os.Getenv("ROLLBACK_SANDBOX_DIR"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "rollback", "sandbox")
}

func newRoot() *cobra.Command {
	var dir string
	root := &cobra.Command{
		Use:   "rollback-sandbox",
		Short: "A real local Kubernetes control plane for trying rollback",
		Long: `rollback-sandbox starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (a simulated node, so pods become Ready without
containers) on loopback ports, and writes a kubeconfig for them.`,
		Example: `  rollback-sandbox up --dir /tmp/sbx
  eval "$(rollback-sandbox env --dir /tmp/sbx)"
  kubectl get nodes
  rollback-sandbox down --dir /tmp/sbx`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&dir, "dir", defaultDir(), "directory for the sandbox's state, certificates, data and logs ($ROLLBACK_SANDBOX_DIR)")

	up := &cobra.Command{
		Use:   "up",
		Short: "Start the sandbox and wait until a pod can become Ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			st, err := cluster.Up(cmd.Context(), abs, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), `Sandbox is up: API server %s
  export KUBECONFIG=%s
  kubectl get nodes
Stop it with: rollback-sandbox down --dir %s
`, st.Server, cluster.Kubeconfig(abs), abs)
			return nil
		},
	}
	env := &cobra.Command{
		Use:   "env",
		Short: "Print the shell line that points kubectl and rollback at the sandbox",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			st, err := cluster.ReadState(abs)
			if err != nil || !st.Running() {
				return fmt.Errorf("no running sandbox in %s; start one with 'rollback-sandbox up --dir %s'", abs, abs)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "export KUBECONFIG=%s\n", cluster.Kubeconfig(abs))
			return nil
		},
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Stop everything the sandbox started and remove its files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			return cluster.Down(abs, cmd.ErrOrStderr())
		},
	}
	root.AddCommand(up, env, down)
	return root
}
