// Package cli is rollback's command line: one file per command, each with
// an Options struct filled by flags and a run function with no cobra in
// it. Only Main prints errors and maps them to exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/kinds"
)

// Version is set at build time with -ldflags "-X github.com/rollback-dev/rollback/internal/cli.Version=...".
var Version = "dev"

// Main runs the command line and returns the exit code. progName is the
// name the binary was called by: as kubectl-rollback it is a kubectl plugin.
func Main(ctx context.Context, progName string, args []string, io *IOStreams) (code int) {
	// A bug must not end a rollback as a raw crash: it is reported as an
	// internal error (steps already turn their own panics into failures,
	// journaled and resumable).
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(io.ErrOut, "internal error: panic: %v\n%s\nplease report this; if an incident was opened, 'rollback status' shows it and 'rollback resume' continues it\n", r, debug.Stack())
			code = ExitError
		}
	}()
	f := &Factory{IO: io, Now: time.Now}
	root := NewRootCmd(f, progName)
	root.SetArgs(args)
	root.SetIn(io.In)
	root.SetOut(io.Out)
	root.SetErr(io.ErrOut)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code = ExitCode(err)
	if ctx.Err() != nil && code == ExitError {
		code = ExitInterrupted
	}
	if !errors.Is(err, errSilent) {
		fmt.Fprintf(io.ErrOut, "error: %v\n", err)
	}
	var ue usageError
	if errors.As(err, &ue) && ue.showHelp {
		fmt.Fprintf(io.ErrOut, "Run '%s --help' for usage.\n", root.CommandPath())
	}
	return code
}

// errSilent wraps an error that has already been reported to the user.
var errSilent = errors.New("already reported")

// NewRootCmd builds the command tree.
func NewRootCmd(f *Factory, progName string) *cobra.Command {
	use := "rollback"
	if progName == "kubectl-rollback" {
		use = "kubectl rollback"
	}
	root := &cobra.Command{
		Use:   use,
		Short: "Plan, run and verify deployment rollbacks in minutes",
		Long: `rollback turns the roll-backward runbook into one command: it finds the
last known-good revision of a Deployment, undoes the rollout with kubectl's
semantics, watches it until it has rolled out, verifies the running image,
and records which revisions are good and bad on the cluster itself.

SERVICE is a service named in rollback.yaml (--config, $ROLLBACK_CONFIG or
./rollback.yaml), or KIND/NAME as kubectl takes it:

` + kinds.Help(),
		Example: `  rollback history deployment/transaction-service -n payments
  rollback plan transaction-service
  rollback run transaction-service --yes
  rollback run deployment/transaction-service -n payments --to-revision 1 --dry-run=server
  rollback mark transaction-service 2 bad --reason "P1: 5xx spike"
  kubectl rollback run deployment/transaction-service -n payments   # as a kubectl plugin`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.ConfigPath, "config", "", "path of rollback.yaml (default $ROLLBACK_CONFIG, then ./rollback.yaml)")
	pf.StringVar(&f.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	pf.StringVar(&f.Context, "context", "", "kubeconfig context to use")
	pf.StringVarP(&f.Namespace, "namespace", "n", "", "namespace of the workload (default: the service's, then the context's)")
	pf.StringVar(&f.Server, "server", "", "a 'rollback serve' to work through (its API) instead of the store: status, block, unblock, gate, run, resume, approve, decline, close (default $ROLLBACK_SERVER; token in $ROLLBACK_SERVER_TOKEN)")
	pf.StringVar(&f.StorePath, "store", "", "state store: an SQLite file or a postgres:// URL (default $ROLLBACK_STORE, then the state directory's rollback.db)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{err: err, showHelp: true}
	})
	root.AddCommand(
		newHistoryCmd(f),
		newPlanCmd(f),
		newRunCmd(f),
		newMarkCmd(f),
		newDBCmd(f),
		newDecideCmd(f),
		newVerifyCmd(f),
		newWatchCmd(f),
		newBlockCmd(f),
		newUnblockCmd(f),
		newGateCmd(f),
		newCheckCmd(f),
		newRunbookCmd(f),
		newStatusCmd(f),
		newResumeCmd(f),
		newCloseCmd(f),
		newGitOpsCmd(f),
		newConfigCmd(f),
		newReportCmd(f),
		newServeCmd(f),
		newApproveCmd(f),
		newDeclineCmd(f),
		newVersionCmd(f),
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage error that says what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{err: fmt.Errorf("%s expects %s, got %d argument(s)", cmd.CommandPath(), what, len(args)), showHelp: true}
		}
		return nil
	}
}
