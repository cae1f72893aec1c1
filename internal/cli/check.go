package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"text/tabwriter"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/rollback-dev/rollback/internal/check"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/store"
)

// ErrCheckFailed means a prerequisite for a safe rollback is missing.
var ErrCheckFailed = errors.New("a rollback prerequisite is not met")

// CheckOptions are the flags of `rollback check`.
type CheckOptions struct {
	Service  string
	File     string
	Release  string
	DB       DBOptions
	Since    string
	DrillLog string
	Output   string
}

func newCheckCmd(f *Factory) *cobra.Command {
	o := &CheckOptions{}
	cmd := &cobra.Command{
		Use:   "check SERVICE [-f deployment.yaml]",
		Short: "Before a deployment: check the runbook's prerequisites for a safe rollback (for CI)",
		Long: `Check the runbook's prerequisites table before deploying a release:
  - the image is pinned and versioned (a version tag or a digest, never :latest);
  - revisionHistoryLimit ≥ 3;
  - RollingUpdate with maxUnavailable 0;
  - the previous revision is still in the cluster;
  - every migration the release brings has a down migration, and it passed a
    drill ('rollback db drill');
  - the rollback runbook was reviewed ('rollback runbook approve');
  - a database snapshot can be taken (pg_dump available).
The Deployment comes from -f (the manifest about to be applied) or the cluster.
Prints a table (or -o json); exits 5 when a prerequisite fails. Checks that
cannot run here say why and do not fail.`,
		Example: `  rollback check transaction-service -f k8s/deployment.yaml --release v1.2.0 --dir migrations
  rollback check deployment/transaction-service -n payments --release v1.2.0 -o json`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			return runCheck(cmd.Context(), f, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.File, "filename", "f", "", "the Deployment manifest about to be applied")
	fl.StringVar(&o.Release, "release", "", "the release about to be deployed (for the runbook sign-off)")
	fl.StringVar(&o.DB.Dir, "dir", "", "migration scripts: check down migrations for the ones not yet applied")
	fl.StringVar(&o.DB.DSN, "dsn", "", "database (default $ROLLBACK_DB_DSN): which migrations are new, and the drill log")
	fl.StringVar(&o.Since, "since-version", "", "without a database: migrations newer than this are the release's")
	fl.StringVar(&o.DrillLog, "drill-log", "", "drill log (default: the state directory's drills.jsonl)")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	o.DB.Format = "auto"
	return cmd
}

func runCheck(ctx context.Context, f *Factory, o *CheckOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	key, err := f.ServiceKey(o.Service)
	if err != nil {
		return err
	}
	req := engine.CheckRequest{Service: key, Release: o.Release, DSN: o.DB.DSN, Dir: o.DB.Dir, Format: o.DB.Format,
		Since: o.Since, DrillLog: o.DrillLog}
	req.Workload, req.WorkloadErr = f.Resolve(o.Service)
	if o.File != "" {
		b, err := os.ReadFile(o.File)
		if err != nil {
			return usageError{err: err}
		}
		d := &appsv1.Deployment{}
		if err := yaml.UnmarshalStrict(b, d); err != nil || d.Kind != "Deployment" {
			if err == nil {
				err = fmt.Errorf("kind %q", d.Kind)
			}
			return usagef("%s: not a single apps/v1 Deployment manifest: %v", o.File, err)
		}
		req.Manifest = d
	}
	var s store.Store
	if o.Release != "" { // the sign-off is in the store
		if s, err = f.openStore(ctx); err != nil {
			return err
		}
		defer s.Close()
	}
	results, err := f.engine(s, nil).Check(ctx, req)
	if errors.Is(err, engine.ErrNotADeployment) {
		return usageError{err: err}
	}
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		if r.Status == check.Fail {
			failed++
		}
	}
	if format != "" {
		if err := printStructured(f.IO.Out, format, map[string]any{"service": o.Service, "passed": failed == 0, "checks": results}); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PREREQUISITE\tSTATUS\tDETAIL")
		for _, r := range results {
			detail := r.Detail
			if r.Status == check.Fail && r.HowToEnsure != "" {
				detail += " — fix: " + r.HowToEnsure
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Prerequisite, r.Status, detail)
		}
		tw.Flush()
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d prerequisite(s) failed", ErrCheckFailed, failed)
	}
	return nil
}

func newRunbookCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{Use: "runbook", Short: "Runbook sign-offs"}
	var release, by, note string
	approve := &cobra.Command{
		Use:     "approve SERVICE --release VERSION",
		Short:   "Record that the on-call engineer reviewed the rollback runbook for a release",
		Example: "  rollback runbook approve transaction-service --release v1.2.0 --by alice",
		Args:    exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if release == "" {
				return usagef("--release is required: the release whose rollback was reviewed")
			}
			if by == "" {
				if u, err := user.Current(); err == nil {
					by = u.Username
				}
			}
			key, err := f.ServiceKey(args[0])
			if err != nil {
				return err
			}
			s, err := f.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Approve(cmd.Context(), store.Approval{Service: key, Release: release, By: by, Note: note, At: f.Now()}); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "runbook for %s %s signed off by %s\n", args[0], release, by)
			return nil
		},
	}
	approve.Flags().StringVar(&release, "release", "", "the release (required)")
	approve.Flags().StringVar(&by, "by", "", "who reviewed it (default: the current user)")
	approve.Flags().StringVar(&note, "note", "", "a remark")
	cmd.AddCommand(approve)
	return cmd
}
