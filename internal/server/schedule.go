package server

import (
	"cmp"
	"context"
	"net/http"
	"time"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/schedule"
	"github.com/rollback-dev/rollback/internal/store"
)

// scheduleItems is every configured service's testing schedule.
func (s *Server) scheduleItems(ctx context.Context) ([]schedule.Item, error) {
	return s.engineFor(nil).Schedule(ctx, s.o.Resolve)
}

func (s *Server) schedule(w http.ResponseWriter, r *http.Request) {
	items, err := s.scheduleItems(r.Context())
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if items == nil {
		items = []schedule.Item{}
	}
	writeJSON(w, http.StatusOK, items)
}

// DrillRequest asks for one test of the schedule now.
type DrillRequest struct {
	Service string        `json:"service"`
	Kind    schedule.Kind `json:"kind"`
}

// drill runs one test now (operator); it answers when the test ended.
func (s *Server) drill(w http.ResponseWriter, r *http.Request) {
	var req DrillRequest
	if !decode(w, r, &req) {
		return
	}
	if s.o.Config == nil || s.o.Config.Services[req.Service] == nil {
		writeError(w, http.StatusBadRequest, "service: "+req.Service+" is not a configured service")
		return
	}
	done := make(chan struct{})
	var d store.Drill
	var err error
	s.background(func(ctx context.Context) {
		defer close(done)
		d, err = s.runDrill(ctx, req.Service, req.Kind)
	})
	<-done
	if err != nil && d.Kind == "" {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// runDrill runs one test of a configured service and records it.
func (s *Server) runDrill(ctx context.Context, service string, kind schedule.Kind) (store.Drill, error) {
	svc := s.o.Config.Services[service]
	wl, err := s.o.Resolve(ctx, service)
	if err != nil {
		return store.Drill{}, err
	}
	s.o.Log.Info("drill started", "service", service, "kind", kind)
	var d store.Drill
	switch kind {
	case schedule.DryRun:
		d, err = s.engineFor(wl).DrillDryRun(ctx, wl)
	case schedule.Migration:
		d, err = s.engineFor(wl).DrillMigration(ctx, wl)
	case schedule.Chaos, schedule.FireDrill:
		auto := svc.Automation
		if auto == nil || auto.Staging == nil {
			return store.Drill{}, errNoStaging(service)
		}
		st, serr := s.o.ResolveStaging(ctx, service, auto.Staging)
		if serr != nil {
			return store.Drill{}, serr
		}
		req := engine.ChaosRequest{Staging: st, Service: service, BadImage: auto.Staging.BadImage, Fire: kind == schedule.FireDrill}
		if auto.Watch != nil {
			prom := s.o.Prometheus
			if svc.Verify != nil {
				prom = cmp.Or(svc.Verify.Prometheus, prom)
			}
			if p, perr := metrics.NewPrometheus(prom); perr == nil && prom != "" {
				req.Watch = engine.DrillWatch(p, auto.Watch.RequestsQuery, auto.Watch.ErrorsQuery, auto.Watch.Interval)
			}
		}
		d, err = s.engineFor(st).Drill(ctx, req)
	default:
		return store.Drill{}, errUnknownDrill(kind)
	}
	s.o.Log.Info("drill ended", "service", service, "kind", kind, "ok", d.OK, "detail", d.Detail)
	return d, err
}

type drillError string

func (e drillError) Error() string { return string(e) }

func errNoStaging(service string) error {
	return drillError(service + " has no automation.staging: the chaos drill and the fire drill run on a staging copy, never on production")
}

func errUnknownDrill(k schedule.Kind) error {
	return drillError("kind " + string(k) + ": expected dry-run, migration, chaos or fire-drill")
}

// RunSchedule runs, while this replica leads, every due test each period:
// the dry run and the migration round trip of every service, and the
// chaos and fire drills of services with automation.staging when
// calendar drills are enabled.
func (s *Server) RunSchedule(ctx context.Context, every time.Duration, calendar bool) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if s.leading() {
			s.scheduleOnce(ctx, calendar)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) scheduleOnce(ctx context.Context, calendar bool) {
	items, err := s.scheduleItems(ctx)
	if err != nil {
		s.o.Log.Warn("schedule not read", "err", err)
		return
	}
	for _, it := range items {
		due := 0.0
		if it.IsDue() {
			due = 1
		}
		s.o.Metrics.DrillsDue.WithLabelValues(it.Service, string(it.Kind)).Set(due)
	}
	for _, it := range items {
		if !it.IsDue() || ctx.Err() != nil || !s.leading() {
			continue
		}
		if it.State == schedule.Failed && (it.Kind == schedule.DryRun || it.Kind == schedule.Migration) {
			continue // a failed test of the same release is for people; not retried every period
		}
		switch it.Kind {
		case schedule.Chaos, schedule.FireDrill:
			auto := s.o.Config.Services[it.Service].Automation
			if !calendar || auto == nil || auto.Staging == nil {
				continue
			}
		}
		if _, err := s.runDrill(ctx, it.Service, it.Kind); err != nil {
			s.o.Log.Warn("drill failed", "service", it.Service, "kind", it.Kind, "err", err)
		}
	}
}
