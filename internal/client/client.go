// Package client talks to a `rollback serve` over its HTTP API (/api/v1):
// the CLI's --server. Store is the server seen as a store.Store for the
// commands that read incidents and blocks; the rest (runs, resume,
// approvals) are calls of their own. The bearer token comes from the
// environment ($ROLLBACK_SERVER_TOKEN), never from a flag.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/schedule"
	"github.com/rollback-dev/rollback/internal/server"
	"github.com/rollback-dev/rollback/internal/store"
)

// Client is one server.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// Timeout bounds each API call (a run is started, not waited for, in one).
const Timeout = 30 * time.Second

// New is a client of the server at base (http://host:port).
func New(base, token string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: expected the server's URL, e.g. https://rollback.example.com", base)
	}
	return &Client{base: u, token: token, http: &http.Client{Timeout: Timeout}}, nil
}

// Error is an API error: its HTTP status and the server's message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("server: %s (HTTP %d)", e.Message, e.Status)
}

// Unwrap maps statuses to the store's sentinels.
func (e *Error) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return store.ErrNotFound
	case http.StatusConflict:
		return store.ErrLeaseHeld
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			e.Error += " (set $ROLLBACK_SERVER_TOKEN)"
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	return json.Unmarshal(b, out)
}

// Incident is one incident's view (checklist, reasons, journal).
func (c *Client) Incident(ctx context.Context, id string) (*incident.View, error) {
	var v incident.View
	if err := c.do(ctx, http.MethodGet, "/api/v1/incidents/"+url.PathEscape(id), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Run starts a rollback (a service, or a selector in a namespace).
func (c *Client) Run(ctx context.Context, r server.RunRequest) (*server.RunAccepted, error) {
	var a server.RunAccepted
	return &a, c.do(ctx, http.MethodPost, "/api/v1/runs", r, &a)
}

// Resume resumes an open incident's run on the server.
func (c *Client) Resume(ctx context.Context, id string) (*server.RunAccepted, error) {
	var a server.RunAccepted
	return &a, c.do(ctx, http.MethodPost, "/api/v1/incidents/"+url.PathEscape(id)+"/resume", nil, &a)
}

// Approve runs a proposed rollback as the caller's decision.
func (c *Client) Approve(ctx context.Context, id string) (*server.RunAccepted, error) {
	var a server.RunAccepted
	return &a, c.do(ctx, http.MethodPost, "/api/v1/incidents/"+url.PathEscape(id)+"/approve", nil, &a)
}

// Decline ends a proposal without a rollback.
func (c *Client) Decline(ctx context.Context, id, reason string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/incidents/"+url.PathEscape(id)+"/decline", server.ReasonRequest{Reason: reason}, nil)
}

// Close closes an incident by hand.
func (c *Client) Close(ctx context.Context, id, reason string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/incidents/"+url.PathEscape(id)+"/close", server.ReasonRequest{Reason: reason}, nil)
}

// Wait polls an incident until its run ends: closed, or its journal
// ends in a failure that nothing followed for settle. It returns the last
// view.
func (c *Client) Wait(ctx context.Context, id string, every, settle time.Duration) (*incident.View, error) {
	var lastLen int
	var since time.Time
	for {
		v, err := c.Incident(ctx, id)
		if err != nil {
			return nil, err
		}
		if v.Incident.Status != store.StatusOpen {
			return v, nil
		}
		if n := len(v.Events); n != lastLen {
			lastLen, since = n, time.Now()
		} else if n > 0 && v.Events[n-1].Phase == store.PhaseFailed && time.Since(since) > settle {
			return v, errors.New(id + " stopped at " + v.Events[n-1].Step + ": " + v.Events[n-1].Message)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(every):
		}
	}
}

// Schedule is the server's rollback testing schedule.
func (c *Client) Schedule(ctx context.Context) ([]schedule.Item, error) {
	var out []schedule.Item
	return out, c.do(ctx, http.MethodGet, "/api/v1/schedule", nil, &out)
}
