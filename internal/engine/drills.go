package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/schedule"
	"github.com/rollback-dev/rollback/internal/store"
)

// Subjects is what the service has deployed now that the testing schedule
// is about: its release and its newest migration.
func (e *Engine) Subjects(ctx context.Context, w *Workload) schedule.Subjects {
	var subj schedule.Subjects
	if w != nil && w.Client != nil {
		if h, err := kube.GetHistory(ctx, w.Client, w.Target); err == nil {
			if cur := h.Current(); cur != nil {
				subj.Release = versionOf(cur)
			}
		}
	}
	if w == nil {
		return subj
	}
	if svc := e.service(w.Service); svc != nil && svc.Database != nil {
		subj.HasDB = true
		if src, err := migrate.LoadDir(svc.Database.Dir); err == nil && len(src.Migrations) > 0 {
			subj.Migration = src.Migrations[len(src.Migrations)-1].Version.String()
		}
	}
	return subj
}

// record keeps a drill in the store; the drill's own error wins.
func (e *Engine) record(ctx context.Context, d store.Drill, err error) (store.Drill, error) {
	d.OK = err == nil
	if err != nil {
		if d.Detail != "" {
			d.Detail += "; "
		}
		d.Detail += err.Error()
	}
	d.At = e.now()
	if rerr := e.Store.RecordDrill(context.WithoutCancel(ctx), d); rerr != nil && err == nil {
		err = rerr
	}
	return d, err
}

// DrillDryRun is the schedule's "dry-run Kubernetes rollback ... every
// release": the rollback of the deployed release, sent to the API server
// with dryRun=All (kubectl's --dry-run=server), nothing changed.
func (e *Engine) DrillDryRun(ctx context.Context, w *Workload) (store.Drill, error) {
	subj := e.Subjects(ctx, w)
	d := store.Drill{Service: w.Key(), Kind: string(schedule.DryRun), Subject: subj.Release}
	res, err := e.DryRun(ctx, w, 0, kube.DryRunServer, time.Minute)
	if err == nil && res != nil && res.Plan != nil {
		d.Detail = "server dry run: " + res.Plan.Summary()
	}
	if errors.Is(err, kube.ErrNoTarget) {
		// A first release has nothing to roll back to; that is no failed
		// test. A history whose older revisions are all marked bad is.
		if h, herr := kube.GetHistory(ctx, w.Client, w.Target); herr == nil && len(h.Revisions) <= 1 {
			d.Detail, err = "the first release: no earlier revision to roll back to", nil
		}
	}
	return e.record(ctx, d, err)
}

// DrillMigration is "test down migration ... against a copy of prod data,
// every migration": `rollback db drill` on a clone of the service's
// database, its result also appended to the drill log the decision reads.
func (e *Engine) DrillMigration(ctx context.Context, w *Workload) (store.Drill, error) {
	subj := e.Subjects(ctx, w)
	d := store.Drill{Service: w.Key(), Kind: string(schedule.Migration), Subject: subj.Migration}
	p, err := e.Database(ctx, e.service(w.Service), "")
	if err != nil {
		return e.record(ctx, d, err)
	}
	defer p.Close()
	res, err := p.Drill(ctx, migrate.DrillOptions{Now: e.Now})
	if err == nil {
		d.Detail = fmt.Sprintf("%d migration(s) round-tripped on clone %s in %.1fs", len(res.Steps), res.Clone, res.Seconds)
		if logPath, lerr := e.StateDir("drills.jsonl"); lerr == nil {
			_ = (migrate.DrillLog{Path: logPath}).Append(res)
		}
		if !res.Passed {
			err = errors.New("a down migration did not restore the schema")
		}
	}
	return e.record(ctx, d, err)
}

// ChaosRequest is a chaos drill: a deliberately failing version deployed
// to a staging copy of the service, which the detectors must find.
type ChaosRequest struct {
	Staging  *Workload // the staging copy (a Deployment, StatefulSet or DaemonSet)
	Service  string    // the service whose drill it is
	BadImage string
	// Detector: the canary watch's settings (Prometheus, queries,
	// interval); its rollback is the drill's recovery.
	Watch WatchRequest
	// Fire makes it the fire drill: the whole runbook runs on the staging
	// copy once the bad version serves, instead of the detectors.
	Fire bool
}

// Drill runs a chaos drill or a fire drill and records detection and
// recovery times.
func (e *Engine) Drill(ctx context.Context, r ChaosRequest) (store.Drill, error) {
	kind := schedule.Chaos
	if r.Fire {
		kind = schedule.FireDrill
	}
	d := store.Drill{Service: r.Service, Kind: string(kind), Subject: image.VersionOf(r.BadImage)}
	w := r.Staging
	if r.BadImage == "" {
		return e.record(ctx, d, errors.New("no automation.staging.badImage: the drill needs a deliberately failing image"))
	}
	if err := kube.SetImage(ctx, w.Client, w.Target, r.BadImage); err != nil {
		return e.record(ctx, d, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err := kube.WaitRolledOut(rctx, w.Client, w.Target, nil)
	cancel()
	if err != nil {
		return e.record(ctx, d, fmt.Errorf("the bad version did not roll out in staging: %w", err))
	}
	serving := e.now()
	if r.Fire {
		out, err := e.Run(ctx, RunRequest{Workload: w})
		if out != nil && out.Incident != "" {
			d.Detail = fmt.Sprintf("runbook %s on %s", out.Incident, w.Target.Ref())
		}
		if err == nil {
			d.Detail += fmt.Sprintf("; recovered %.1fs after the bad version served", e.now().Sub(serving).Seconds())
		}
		return e.record(ctx, d, err)
	}
	wr := r.Watch
	wr.Workload = w
	if wr.Prometheus == nil || wr.RequestsQuery == "" || wr.ErrorsQuery == "" {
		return e.record(ctx, d, errors.New("no detector: automation.watch (queries) and a Prometheus are needed"))
	}
	out, err := e.Watch(ctx, wr)
	if out == nil || !out.Breach {
		if err == nil {
			err = fmt.Errorf("the detectors did not find %s in %s", d.Subject, wr.For)
		}
		return e.record(ctx, d, err)
	}
	detected := float64(out.Intervals) * wr.Interval.Seconds()
	d.Detail = fmt.Sprintf("detected by %s after %.0fs (%d intervals): %s", out.Detector, detected, out.Intervals, out.Reason)
	if err == nil {
		d.Detail += fmt.Sprintf("; recovered %.1fs after the bad version served (incident %s)", e.now().Sub(serving).Seconds(), out.Incident)
	}
	return e.record(ctx, d, err)
}

// DrillWatch is the detector settings of a service's automation.watch with
// `rollback watch`'s defaults (Flagger's analysis every six intervals: 1m at 10s).
func DrillWatch(p metrics.Provider, requests, errs string, interval time.Duration) WatchRequest {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	return WatchRequest{Prometheus: p, RequestsQuery: requests, ErrorsQuery: errs, Interval: interval, For: 10 * time.Minute,
		AnalysisEvery: 6 * interval, Threshold: 3, MinSuccess: 99, Inconclusive: 6, Timeout: DefaultTimeout}
}

// Schedule is every configured service's rollback testing schedule: what
// was tested (the store's drills), what is deployed (resolve; a service
// that cannot be resolved shows its calendar items and an unknown
// release), and the clock.
func (e *Engine) Schedule(ctx context.Context, resolve func(ctx context.Context, service string) (*Workload, error)) ([]schedule.Item, error) {
	if e.Config == nil {
		return nil, nil
	}
	var out []schedule.Item
	for _, name := range e.Config.ServiceNames() {
		drills, err := e.Store.ListDrills(ctx, name)
		if err != nil {
			return nil, err
		}
		w := &Workload{Service: name}
		if resolve != nil {
			if rw, err := resolve(ctx, name); err == nil {
				w = rw
			}
		}
		out = append(out, schedule.For(name, e.Subjects(ctx, w), drills, e.now())...)
	}
	return out, nil
}
