package server

import (
	"context"
	"sync"
	"time"

	"github.com/rollback-dev/rollback/internal/engine"
)

// Supervise runs the canary watch of every service with automation.watch
// as a supervised loop while this replica leads: each new release
// (engine.NewRelease) is watched as engine.SupervisedWatch says; a breach
// rolls it back through the runbook. A crashed watch is restarted at the
// next check. What is watched and how is the engine's; this is the
// scheduling.
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
			version, err := engine.NewRelease(ctx, wl)
			if err != nil {
				delete(resolved, name) // resolved again at the next check
				continue
			}
			if version == "" {
				continue // nothing new to compare
			}
			mu.Lock()
			seen := watched[name] == version
			if !seen {
				watched[name], running[name] = version, true
			}
			mu.Unlock()
			if seen {
				continue
			}
			req, err := engine.SupervisedWatch(svc, wl, s.o.Prometheus)
			if err != nil {
				s.o.Log.Warn("watch: not watched", "service", name, "err", err)
				mu.Lock()
				running[name] = false
				mu.Unlock()
				continue
			}
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
