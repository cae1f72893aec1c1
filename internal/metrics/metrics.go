// Package metrics reads measurements from a metrics system. The Provider
// interface is what deciding, verifying and canary analysis need; the
// Prometheus implementation uses the Prometheus HTTP API client.
//
// No data, an empty result and NaN are errors, never a healthy zero.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/rollback-dev/rollback/internal/outbound"
)

// Sample is one value at one time.
type Sample struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
}

// Provider answers queries with single values or series.
type Provider interface {
	// Query evaluates a query at a time and returns its one value.
	// It returns ErrNoData for an empty result, ErrNaN for NaN or ±Inf,
	// and ErrNotScalar when the result has more than one series.
	Query(ctx context.Context, query string, at time.Time) (float64, error)
	// QueryRange evaluates a query over a range; ErrNoData when empty.
	QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]Sample, error)
}

// Errors a Provider returns for results that must not be read as healthy.
var (
	ErrNoData    = errors.New("query returned no data")
	ErrNaN       = errors.New("query returned NaN or infinity")
	ErrNotScalar = errors.New("query returned more than one series")
)

// Prometheus is a Provider backed by a Prometheus server.
type Prometheus struct {
	api v1.API
	url string
}

var _ Provider = (*Prometheus)(nil)

// QueryTimeout bounds one Prometheus request: a server that accepts the
// connection and never answers costs this much, never a stalled rollback.
const QueryTimeout = 10 * time.Second

// NewPrometheus connects to the Prometheus at url (http://host:9090).
func NewPrometheus(url string) (*Prometheus, error) {
	c, err := api.NewClient(api.Config{Address: url, Client: outbound.Client(QueryTimeout)})
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: %w", url, err)
	}
	return &Prometheus{api: v1.NewAPI(c), url: url}, nil
}

// Query implements Provider.
func (p *Prometheus) Query(ctx context.Context, query string, at time.Time) (float64, error) {
	val, _, _, err := p.api.Query(ctx, query, at)
	if err != nil {
		return 0, fmt.Errorf("prometheus query %q: %w", query, outbound.Scrub(err))
	}
	var f float64
	switch v := val.(type) {
	case model.Vector:
		switch len(v) {
		case 0:
			return 0, fmt.Errorf("%w: %q at %s", ErrNoData, query, at.UTC().Format(time.RFC3339))
		case 1:
			f = float64(v[0].Value)
		default:
			return 0, fmt.Errorf("%w: %q gave %d series; aggregate it (sum, max, ...)", ErrNotScalar, query, len(v))
		}
	case *model.Scalar:
		f = float64(v.Value)
	default:
		return 0, fmt.Errorf("prometheus query %q: unexpected result type %s", query, val.Type())
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%w: %q (often a rate over no requests)", ErrNaN, query)
	}
	return f, nil
}

// QueryRange implements Provider. NaN points are dropped; a range with no
// points left is ErrNoData.
func (p *Prometheus) QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]Sample, error) {
	val, _, _, err := p.api.QueryRange(ctx, query, v1.Range{Start: start, End: end, Step: step})
	if err != nil {
		return nil, fmt.Errorf("prometheus range query %q: %w", query, outbound.Scrub(err))
	}
	m, ok := val.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("prometheus range query %q: unexpected result type %s", query, val.Type())
	}
	if len(m) > 1 {
		return nil, fmt.Errorf("%w: %q gave %d series", ErrNotScalar, query, len(m))
	}
	var out []Sample
	if len(m) == 1 {
		for _, sp := range m[0].Values {
			f := float64(sp.Value)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			out = append(out, Sample{Time: sp.Timestamp.Time(), Value: f})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q from %s to %s", ErrNoData, query, start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
	}
	return out, nil
}
