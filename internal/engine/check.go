package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollback-dev/rollback/internal/check"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/store"
)

// CheckRequest is the runbook's prerequisites check for a release about to
// be deployed (for CI).
type CheckRequest struct {
	Service string // the service key (approvals are kept under it)
	// Workload is the service in the cluster; WorkloadErr why it could not
	// be resolved (the checks that need the cluster then say so).
	Workload    *Workload
	WorkloadErr error
	// Manifest is the Deployment about to be applied (-f); nil: the
	// cluster's.
	Manifest *appsv1.Deployment
	Release  string
	// The database: migrations in Dir; which are new comes from the
	// database's history (DSN in migrate.DSNSources' order), else Since.
	DSN, Dir, Format string
	Since            string
	DrillLog         string
}

// ErrNotADeployment: the prerequisites table reads a Deployment's spec.
var ErrNotADeployment = errors.New("rollback check reads a Deployment (pass its manifest with -f)")

// Check runs the runbook's prerequisites table. An error means the check
// could not run at all; a failed prerequisite is a result.
func (e *Engine) Check(ctx context.Context, r CheckRequest) ([]check.Result, error) {
	snapshotMode, dsnEnv := "", ""
	if svc := e.service(r.Service); svc != nil && svc.Database != nil {
		dsnEnv = svc.Database.DSNEnv
		r.Dir = cmp.Or(r.Dir, svc.Database.Dir)
		if (r.Format == "" || r.Format == "auto") && svc.Database.Format != "" {
			r.Format = svc.Database.Format
		}
		snapshotMode = svc.Database.Snapshot
	}
	var results []check.Result
	add := func(res check.Result) { results = append(results, res) }
	skip := func(pre, why string) { add(check.Result{Prerequisite: pre, Status: check.Skip, Detail: why}) }

	d := r.Manifest
	w := r.Workload
	if d == nil {
		if r.WorkloadErr != nil {
			return nil, r.WorkloadErr
		}
		if w.Target.Of() != kube.KindDeployment {
			return nil, fmt.Errorf("%w; %s is a %s", ErrNotADeployment, w.Target.Ref(), w.Target.Of())
		}
		var err error
		if d, err = w.Client.AppsV1().Deployments(w.Target.Namespace).Get(ctx, w.Target.Name, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("read %s: %w (or pass the manifest with -f)", w.Target.Ref(), err)
		}
	}
	add(check.Image(d))
	add(check.History(d))
	add(check.Strategy(d))

	const prev = "Previous revision still in the cluster"
	if r.WorkloadErr != nil {
		skip(prev, "cluster not reachable: "+r.WorkloadErr.Error())
	} else if h, err := kube.GetHistory(ctx, w.Client, w.Target); err != nil {
		if r.Manifest != nil && errors.Is(err, kube.ErrNotFound) {
			add(check.Result{Prerequisite: prev, Status: check.Fail, Detail: "the Deployment does not exist yet: a first deployment has nothing to roll back to"})
		} else {
			skip(prev, err.Error())
		}
	} else {
		cur := h.Current()
		older := 0
		for _, rv := range h.Revisions {
			if r.Manifest != nil || cur == nil || rv.Number < cur.Number {
				older++
			}
		}
		res := check.Result{Prerequisite: prev, Status: check.Pass, Detail: fmt.Sprintf("%d revision(s) to roll back to", older),
			HowToEnsure: "keep revisionHistoryLimit ≥ 3 and do not delete old ReplicaSets"}
		if older == 0 {
			res.Status, res.Detail = check.Fail, "no older revision in the cluster"
		}
		add(res)
	}

	const down = "Down migration written and tested (drilled)"
	if r.Dir == "" {
		skip(down, "no --dir: the release brings no migrations that rollback knows of")
	} else {
		add(e.checkMigrations(ctx, r, dsnEnv))
	}

	const keyed = "What the release destroys can be given back by key"
	if r.Dir == "" {
		skip(keyed, "no --dir: no database migrations")
	} else {
		add(e.checkDestroyed(ctx, r, dsnEnv))
	}

	const reviewed = "Rollback procedure reviewed by on-call before deployment"
	if r.Release == "" {
		add(check.Result{Prerequisite: reviewed, Status: check.Fail, Detail: "no --release: which release's sign-off?", HowToEnsure: "rollback runbook approve SERVICE --release VERSION"})
	} else {
		a, err := e.Store.GetApproval(ctx, r.Service, r.Release)
		res := check.Result{Prerequisite: reviewed, HowToEnsure: fmt.Sprintf("rollback runbook approve %s --release %s", r.Service, r.Release)}
		switch {
		case errors.Is(err, store.ErrNotFound):
			res.Status, res.Detail = check.Fail, "nobody signed off the runbook for "+r.Release
		case err != nil:
			return nil, err
		default:
			res.Status, res.Detail = check.Pass, fmt.Sprintf("signed off by %s at %s", a.By, a.At.UTC().Format("2006-01-02T15:04Z"))
		}
		add(res)
	}

	const snap = "Database snapshot before a down migration"
	if r.Dir == "" {
		skip(snap, "no --dir: no database migrations")
	} else if snapshotMode == "none" {
		add(check.Result{Prerequisite: snap, Status: check.Fail, Detail: "rollback.yaml turns it off (database.snapshot: none)", HowToEnsure: "set database.snapshot to tables or full"})
	} else if p, err := exec.LookPath("pg_dump"); err != nil {
		add(check.Result{Prerequisite: snap, Status: check.Pass, Detail: "pg_dump not installed: the undo's tables are snapshotted through the driver (data only, CSV per table; install PostgreSQL's client tools for a pg_dump archive with the DDL)"})
	} else {
		add(check.Result{Prerequisite: snap, Status: check.Pass, Detail: "taken automatically by 'rollback run' and 'rollback db undo' with " + p})
	}
	return results, nil
}

// checkMigrations: every migration the release brings has an undo that
// passed a drill.
func (e *Engine) checkMigrations(ctx context.Context, r CheckRequest, dsnEnv string) check.Result {
	res := check.Result{Prerequisite: "Down migration written and tested (drilled)", HowToEnsure: "write the undo script, then run 'rollback db drill' against a copy of production"}
	fail := func(detail string) check.Result { res.Status, res.Detail = check.Fail, detail; return res }
	src, err := migrate.LoadDir(r.Dir)
	if err != nil {
		return fail(err.Error())
	}
	var since migrate.Version
	dbName := ""
	if dsn, _ := migrate.LookupDSN(r.DSN, dsnEnv, e.getenv); dsn != "" {
		p, err := migrate.Open(ctx, migrate.ProviderOptions{DSN: dsn, Dir: r.Dir, Format: r.Format, NeedSource: true})
		if err != nil {
			return fail(err.Error())
		}
		st, err := p.State(ctx)
		p.Close()
		if err != nil {
			return fail(err.Error())
		}
		since, dbName = st.Current, migrate.DatabaseName(dsn)
	} else if r.Since != "" {
		if since, err = migrate.ParseVersion(r.Since); err != nil {
			return fail("--since-version: " + err.Error())
		}
	} else {
		res.Status, res.Detail = check.Skip, "which migrations are new? give a database ("+migrate.DSNSources+") or --since-version"
		return res
	}
	logPath := r.DrillLog
	if logPath == "" {
		if e.StateDir == nil {
			return fail("no drill log")
		}
		if logPath, err = e.StateDir("drills.jsonl"); err != nil {
			return fail(err.Error())
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
		return fail(fmt.Sprint(problems))
	case len(ok) == 0:
		res.Status, res.Detail = check.Pass, "the release brings no migrations"
	default:
		res.Status, res.Detail = check.Pass, fmt.Sprintf("undo scripts written and drilled for %v", ok)
	}
	return res
}

// checkDestroyed: what the new migrations destroy, and whether each table
// has a key for 'rollback db record' to capture it by.
func (e *Engine) checkDestroyed(ctx context.Context, r CheckRequest, dsnEnv string) check.Result {
	res := check.Result{Prerequisite: "What the release destroys can be given back by key",
		HowToEnsure: "run 'rollback db record --release VERSION' right before the migration; give every table the release destroys data of a primary key"}
	src, err := migrate.LoadDir(r.Dir)
	if err != nil {
		res.Status, res.Detail = check.Fail, err.Error()
		return res
	}
	since := migrate.Version{}
	var db migrate.DB
	if dsn, _ := migrate.LookupDSN(r.DSN, dsnEnv, e.getenv); migrate.IsMySQL(dsn) {
		res.Status, res.Detail = check.Skip, "on MariaDB and MySQL what a release destroys is not captured by key (PostgreSQL only): the snapshot 'rollback db undo' takes before the down migration is the copy"
		return res
	} else if dsn != "" {
		p, err := migrate.Open(ctx, migrate.ProviderOptions{DSN: dsn, Dir: r.Dir, Format: r.Format, NeedSource: true})
		if err != nil {
			res.Status, res.Detail = check.Fail, err.Error()
			return res
		}
		defer p.Close()
		st, err := p.State(ctx)
		if err != nil {
			res.Status, res.Detail = check.Fail, err.Error()
			return res
		}
		since = st.Current
		if p.Conn != nil {
			db = p.Conn // PostgreSQL: row counts and table sizes from its catalog
		}
	} else if r.Since != "" {
		if since, err = migrate.ParseVersion(r.Since); err != nil {
			res.Status, res.Detail = check.Fail, "--since-version: "+err.Error()
			return res
		}
	} else {
		res.Status, res.Detail = check.Skip, "which migrations are new? give a database ("+migrate.DSNSources+") or --since-version"
		return res
	}
	ds, problems, err := migrate.Assess(ctx, db, src, since)
	switch {
	case err != nil:
		res.Status, res.Detail = check.Fail, err.Error()
	case len(problems) > 0:
		res.Status, res.Detail = check.Fail, strings.Join(problems, "; ")
	case len(ds) == 0:
		res.Status, res.Detail = check.Pass, "the new migrations destroy no data"
	default:
		parts := make([]string, len(ds))
		for i, d := range ds {
			parts[i] = d.String()
		}
		res.Status, res.Detail = check.Pass, "captured by 'rollback db record': "+strings.Join(parts, "; ")
		if db == nil {
			res.Detail += " (keys not checked: no database)"
		}
	}
	return res
}
