package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/rollback-dev/rollback/internal/store"
)

// Election is leader election on a coordination.k8s.io Lease: one replica
// leads (resumes orphaned incidents, runs the schedule and the canary
// watches); all serve requests. Every run also holds its service's lease
// in the store, so two replicas never roll a service back twice.
type Election struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string // the Lease (default rollback-serve)
	Identity  string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's
	// (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	leading atomic.Bool
}

// Leading reports whether this replica leads now.
func (e *Election) Leading() bool { return e.leading.Load() }

// Run campaigns until ctx ends, calling lead with a context that ends when
// leadership is lost.
func (e *Election) Run(ctx context.Context, lead func(ctx context.Context)) error {
	if e.Name == "" {
		e.Name = "rollback-serve"
	}
	if e.LeaseDuration <= 0 {
		e.LeaseDuration = 15 * time.Second
	}
	if e.RenewDeadline <= 0 {
		e.RenewDeadline = e.LeaseDuration * 2 / 3
	}
	if e.RetryPeriod <= 0 {
		// Candidates retry often enough that a dead leader's Lease is
		// taken soon after it expires.
		e.RetryPeriod = min(2*time.Second, e.LeaseDuration/4)
	}
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name},
		Client: e.Client.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity}}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: e.LeaseDuration, RenewDeadline: e.RenewDeadline, RetryPeriod: e.RetryPeriod,
		ReleaseOnCancel: true, Name: e.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				e.leading.Store(true)
				lead(ctx)
			},
			OnStoppedLeading: func() { e.leading.Store(false) },
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	for ctx.Err() == nil {
		le.Run(ctx) // returns when leadership is lost; campaign again
	}
	return nil
}

// Lead is what the leader does while it leads: resume incidents whose
// run died (their journal stops mid-step and nobody holds their lease).
func (s *Server) Lead(ctx context.Context, every time.Duration) {
	s.o.Metrics.Leader.Set(1)
	defer s.o.Metrics.Leader.Set(0)
	s.o.Log.Info("leading")
	tries := map[string]int{}
	var mu sync.Mutex
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.resumeOrphans(ctx, tries, &mu)
		select {
		case <-ctx.Done():
			s.o.Log.Info("no longer leading")
			return
		case <-t.C:
		}
	}
}

// maxResumes bounds how often one leader resumes one incident: a run that
// keeps failing is for people.
const maxResumes = 3

func (s *Server) resumeOrphans(ctx context.Context, tries map[string]int, mu *sync.Mutex) {
	// Open incidents only (indexed): the scan costs what is running, not
	// the history.
	incs, err := s.o.Store.QueryIncidents(ctx, store.IncidentQuery{Status: []store.Status{store.StatusOpen}, Limit: 1000})
	if err != nil {
		s.o.Log.Warn("orphan scan: store", "err", err)
		return
	}
	for _, inc := range incs {
		if inc.Status != store.StatusOpen || s.running(inc.ID) {
			continue
		}
		mu.Lock()
		n := tries[inc.ID]
		mu.Unlock()
		if n >= maxResumes {
			continue
		}
		evs, err := s.o.Store.Events(ctx, inc.ID)
		if err != nil || !orphaned(evs) {
			continue
		}
		mu.Lock()
		tries[inc.ID]++
		mu.Unlock()
		id, service := inc.ID, inc.Service
		s.markRunning(id, true)
		s.o.Log.Info("resuming an orphaned incident", "incident", id, "service", service)
		s.background(func(bctx context.Context) {
			defer s.markRunning(id, false)
			out, err := s.engineFor(nil).Resume(bctx, id)
			if err != nil && errorsIsLease(err) {
				mu.Lock()
				tries[id]-- // someone alive holds it: not an attempt
				mu.Unlock()
				return
			}
			s.o.Log.Info("resumed an orphaned incident", "incident", id, "service", service, "err", errString(err))
			s.recordRun(bctx, service, out, err)
		})
	}
}

// orphaned: the journal stops mid-run (a step started, an effect
// intended, a step interrupted by SIGTERM or a lost hold) rather than at a
// failure the run reported.
func orphaned(evs []store.Event) bool {
	for i := len(evs) - 1; i >= 0; i-- {
		switch evs[i].Phase {
		case store.PhaseFailed:
			return false
		case store.PhaseStarted, store.PhaseIntent, store.PhaseNote, store.PhaseDone, store.PhaseEffect, store.PhaseInterrupted:
			return true
		}
	}
	return len(evs) > 0
}
