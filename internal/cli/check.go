package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"text/tabwriter"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"rollback/internal/check"
	"rollback/internal/kube"
	"rollback/internal/migrate"
	"rollback/internal/store"
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
	// The service's database settings in rollback.yaml, where flags are silent.
	snapshotMode := ""
	if svc := f.serviceConfig(o.Service); svc != nil && svc.Database != nil {
		o.DB.DSNEnv = svc.Database.DSNEnv
		o.DB.Dir = firstNonEmpty(o.DB.Dir, svc.Database.Dir)
		if o.DB.Format == "auto" && svc.Database.Format != "" {
			o.DB.Format = svc.Database.Format
		}
		snapshotMode = svc.Database.Snapshot
	}
	var results []check.Result
	add := func(r check.Result) { results = append(results, r) }
	skip := func(pre, why string) { add(check.Result{Prerequisite: pre, Status: check.Skip, Detail: why}) }

	// The Deployment: the manifest, else the cluster.
	var d *appsv1.Deployment
	w, werr := f.Resolve(o.Service)
	if o.File != "" {
		b, err := os.ReadFile(o.File)
		if err != nil {
			return usageError{err: err}
		}
		d = &appsv1.Deployment{}
		if err := yaml.UnmarshalStrict(b, d); err != nil || d.Kind != "Deployment" {
			if err == nil {
				err = fmt.Errorf("kind %q", d.Kind)
			}
			return usagef("%s: not a single apps/v1 Deployment manifest: %v", o.File, err)
		}
	} else if werr != nil {
		return werr
	} else if d, err = w.Client.AppsV1().Deployments(w.Target.Namespace).Get(ctx, w.Target.Name, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("read deployment/%s: %w (or pass the manifest with -f)", w.Target.Name, err)
	}
	add(check.Image(d))
	add(check.History(d))
	add(check.Strategy(d))

	const prev = "Previous revision still in the cluster"
	if werr != nil {
		skip(prev, "cluster not reachable: "+werr.Error())
	} else if h, err := kube.GetHistory(ctx, w.Client, w.Target); err != nil {
		if o.File != "" && errors.Is(err, kube.ErrNotFound) {
			add(check.Result{Prerequisite: prev, Status: check.Fail, Detail: "the Deployment does not exist yet: a first deployment has nothing to roll back to"})
		} else {
			skip(prev, err.Error())
		}
	} else {
		cur := h.Current()
		older := 0
		for _, r := range h.Revisions {
			if o.File != "" || cur == nil || r.Number < cur.Number {
				older++
			}
		}
		r := check.Result{Prerequisite: prev, Status: check.Pass, Detail: fmt.Sprintf("%d revision(s) to roll back to", older),
			HowToEnsure: "keep revisionHistoryLimit ≥ 3 and do not delete old ReplicaSets"}
		if older == 0 {
			r.Status, r.Detail = check.Fail, "no older revision in the cluster"
		}
		add(r)
	}

	const down = "Down migration written and tested (drilled)"
	if o.DB.Dir == "" {
		skip(down, "no --dir: the release brings no migrations that rollback knows of")
	} else {
		add(checkMigrations(ctx, f, o))
	}

	const reviewed = "Rollback procedure reviewed by on-call before deployment"
	if o.Release == "" {
		add(check.Result{Prerequisite: reviewed, Status: check.Fail, Detail: "no --release: which release's sign-off?", HowToEnsure: "rollback runbook approve SERVICE --release VERSION"})
	} else if s, err := f.openStore(ctx); err != nil {
		return err
	} else {
		key, kerr := f.ServiceKey(o.Service)
		if kerr != nil {
			s.Close()
			return kerr
		}
		a, err := s.GetApproval(ctx, key, o.Release)
		s.Close()
		r := check.Result{Prerequisite: reviewed, HowToEnsure: fmt.Sprintf("rollback runbook approve %s --release %s", o.Service, o.Release)}
		switch {
		case errors.Is(err, store.ErrNotFound):
			r.Status, r.Detail = check.Fail, "nobody signed off the runbook for "+o.Release
		case err != nil:
			return err
		default:
			r.Status, r.Detail = check.Pass, fmt.Sprintf("signed off by %s at %s", a.By, a.At.UTC().Format("2006-01-02T15:04Z"))
		}
		add(r)
	}

	const snap = "Database snapshot before a down migration"
	if o.DB.Dir == "" {
		skip(snap, "no --dir: no database migrations")
	} else if snapshotMode == "none" {
		add(check.Result{Prerequisite: snap, Status: check.Fail, Detail: "rollback.yaml turns it off (database.snapshot: none)", HowToEnsure: "set database.snapshot to tables or full"})
	} else if p, err := exec.LookPath("pg_dump"); err != nil {
		add(check.Result{Prerequisite: snap, Status: check.Fail, Detail: "pg_dump not found: 'rollback db undo' could not snapshot first", HowToEnsure: "install PostgreSQL's client tools"})
	} else {
		add(check.Result{Prerequisite: snap, Status: check.Pass, Detail: "taken automatically by 'rollback run' and 'rollback db undo' with " + p})
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

// checkMigrations: every migration the release brings has an undo that
// passed a drill.
func checkMigrations(ctx context.Context, f *Factory, o *CheckOptions) check.Result {
	r := check.Result{Prerequisite: "Down migration written and tested (drilled)", HowToEnsure: "write the undo script, then run 'rollback db drill' against a copy of production"}
	src, err := migrate.LoadDir(o.DB.Dir)
	if err != nil {
		r.Status, r.Detail = check.Fail, err.Error()
		return r
	}
	var since migrate.Version
	dbName := ""
	if dsn, _ := migrate.LookupDSN(o.DB.DSN, o.DB.DSNEnv, f.IO.Getenv); dsn != "" {
		s, err := o.DB.open(ctx, f, true)
		if err != nil {
			r.Status, r.Detail = check.Fail, err.Error()
			return r
		}
		st, err := s.State(ctx)
		s.Close()
		if err != nil {
			r.Status, r.Detail = check.Fail, err.Error()
			return r
		}
		since, dbName = st.Current, migrate.DatabaseName(dsn)
	} else if o.Since != "" {
		if since, err = migrate.ParseVersion(o.Since); err != nil {
			r.Status, r.Detail = check.Fail, "--since-version: "+err.Error()
			return r
		}
	} else {
		r.Status, r.Detail = check.Skip, "which migrations are new? give a database ("+migrate.DSNSources+") or --since-version"
		return r
	}
	logPath := o.DrillLog
	if logPath == "" {
		var err error
		if logPath, err = f.statePath("drills.jsonl"); err != nil {
			r.Status, r.Detail = check.Fail, err.Error()
			return r
		}
	}
	var problems, ok []string
	for _, m := range src.Migrations {
		if m.Version.Compare(since) <= 0 {
			continue
		}
		if m.Undo == nil {
			problems = append(problems, fmt.Sprintf("%s has no undo script", m.Up.Path))
			continue
		}
		undo, err := os.ReadFile(m.Undo.Path)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		tested := false
		if dbName != "" {
			tested, _, _ = migrate.DrillLog{Path: logPath}.Tested(dbName, m.Version.String(), string(undo))
		}
		if !tested {
			problems = append(problems, fmt.Sprintf("the undo of %s has not passed a drill", m.Version))
			continue
		}
		ok = append(ok, m.Version.String())
	}
	switch {
	case len(problems) > 0:
		r.Status, r.Detail = check.Fail, fmt.Sprint(problems)
	case len(ok) == 0:
		r.Status, r.Detail = check.Pass, "the release brings no migrations"
	default:
		r.Status, r.Detail = check.Pass, fmt.Sprintf("undo scripts written and drilled for %v", ok)
	}
	return r
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
