// Command rollback-sandbox runs a real, local Kubernetes control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) with a
// kwok-simulated node, for trying and testing rollback.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"rollback/sandbox/internal/cluster"
	"rollback/sandbox/internal/components"
	"rollback/sandbox/internal/demo"
	"rollback/sandbox/internal/slackstub"
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
	root.AddCommand(up, env, down, newDemoServiceCmd(&dir), newSlackCmd())
	return root
}

func newDemoServiceCmd(dir *string) *cobra.Command {
	var o demo.Options
	var listen string
	cmd := &cobra.Command{
		Use:   "demo-service",
		Short: "Run the stand-in for transaction-service: behaves as the Ready pods' versions do, exports metrics",
		Long: `Serve an HTTP API whose answers follow the image versions of the Ready pods
of a Deployment in the sandbox: a request is served by a random Ready pod, and
a pod on a --broken version answers --error-rate of requests with 500 and adds
--extra-latency. Prometheus metrics on /metrics: http_requests_total{code,version}
and http_request_duration_seconds{version}. With --rps it sends itself load.`,
		Example: `  rollback-sandbox demo-service --dir /tmp/sbx -n payments --deployment transaction-service \
    --listen 127.0.0.1:8080 --broken v1.2.0 --rps 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(*dir)
			if err != nil {
				return err
			}
			rc, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig(abs))
			if err != nil {
				return fmt.Errorf("no sandbox kubeconfig in %s (start one with 'rollback-sandbox up --dir %s'): %w", abs, abs, err)
			}
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "demo-service listening on http://%s (metrics on /metrics)\n", l.Addr())
			return demo.New(cs, o).Run(cmd.Context(), l)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.Namespace, "namespace", "n", "default", "namespace of the Deployment")
	fl.StringVar(&o.Deployment, "deployment", "transaction-service", "the Deployment whose pods serve")
	fl.StringVar(&o.Selector, "selector", "", "a label selector for the serving pods instead of the Deployment's (e.g. a Flagger canary's: 'app in (web, web-primary)')")
	fl.StringVar(&listen, "listen", "127.0.0.1:0", "address to serve on (loopback)")
	fl.StringSliceVar(&o.Broken, "broken", []string{"v1.2.0"}, "image tags that misbehave")
	fl.Float64Var(&o.ErrorRate, "error-rate", 0.05, "share of a broken pod's answers that are 500")
	fl.DurationVar(&o.ExtraLatency, "extra-latency", 300*time.Millisecond, "latency a broken pod adds")
	fl.DurationVar(&o.BaseLatency, "base-latency", 10*time.Millisecond, "latency of a healthy answer (plus up to as much again)")
	fl.Float64Var(&o.RPS, "rps", 0, "requests per second to send to itself (0: none)")
	return cmd
}

func newSlackCmd() *cobra.Command {
	var listen, tokenEnv string
	cmd := &cobra.Command{
		Use:   "slack",
		Short: "Run a local stand-in for Slack's Web API (conversations.create, chat.postMessage)",
		Long: `Serve the two Slack Web API methods rollback uses, with Slack's request and
answer shapes, and print every channel and message as it arrives. Point
rollback.yaml's notify.slack.apiURL at http://ADDR/api. The bot token it
accepts is read from the environment variable --token-env names (any token
when it is unset).`,
		Example: `  SLACK_BOT_TOKEN=xoxb-demo rollback-sandbox slack --listen 127.0.0.1:18081`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "slack stand-in listening on http://%s (API base http://%s/api)\n", l.Addr(), l.Addr())
			srv := &http.Server{Handler: &slackstub.Server{Token: os.Getenv(tokenEnv), Log: cmd.OutOrStdout()}, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				_ = srv.Close()
			}()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to serve on (loopback)")
	cmd.Flags().StringVar(&tokenEnv, "token-env", "SLACK_BOT_TOKEN", "environment variable holding the accepted bot token")
	return cmd
}
