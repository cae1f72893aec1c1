package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/rollback-dev/rollback/internal/server"
	"github.com/rollback-dev/rollback/internal/store"
)

// ErrRemote: the store operation is the server's own (a run journals, a
// lease is held, by the server), not something a client does.
var ErrRemote = errors.New("not available through --server: the server runs it (use rollback run/resume/approve with --server)")

// Store is a server seen as a store.Store: incidents and their journals,
// blocks and sign-offs. Writing incidents, journals and leases is the
// server's and returns ErrRemote.
type Store struct{ C *Client }

var _ store.Store = Store{}

// ListIncidents implements store.Store: every page of the service's
// incidents.
func (s Store) ListIncidents(ctx context.Context, service string) ([]store.Incident, error) {
	var out []store.Incident
	q := store.IncidentQuery{Service: service, Limit: 1000}
	for {
		page, err := s.QueryIncidents(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out, nil
		}
		q.Before = page[len(page)-1].ID
	}
}

// QueryIncidents implements store.Store through the API's pages.
func (s Store) QueryIncidents(ctx context.Context, q store.IncidentQuery) ([]store.Incident, error) {
	v := url.Values{}
	if q.Service != "" {
		v.Set("service", q.Service)
	}
	for _, st := range q.Status {
		v.Add("status", string(st))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Before != "" {
		v.Set("before", q.Before)
	}
	var out []store.Incident
	return out, s.C.do(ctx, http.MethodGet, "/api/v1/incidents?"+v.Encode(), nil, &out)
}

// EventsOf implements store.Store, one incident at a time.
func (s Store) EventsOf(ctx context.Context, ids []string) (map[string][]store.Event, error) {
	out := map[string][]store.Event{}
	for _, id := range ids {
		evs, err := s.Events(ctx, id)
		if err != nil {
			return nil, err
		}
		out[id] = evs
	}
	return out, nil
}

func (s Store) GetIncident(ctx context.Context, id string) (*store.Incident, error) {
	v, err := s.C.Incident(ctx, id)
	if err != nil {
		return nil, err
	}
	return v.Incident, nil
}

func (s Store) Events(ctx context.Context, id string) ([]store.Event, error) {
	v, err := s.C.Incident(ctx, id)
	if err != nil {
		return nil, err
	}
	return v.Events, nil
}

func (s Store) SetBlock(ctx context.Context, b store.Block) error {
	return s.C.do(ctx, http.MethodPost, "/api/v1/blocks", b, nil)
}

func (s Store) DeleteBlock(ctx context.Context, service, version string) error {
	return s.C.do(ctx, http.MethodDelete, "/api/v1/blocks/"+url.PathEscape(service)+"/"+url.PathEscape(version), nil, nil)
}

func (s Store) GetBlock(ctx context.Context, service, version string) (*store.Block, error) {
	var g server.GateAnswer
	if err := s.C.do(ctx, http.MethodGet, "/api/v1/gate?service="+url.QueryEscape(service)+"&version="+url.QueryEscape(version), nil, &g); err != nil {
		return nil, err
	}
	if g.Block == nil {
		return nil, store.ErrNotFound
	}
	return g.Block, nil
}

func (s Store) ListBlocks(ctx context.Context, service string) ([]store.Block, error) {
	var out []store.Block
	return out, s.C.do(ctx, http.MethodGet, "/api/v1/blocks?service="+url.QueryEscape(service), nil, &out)
}

func (s Store) Approve(ctx context.Context, a store.Approval) error {
	return s.C.do(ctx, http.MethodPost, "/api/v1/signoffs", a, nil)
}

func (s Store) ListDrills(ctx context.Context, service string) ([]store.Drill, error) {
	return nil, ErrRemote
}

func (Store) CreateIncident(context.Context, *store.Incident) error { return ErrRemote }
func (Store) UpdateIncident(context.Context, *store.Incident) error { return ErrRemote }
func (Store) AppendEvent(context.Context, store.Event) (bool, error) {
	return false, ErrRemote
}
func (Store) AppendEvents(context.Context, []store.Event) error { return ErrRemote }
func (Store) AcquireLease(context.Context, string, string, time.Duration) (*store.Lease, error) {
	return nil, ErrRemote
}
func (Store) ReleaseLease(context.Context, string, string) error { return ErrRemote }
func (Store) GetApproval(context.Context, string, string) (*store.Approval, error) {
	return nil, ErrRemote
}
func (Store) RecordDrill(context.Context, store.Drill) error { return ErrRemote }
func (Store) Close() error                                   { return nil }
