package server

import (
	"context"
	"net/http"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
)

// wide starts a wide rollback (POST /api/v1/runs with a selector).
func (s *Server) wide(w http.ResponseWriter, r *http.Request, req RunRequest, timeout time.Duration) {
	if req.Namespace == "" {
		writeError(w, http.StatusBadRequest, "namespace is required with selector")
		return
	}
	// A selector names workloads rollback.yaml does not: the namespace
	// must be opted in, a scoped token cannot, and an API-server user
	// must be allowed to change what it matches.
	p := caller(r)
	if !s.unconfiguredAllowed(req.Namespace) {
		writeError(w, http.StatusForbidden, "a wide rollback acts on workloads rollback.yaml does not name: serve --allow-unconfigured "+req.Namespace+" opts the namespace in")
		return
	}
	if p.Services != nil {
		writeError(w, http.StatusForbidden, p.Name+" is scoped to services; a wide rollback needs an unscoped operator")
		return
	}
	if err := s.review(r.Context(), p, wideAccess(req.Namespace, req.Selector)); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	e := s.engineFor(nil)
	bulk := s.o.BulkClient
	if bulk == nil && e.Client != nil {
		bulk = func() (kubernetes.Interface, error) { return e.Client("") }
	}
	if bulk == nil {
		writeError(w, http.StatusServiceUnavailable, "no Kubernetes client")
		return
	}
	cs, err := bulk()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	key := engine.WideService(req.Namespace, req.Selector)
	s.o.Metrics.Triggers.WithLabelValues("api", "wide").Inc()
	s.o.Log.Info("wide rollback requested", "namespace", req.Namespace, "selector", req.Selector, "by", caller(r).Name)
	s.start(w, key, nil, func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error) {
		wo, err := e.Wide(ctx, engine.WideRequest{Namespace: req.Namespace, Selector: req.Selector, Client: cs, Timeout: timeout, Started: started})
		if wo == nil {
			return nil, err
		}
		return &engine.Outcome{Incident: wo.Incident, Result: &kube.Result{}}, err
	})
}
