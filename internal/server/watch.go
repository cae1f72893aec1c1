package server

import (
	"cmp"
	"context"
	"sync"
	"time"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/metrics"
)

// watchFor is how long the supervised watch follows a new release.
const watchFor = 10 * time.Minute

// Supervise runs the canary watch of every service with automation.watch
// as a supervised loop while this replica leads: each new release (the
// current revision's version, or for an Argo Rollout or a Flagger canary
// its canary) is watched for ten minutes; a breach rolls it back through
// the runbook. A crashed watch is restarted at the next check.
func (s *Server) Supervise(ctx context.Context, every time.Duration) {
	var mu sync.Mutex
	watched := map[string]string{} // service → the version being or last watched
	running := map[string]bool{}
	// Workloads are resolved once (a client each), not at every check.
	resolved := map[string]*engine.Workload{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, name := range s.serviceNames() {
			svc := s.o.Config.Services[name]
			if svc.Automation == nil || svc.Automation.Watch == nil || ctx.Err() != nil {
				continue
			}
			mu.Lock()
			busy := running[name]
			mu.Unlock()
			if busy {
				continue
			}
			wl := resolved[name]
			if wl == nil {
				var err error
				if wl, err = s.o.Resolve(ctx, name); err != nil {
					s.o.Log.Warn("watch: service not resolved", "service", name, "err", err)
					continue
				}
				resolved[name] = wl
			}
			h, err := kube.GetHistory(ctx, wl.Client, wl.Target)
			if err != nil {
				delete(resolved, name) // resolved again at the next check
				continue
			}
			canaryImgs, baseImgs := h.Split()
			if len(canaryImgs) == 0 || len(baseImgs) == 0 || canaryImgs[0] == baseImgs[0] {
				continue // nothing new to compare
			}
			version := image.VersionOf(canaryImgs[0])
			mu.Lock()
			seen := watched[name] == version
			if !seen {
				watched[name], running[name] = version, true
			}
			mu.Unlock()
			if seen {
				continue
			}
			aw := svc.Automation.Watch
			prom := s.o.Prometheus
			if svc.Verify != nil {
				prom = cmp.Or(svc.Verify.Prometheus, prom)
			}
			p, err := metrics.NewPrometheus(prom)
			if err != nil || prom == "" {
				s.o.Log.Warn("watch: no Prometheus", "service", name)
				mu.Lock()
				running[name] = false
				mu.Unlock()
				continue
			}
			req := engine.DrillWatch(p, aw.RequestsQuery, aw.ErrorsQuery, aw.Interval)
			req.Workload, req.For = wl, watchFor
			// A release nobody calls is not a failed one: the supervised
			// watch never rolls back for missing data alone.
			req.Inconclusive = int(watchFor/req.Interval) + 1
			req.Log = func(line string) { s.o.Log.Debug("watch", "service", name, "msg", line) }
			s.o.Log.Info("watching a new release", "service", name, "version", version)
			s.background(func(bctx context.Context) {
				defer func() {
					mu.Lock()
					running[name] = false
					mu.Unlock()
				}()
				out, err := s.engineFor(wl).Watch(bctx, req)
				if out != nil && out.Breach {
					s.o.Metrics.Triggers.WithLabelValues("watch", "ran").Inc()
					s.o.Log.Warn("canary breach: rolled back", "service", name, "version", version, "detector", out.Detector, "reason", out.Reason, "incident", out.Incident, "err", errString(err))
					s.recordRun(bctx, wl.Key(), &engine.Outcome{Incident: out.Incident}, err)
					return
				}
				s.o.Log.Info("release watched", "service", name, "version", version, "err", errString(err))
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
