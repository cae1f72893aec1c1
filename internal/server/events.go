package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/progress"
)

// eventTimeout bounds each Kubernetes Event the server posts: an Event is
// evidence, never something a rollback waits on.
const eventTimeout = 2 * time.Second

// engineFor is an engine whose progress is logged, measured and posted as
// Kubernetes Events on the workload (w may be nil).
func (s *Server) engineFor(w *engine.Workload) *engine.Engine {
	var mu sync.Mutex
	started := map[string]time.Time{}
	service := ""
	if w != nil {
		service = w.Key()
	}
	e := s.o.Engine(func(ev progress.Event) {
		switch ev.Phase {
		case progress.Started:
			mu.Lock()
			started[ev.Step] = ev.Time
			mu.Unlock()
			s.o.Log.Info("step started", "service", service, "step", ev.Step)
			return
		case progress.Progress:
			s.o.Log.Debug("step progress", "service", service, "step", ev.Step, "msg", ev.Message)
			return
		}
		mu.Lock()
		t0, ok := started[ev.Step]
		mu.Unlock()
		outcome := "done"
		if ev.Phase == progress.Failed {
			outcome = "failed"
		}
		if ok {
			s.o.Metrics.StepDuration.WithLabelValues(ev.Step, outcome).Observe(ev.Time.Sub(t0).Seconds())
		}
		msg := ev.Message
		if ev.Err != nil {
			msg = strings.TrimSpace(msg + " " + ev.Err.Error())
			s.o.Log.Warn("step failed", "service", service, "step", ev.Step, "msg", msg)
		} else {
			s.o.Log.Info("step done", "service", service, "step", ev.Step, "msg", msg)
		}
		s.postEvent(w, ev.Step, outcome, msg)
	})
	// Each run holds its leases under a name of its own: two runs of this
	// process must not read one's lease as the other's renewal.
	e.Holder = fmt.Sprintf("%s/run-%d", engine.HolderName(), s.seq.Add(1))
	if s.o.RunLeaseTTL > 0 {
		e.LeaseTTL = s.o.RunLeaseTTL
	}
	return e
}

// postEvent records a step on the workload as a Kubernetes Event, in the
// background and bounded by eventTimeout.
func (s *Server) postEvent(w *engine.Workload, step, outcome, msg string) {
	if w == nil || w.Client == nil {
		return
	}
	apiVersion, kind := w.Target.Of().APIVersionKind()
	if kind == "" {
		return
	}
	typ, reason := corev1.EventTypeNormal, "Rollback"+title(step)
	if outcome == "failed" {
		typ, reason = corev1.EventTypeWarning, "Rollback"+title(step)+"Failed"
	}
	now := metav1.NewTime(s.o.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: w.Target.Name + ".rollback-", Namespace: w.Target.Namespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: apiVersion, Kind: kind, Name: w.Target.Name, Namespace: w.Target.Namespace},
		Reason:         reason, Message: clip(msg, 1000), Type: typ,
		Source:         corev1.EventSource{Component: "rollback"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	s.runs.Add(1)
	go func() {
		defer s.runs.Done()
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		defer cancel()
		if _, err := w.Client.CoreV1().Events(w.Target.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			s.o.Log.Debug("kubernetes event not posted", "step", step, "err", err)
		}
	}()
}

// metricService is a service as a metric label: configured names only,
// so requests cannot grow /metrics with labels of their choosing.
func (s *Server) metricService(service string) string {
	if s.o.Config != nil && s.o.Config.Services[service] != nil {
		return service
	}
	return "unconfigured"
}

// recordRun counts a run's outcome and its time to recover.
func (s *Server) recordRun(ctx context.Context, service string, out *engine.Outcome, err error) {
	outcome := "recovered"
	switch {
	case err != nil && ctx.Err() != nil:
		outcome = "interrupted"
	case err != nil:
		outcome = "failed"
	}
	label := s.metricService(service)
	s.o.Metrics.Runs.WithLabelValues(label, outcome).Inc()
	if out == nil || out.Incident == "" {
		if err != nil {
			s.o.Log.Error("rollback did not start", "service", service, "err", err)
		}
		return
	}
	s.o.Log.Info("rollback ended", "service", service, "incident", out.Incident, "outcome", outcome, "err", errString(err))
	inc, ierr := s.o.Store.GetIncident(context.WithoutCancel(ctx), out.Incident)
	if ierr != nil {
		return
	}
	evs, _ := s.o.Store.Events(context.WithoutCancel(ctx), out.Incident)
	if ttr, ok := incident.TimeToRecover(inc, evs); ok {
		s.o.Metrics.TimeToRecover.WithLabelValues(label).Observe(ttr.Seconds())
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func title(s string) string {
	var b strings.Builder
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == '-' || r == '_' || r == ' ' }) {
		b.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
