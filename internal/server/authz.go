package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
)

// AccessReviewer asks the API server whether an identity may do something
// (a SubjectAccessReview): allowed, and the authorizer's reason.
type AccessReviewer func(ctx context.Context, id Identity, a kube.Access) (allowed bool, reason string, err error)

// httpError is an error with the status it answers.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func forbidden(format string, args ...any) error {
	return &httpError{code: 403, msg: fmt.Sprintf(format, args...)}
}

// unconfiguredAllowed reports whether serve may act on a workload that is
// no service of rollback.yaml in namespace (serve --allow-unconfigured).
func (s *Server) unconfiguredAllowed(namespace string) bool {
	return slices.Contains(s.o.AllowUnconfigured, "*") || slices.Contains(s.o.AllowUnconfigured, namespace)
}

// workloadFor resolves the service a request names and checks that the
// caller may have it rolled back: a service of rollback.yaml (or, opted
// in, a workload of an allowed namespace), in the caller's scope, and, for
// a user the API server authenticated, something the user could do
// themselves (SubjectAccessReview): the service is never a deputy for
// more than its caller may do. configuredOnly refuses anything that is no
// configured service whatever the opt-in (Slack).
func (s *Server) workloadFor(ctx context.Context, p Principal, service string, configuredOnly bool) (*engine.Workload, error) {
	wl, err := s.o.Resolve(ctx, service)
	if err != nil {
		return nil, &httpError{code: 400, msg: err.Error()}
	}
	if wl.Service == "" && (configuredOnly || !s.unconfiguredAllowed(wl.Target.Namespace)) {
		how := "serve --allow-unconfigured " + wl.Target.Namespace + " opts a namespace in"
		if configuredOnly {
			how = "this trigger acts on configured services only"
		}
		return nil, forbidden("%s is not a service of rollback.yaml: serve acts only on configured services (%s)", wl.Key(), how)
	}
	if !p.scoped(wl.Service, wl.Target.String()) {
		return nil, forbidden("%s may act on %s only, not on %s", p.Name, strings.Join(p.Services, ", "), wl.Key())
	}
	if err := s.review(ctx, p, wl.Target.UndoAccess()); err != nil {
		return nil, err
	}
	return wl, nil
}

// authorizeService checks that the caller may act on a service named in
// the store (an incident's, a block's) without it being resolvable: the
// caller's scope, and for API-server users their rights on its workload.
func (s *Server) authorizeService(ctx context.Context, p Principal, service string) error {
	if !p.scoped(service) {
		return forbidden("%s may act on %s only, not on %s", p.Name, strings.Join(p.Services, ", "), service)
	}
	if p.Identity == nil || s.o.Access == nil {
		return nil
	}
	if ns, sel, ok := engine.ParseWideService(service); ok {
		return s.review(ctx, p, wideAccess(ns, sel))
	}
	wl, err := s.o.Resolve(ctx, service)
	if err != nil {
		return forbidden("cannot check %s's rights on %s: %v", p.Name, service, err)
	}
	if !p.scoped(wl.Service, wl.Target.String()) {
		return forbidden("%s may act on %s only, not on %s", p.Name, strings.Join(p.Services, ", "), wl.Key())
	}
	return s.review(ctx, p, wl.Target.UndoAccess())
}

// wideAccess is what a wide rollback changes: every Deployment,
// StatefulSet and DaemonSet its selector matches in the namespace.
func wideAccess(namespace, _ string) []kube.Access {
	var as []kube.Access
	for _, r := range []string{"deployments", "statefulsets", "daemonsets"} {
		as = append(as, kube.Access{Verb: "list", Group: "apps", Resource: r, Namespace: namespace},
			kube.Access{Verb: "patch", Group: "apps", Resource: r, Namespace: namespace})
	}
	return as
}

// review asks the API server whether an authenticated user may do each of
// as; static tokens and Slack users (no Identity) are not reviewed.
func (s *Server) review(ctx context.Context, p Principal, as []kube.Access) error {
	if p.Identity == nil {
		return nil
	}
	if s.o.Access == nil {
		return forbidden("%s was authenticated by the API server, but this server cannot check its rights (no SubjectAccessReview): refused", p.Name)
	}
	for _, a := range as {
		ok, reason, err := s.o.Access(ctx, *p.Identity, a)
		if err != nil {
			return &httpError{code: 503, msg: fmt.Sprintf("subject access review of %s: %v", a, err)}
		}
		if !ok {
			msg := fmt.Sprintf("%s may not %s (SubjectAccessReview)", p.Name, a)
			if reason != "" {
				msg += ": " + reason
			}
			return forbidden("%s; the service acts only for callers who could do it themselves", msg)
		}
	}
	return nil
}

func asHTTPError(err error) (*httpError, bool) {
	var he *httpError
	return he, errors.As(err, &he)
}
