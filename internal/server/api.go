package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/store"
)

// Pages of GET /api/v1/incidents.
const (
	defaultPage = 100
	maxPage     = 1000
)

// listIncidents is a page of incidents, newest first: ?service=,
// ?status= (repeatable), ?limit= (default 100, at most 1000), ?before=ID
// for the next page, which the X-Next-Before header names when there may
// be one.
func (s *Server) listIncidents(w http.ResponseWriter, r *http.Request) {
	qs := r.URL.Query()
	q := store.IncidentQuery{Service: qs.Get("service"), Before: qs.Get("before"), Limit: defaultPage}
	for _, st := range qs["status"] {
		q.Status = append(q.Status, store.Status(st))
	}
	if l := qs.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 || n > maxPage {
			writeError(w, http.StatusBadRequest, "limit: "+clip(l, 16)+" is not a page size from 1 to 1000")
			return
		}
		q.Limit = n
	}
	incs, err := s.o.Store.QueryIncidents(r.Context(), q)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if incs == nil {
		incs = []store.Incident{}
	}
	if len(incs) == q.Limit {
		w.Header().Set("X-Next-Before", incs[len(incs)-1].ID)
	}
	writeJSON(w, http.StatusOK, incs)
}

func (s *Server) view(ctx context.Context, id string) (*incident.View, error) {
	inc, err := s.o.Store.GetIncident(ctx, id)
	if err != nil {
		return nil, err
	}
	evs, err := s.o.Store.Events(ctx, id)
	if err != nil {
		return nil, err
	}
	v := incident.NewView(inc, evs, s.o.Now())
	return &v, nil
}

func (s *Server) getIncident(w http.ResponseWriter, r *http.Request) {
	v, err := s.view(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// startWait is how long a request that starts a rollback waits for its
// incident to open before answering 202 without it.
const startWait = 15 * time.Second

// RunAccepted answers a request that started a rollback.
type RunAccepted struct {
	Service  string `json:"service"`
	Incident string `json:"incident,omitempty"`
	// Done is set when the run ended before the answer, with its error.
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
}

// runFunc is a rollback to run on an engine; started is told its incident.
type runFunc func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error)

// launch runs fn in the background under the server's lifetime, its
// incident marked as this process's while it runs, its outcome counted;
// opened receives the incident as soon as it opens, and then ended is
// called with how it ended.
func (s *Server) launch(service string, wl *engine.Workload, fn runFunc, ended func(*engine.Outcome, error)) (opened <-chan string, err error) {
	ch := make(chan string, 1)
	err = s.tryBackground(func(ctx context.Context) {
		var id string
		out, err := fn(ctx, s.engineFor(wl), func(i string) {
			id = i
			s.markRunning(id, true)
			ch <- id
		})
		if id != "" {
			s.markRunning(id, false)
		}
		s.recordRun(ctx, service, out, err)
		ended(out, err)
	})
	return ch, err
}

// start runs a rollback in the background and answers with its incident
// as soon as it opens.
func (s *Server) start(w http.ResponseWriter, service string, wl *engine.Workload, fn runFunc) {
	done := make(chan error, 1)
	opened, err := s.launch(service, wl, fn, func(_ *engine.Outcome, err error) { done <- err })
	if err != nil {
		w.Header().Set("Retry-After", "10")
		writeError(w, statusOf(err), err.Error())
		return
	}
	acc := RunAccepted{Service: service}
	select {
	case acc.Incident = <-opened:
		writeJSON(w, http.StatusAccepted, acc)
	case err := <-done:
		acc.Done = true
		select {
		case acc.Incident = <-opened:
		default:
		}
		if err != nil {
			acc.Error = err.Error()
			code := statusOf(err)
			if acc.Incident != "" {
				code = http.StatusOK // it ran, and the incident says how it ended
			}
			writeJSON(w, code, acc)
			return
		}
		writeJSON(w, http.StatusOK, acc)
	case <-time.After(startWait):
		writeJSON(w, http.StatusAccepted, acc)
	}
}

// RunRequest asks for a rollback.
type RunRequest struct {
	Service    string `json:"service,omitempty"`
	Selector   string `json:"selector,omitempty"`  // wide rollback: a label selector
	Namespace  string `json:"namespace,omitempty"` // with selector
	ToRevision int64  `json:"toRevision,omitempty"`
	Resume     bool   `json:"resume,omitempty"`
	Timeout    string `json:"timeout,omitempty"`
}

func (s *Server) run(w http.ResponseWriter, r *http.Request) {
	var req RunRequest
	if !decode(w, r, &req) {
		return
	}
	var timeout time.Duration
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "timeout: "+req.Timeout+" is not a positive duration (e.g. 5m)")
			return
		}
		timeout = d
	}
	if req.Selector != "" {
		s.wide(w, r, req, timeout)
		return
	}
	if req.Service == "" {
		writeError(w, http.StatusBadRequest, "service (a configured service or NAMESPACE/KIND/NAME) or selector is required")
		return
	}
	wl, err := s.workloadFor(r.Context(), caller(r), req.Service, false)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	by := caller(r).Name
	s.o.Metrics.Triggers.WithLabelValues("api", "run").Inc()
	s.o.Log.Info("rollback requested", "service", wl.Key(), "by", by)
	s.start(w, wl.Key(), wl, func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error) {
		return e.Run(ctx, engine.RunRequest{Workload: wl, ToRevision: req.ToRevision, Timeout: timeout, Resume: req.Resume, Started: started})
	})
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	prop, err := s.o.Store.GetIncident(ctx, id)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if prop.Status != store.StatusProposed {
		writeError(w, http.StatusConflict, notProposed(prop))
		return
	}
	wl, err := s.workloadFor(ctx, caller(r), prop.Service, false)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	by := "api:" + caller(r).Name
	s.o.Log.Info("proposal approved", "incident", id, "by", by)
	s.start(w, wl.Key(), wl, func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error) {
		return e.Approve(ctx, id, by, wl, started)
	})
}

// ReasonRequest carries a reason (decline, close, block).
type ReasonRequest struct {
	Reason string `json:"reason"`
}

// notProposed says why an incident cannot be approved or declined.
func notProposed(inc *store.Incident) string {
	switch inc.Status {
	case store.StatusClosed:
		return inc.ID + " is already closed (it was approved, or its rollback ran): nothing to approve"
	case store.StatusDeclined:
		return inc.ID + " was declined: nothing to approve; start a new rollback if one is needed"
	case store.StatusOpen:
		return inc.ID + " is a rollback already running or resumable, not a proposal: see its journal, or resume it"
	}
	return inc.ID + " is " + string(inc.Status) + ", not a proposed rollback"
}

// incidentFor reads the incident a request names and checks the caller
// may act on its service.
func (s *Server) incidentFor(w http.ResponseWriter, r *http.Request) (*store.Incident, bool) {
	inc, err := s.o.Store.GetIncident(r.Context(), r.PathValue("id"))
	if err == nil {
		err = s.authorizeService(r.Context(), caller(r), inc.Service)
	}
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return nil, false
	}
	return inc, true
}

func (s *Server) decline(w http.ResponseWriter, r *http.Request) {
	var req ReasonRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.incidentFor(w, r); !ok {
		return
	}
	if err := s.engineFor(nil).Decline(r.Context(), r.PathValue("id"), "api:"+caller(r).Name, req.Reason); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	s.getIncident(w, r)
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	inc, ok := s.incidentFor(w, r)
	if !ok {
		return
	}
	if inc.Status != store.StatusOpen {
		writeError(w, http.StatusConflict, id+" is "+string(inc.Status)+"; only an open incident resumes")
		return
	}
	s.start(w, inc.Service, nil, func(ctx context.Context, e *engine.Engine, started func(string)) (*engine.Outcome, error) {
		started(id)
		return e.Resume(ctx, id)
	})
}

func (s *Server) closeIncident(w http.ResponseWriter, r *http.Request) {
	var req ReasonRequest
	if !decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusBadRequest, "reason is required: say why the incident is closed without finishing its run")
		return
	}
	inc, ok := s.incidentFor(w, r)
	if !ok {
		return
	}
	if err := s.closeByHand(r.Context(), inc, req.Reason, "api:"+caller(r).Name); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	s.getIncident(w, r)
}

func (s *Server) listBlocks(w http.ResponseWriter, r *http.Request) {
	bs, err := s.o.Store.ListBlocks(r.Context(), r.URL.Query().Get("service"))
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if bs == nil {
		bs = []store.Block{}
	}
	writeJSON(w, http.StatusOK, bs)
}

func (s *Server) block(w http.ResponseWriter, r *http.Request) {
	var b store.Block
	if !decode(w, r, &b) {
		return
	}
	if b.Service == "" || b.Version == "" || strings.TrimSpace(b.Reason) == "" {
		writeError(w, http.StatusBadRequest, "service, version and reason are required")
		return
	}
	if err := s.authorizeService(r.Context(), caller(r), b.Service); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	b.At = s.o.Now()
	if err := s.o.Store.SetBlock(r.Context(), b); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	s.o.Log.Info("version blocked", "service", b.Service, "version", b.Version, "by", caller(r).Name)
	writeJSON(w, http.StatusCreated, b)
}

// unblock is DELETE /api/v1/blocks/SERVICE/VERSION; SERVICE may itself
// hold slashes (NAMESPACE/KIND/NAME), VERSION never does.
func (s *Server) unblock(w http.ResponseWriter, r *http.Request) {
	rest := r.PathValue("service")
	i := strings.LastIndex(rest, "/")
	if i <= 0 || i == len(rest)-1 {
		writeError(w, http.StatusBadRequest, "expected /api/v1/blocks/SERVICE/VERSION")
		return
	}
	svc, ver := rest[:i], rest[i+1:]
	if err := s.authorizeService(r.Context(), caller(r), svc); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	b, err := s.o.Store.GetBlock(r.Context(), svc, ver)
	if err == nil {
		err = s.o.Store.DeleteBlock(r.Context(), svc, ver)
	}
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	// Audited: who unblocked, in the log and in the journal of the
	// incident that blocked the version.
	by := "api:" + caller(r).Name
	s.o.Log.Info("version unblocked", "service", svc, "version", ver, "by", by, "incident", b.Incident)
	if b.Incident != "" {
		_, _ = s.o.Store.AppendEvent(r.Context(), store.Event{Incident: b.Incident, Time: s.o.Now(), Step: "block", Phase: store.PhaseNote,
			Message: "unblocked " + svc + " " + ver + " by " + by})
	}
	w.WriteHeader(http.StatusNoContent)
}

// GateAnswer says whether a version may be deployed.
type GateAnswer struct {
	Service string       `json:"service"`
	Version string       `json:"version"`
	Allowed bool         `json:"allowed"`
	Block   *store.Block `json:"block,omitempty"`
}

func (s *Server) gate(w http.ResponseWriter, r *http.Request) {
	svc, ver := r.URL.Query().Get("service"), r.URL.Query().Get("version")
	if svc == "" || ver == "" {
		writeError(w, http.StatusBadRequest, "service and version query parameters are required")
		return
	}
	b, err := s.o.Store.GetBlock(r.Context(), svc, ver)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusOK, GateAnswer{Service: svc, Version: ver, Allowed: true})
		return
	}
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, GateAnswer{Service: svc, Version: ver, Block: b})
}

func (s *Server) signoff(w http.ResponseWriter, r *http.Request) {
	var a store.Approval
	if !decode(w, r, &a) {
		return
	}
	if a.Service == "" || a.Release == "" {
		writeError(w, http.StatusBadRequest, "service and release are required")
		return
	}
	if err := s.authorizeService(r.Context(), caller(r), a.Service); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	a.By, a.At = caller(r).Name, s.o.Now()
	if err := s.o.Store.Approve(r.Context(), a); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, a)
}

// closeByHand closes an incident by hand unless a run of it is live here
// or holds its service anywhere (409, naming the holder).
func (s *Server) closeByHand(ctx context.Context, inc *store.Incident, reason, by string) error {
	if s.running(inc.ID) {
		return &httpError{code: http.StatusConflict, msg: inc.ID + " is running on this replica: wait for it, or interrupt it first"}
	}
	_, _, err := s.engineFor(nil).CloseByHand(ctx, inc.ID, reason, by)
	return err
}
