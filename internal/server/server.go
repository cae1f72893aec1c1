// Package server is `rollback serve`: a long-running service on the
// rollback engine. It takes triggers (Alertmanager's webhook, Flagger's
// rollback webhook, a Slack slash command, the supervised canary watch),
// serves the HTTP API the CLI can use (--server) and a dashboard, runs the
// runbook's rollback testing schedule, elects a leader on a Kubernetes
// Lease and resumes what a dead leader left, and exports /metrics.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/store"
)

// Options configure a Server.
type Options struct {
	Store  store.Store
	Config *config.Config // nil: no configured services (triggers find none)
	// Engine returns an engine on Store reporting progress to events.
	Engine func(events progress.Func) *engine.Engine
	// Resolve turns a service (a configured name, or NAMESPACE/KIND/NAME)
	// into a workload with its client.
	Resolve func(ctx context.Context, service string) (*engine.Workload, error)
	Auth    *Auth
	// Access checks what a user the API server authenticated may do
	// (SubjectAccessReview); nil: such users are refused any action.
	Access AccessReviewer
	// AllowUnconfigured are namespaces whose workloads may be rolled back
	// by NAMESPACE/KIND/NAME though no service of rollback.yaml names
	// them ("*": every namespace). Empty: configured services only.
	AllowUnconfigured []string
	// MaxRuns caps the rollbacks and triggers running in the background
	// at once (default 32); a request beyond it is answered 429.
	MaxRuns int
	// TriggerWait is how long an alert waits for another trigger of its
	// service before the notification is answered 503, to be sent again
	// (default 5s).
	TriggerWait time.Duration
	Log         *slog.Logger
	Metrics     *Metrics
	// SlackSigningSecret verifies Slack's slash-command requests ("":
	// the Slack endpoint answers 404).
	SlackSigningSecret string
	// SlackOperators are the Slack user IDs (U…, W…) who may run and
	// approve; empty: Slack can only show status.
	SlackOperators []string
	// SlackTeam is the Slack workspace (team_id) commands must come from
	// ("": any workspace the signing secret's app is installed in).
	SlackTeam string
	// SlackResponseHost is the host follow-ups may be posted to
	// (default hooks.slack.com over https).
	SlackResponseHost string
	// Prometheus is the base URL the dashboard's charts query ("": none).
	Prometheus string
	// OutboundTimeout bounds each call the server makes on its own
	// (Prometheus for charts, Slack's response_url).
	OutboundTimeout time.Duration
	Now             func() time.Time
	// RunLeaseTTL is how long a run's store lease outlives its holder
	// (default a minute): another replica resumes a dead one's run after.
	RunLeaseTTL time.Duration
	// BulkClient is a client for rolling back many workloads at once (a
	// wide rollback), with a rate limit to match; nil: the engine's.
	BulkClient func() (kubernetes.Interface, error)
	// ResolveStaging is a service's staging copy (automation.staging).
	ResolveStaging func(ctx context.Context, service string, st *config.Staging) (*engine.Workload, error)
	// Leading reports whether this replica leads (nil: always). Only the
	// leader resumes orphaned incidents and runs the schedule and the
	// canary watches; every replica serves requests.
	Leading func() bool
}

// Server is `rollback serve`.
type Server struct {
	o    Options
	mux  *http.ServeMux
	mu   sync.Mutex
	ctx  context.Context // the server's lifetime: background runs use it
	runs sync.WaitGroup
	live map[string]bool // incidents this process runs
	seq  atomic.Int64    // run holder names
	// active counts background runs and triggers (tryBackground).
	active atomic.Int64
	// gates admit one trigger per service at a time (serviceGate).
	gates map[string]chan struct{}
}

// New builds a server; Serve or Handler runs it.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OutboundTimeout <= 0 {
		o.OutboundTimeout = 5 * time.Second
	}
	if o.Auth == nil {
		o.Auth = &Auth{}
	}
	s := &Server{o: o, mux: http.NewServeMux(), ctx: context.Background()}
	s.routes()
	return s
}

// SetContext sets the context background runs are under; cancelling it
// interrupts them (their incidents stay open and resumable).
func (s *Server) SetContext(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
}

func (s *Server) baseContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctx
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.recoverer(s.mux) }

// Wait waits for background runs to end.
func (s *Server) Wait() { s.runs.Wait() }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	m.HandleFunc("GET /readyz", s.ready)
	m.Handle("GET /metrics", promhttp.HandlerFor(s.o.Metrics.Registry, promhttp.HandlerOpts{}))
	// API v1
	m.HandleFunc("GET /api/v1/incidents", s.authed(RoleRead, s.listIncidents))
	m.HandleFunc("GET /api/v1/incidents/{id}", s.authed(RoleRead, s.getIncident))
	m.HandleFunc("POST /api/v1/incidents/{id}/approve", s.authed(RoleOperate, s.approve))
	m.HandleFunc("POST /api/v1/incidents/{id}/decline", s.authed(RoleOperate, s.decline))
	m.HandleFunc("POST /api/v1/incidents/{id}/resume", s.authed(RoleOperate, s.resume))
	m.HandleFunc("POST /api/v1/incidents/{id}/close", s.authed(RoleOperate, s.closeIncident))
	m.HandleFunc("POST /api/v1/runs", s.authed(RoleOperate, s.run))
	m.HandleFunc("GET /api/v1/blocks", s.authed(RoleRead, s.listBlocks))
	m.HandleFunc("POST /api/v1/blocks", s.authed(RoleOperate, s.block))
	m.HandleFunc("DELETE /api/v1/blocks/{service...}", s.authed(RoleOperate, s.unblock))
	m.HandleFunc("GET /api/v1/gate", s.authed(RoleRead, s.gate))
	m.HandleFunc("POST /api/v1/signoffs", s.authed(RoleOperate, s.signoff))
	m.HandleFunc("GET /api/v1/schedule", s.authed(RoleRead, s.schedule))
	m.HandleFunc("POST /api/v1/drills", s.authed(RoleOperate, s.drill))
	// Triggers
	m.HandleFunc("POST /hooks/alertmanager", s.authed(RoleTrigger, s.alertmanager))
	m.HandleFunc("POST /hooks/flagger/rollback", s.flaggerRollback)
	m.HandleFunc("POST /hooks/slack", s.slack)
	// Dashboard
	m.HandleFunc("GET /{$}", s.authedPage(s.dashboard))
	m.HandleFunc("GET /incidents/{id}", s.authedPage(s.incidentPage))
	m.HandleFunc("GET /incidents/{id}/chart.svg", s.authedPage(s.chart))
	m.HandleFunc("POST /incidents/{id}/approve", s.pageAction(s.pageApprove))
	m.HandleFunc("POST /incidents/{id}/decline", s.pageAction(s.pageDecline))
	m.HandleFunc("GET /login", s.loginForm)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.logout)
}

// ready answers 200 while the store answers: a replica that cannot reach
// it takes no requests (it could record nothing).
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.o.Store.QueryIncidents(ctx, store.IncidentQuery{Status: []store.Status{store.StatusOpen}, Limit: 1}); err != nil {
		s.o.Log.Warn("not ready: store", "err", err)
		http.Error(w, "store unreachable", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

type principalKey struct{}

// caller is the authenticated principal of a request.
func caller(r *http.Request) Principal {
	p, _ := r.Context().Value(principalKey{}).(Principal)
	return p
}

// authed requires role of the caller: 401 without a valid credential,
// 403 with too small a role.
func (s *Server) authed(role Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.o.Auth.Authenticate(r, false)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rollback"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if !p.Role.May(role) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s may %s; this needs the %s role", p.Name, p.Role, role))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

// recoverer turns a handler's panic into a 500; a background run's panic
// is the runbook's to journal.
func (s *Server) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.o.Log.Error("handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// apiError is every API error's body.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

// maxBody bounds request bodies: API requests and webhooks are small.
const maxBody = 1 << 20

// decode reads a JSON body into v, refusing unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// statusOf maps an engine or store error to an HTTP status.
func statusOf(err error) int {
	if he, ok := asHTTPError(err); ok {
		return he.code
	}
	switch {
	case apierrors.IsNotFound(err), errors.Is(err, kube.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errBusy):
		return http.StatusTooManyRequests
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrLeaseHeld), errors.Is(err, engine.ErrOpenIncident), errors.Is(err, engine.ErrNotProposed),
		errors.Is(err, engine.ErrStaleProposal):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// errBusy: as many rollbacks and triggers run as the server takes
// (Options.MaxRuns); the request may be sent again later.
var errBusy = errors.New("too many rollbacks running on this replica; try again shortly")

// tryBackground runs fn in the background unless MaxRuns already run:
// then it returns errBusy and fn never runs.
func (s *Server) tryBackground(fn func(ctx context.Context)) error {
	return s.tryBackgroundN(1, fn)
}

// tryBackgroundN is tryBackground with the cap scaled by n (triggers
// mostly wait on their service's lease, so more of them may wait than
// rollbacks run).
func (s *Server) tryBackgroundN(n int, fn func(ctx context.Context)) error {
	limit := s.o.MaxRuns
	if limit <= 0 {
		limit = 32
	}
	if s.active.Add(1) > int64(limit*n) {
		s.active.Add(-1)
		s.o.Metrics.Triggers.WithLabelValues("server", "busy").Inc()
		return errBusy
	}
	s.background(func(ctx context.Context) {
		defer s.active.Add(-1)
		fn(ctx)
	})
	return nil
}

// background runs fn under the server's lifetime, not the request's.
func (s *Server) background(fn func(ctx context.Context)) {
	ctx := s.baseContext()
	s.runs.Add(1)
	go func() {
		defer s.runs.Done()
		defer func() {
			if v := recover(); v != nil {
				s.o.Log.Error("background run panic", "panic", fmt.Sprint(v))
			}
		}()
		fn(ctx)
	}()
}

func (s *Server) leading() bool { return s.o.Leading == nil || s.o.Leading() }

// decodeLoose reads a vendor's JSON body, whose fields may grow.
func decodeLoose(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// running tracks incidents this process is running (so the leader never
// resumes its own live run).
func (s *Server) running(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[id]
}

func (s *Server) markRunning(id string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live == nil {
		s.live = map[string]bool{}
	}
	if on {
		s.live[id] = true
	} else {
		delete(s.live, id)
	}
}

func errorsIsLease(err error) bool { return errors.Is(err, store.ErrLeaseHeld) }
