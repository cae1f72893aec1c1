package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/metrics"
)

// Spec is one verification of a rolled-back service, the runbook's Step 4:
// pods, smoke checks, then error rate and p99 latency. 'rollback verify'
// and the run's verify steps build it the same way (SpecFor) and run it
// the same way (Health, Metrics).
type Spec struct {
	Pods  PodCheck
	Smoke []config.Smoke

	Prometheus string
	ErrorQuery string
	// RequestsQuery and ErrorsQuery (with $window) count requests and
	// failures since verification began; with them the error-rate check
	// is CountedRate's (a confidence bound), not the ratio query's.
	RequestsQuery, ErrorsQuery string
	// SlowQuery (with RequestsQuery) counts requests slower than the
	// latency limit: p99 is checked as a slow share of at most 1%, with
	// the same confidence bound.
	SlowQuery    string
	MaxErrorRate float64 // default 0.001 (the runbook's < 0.1%)
	LatencyQuery string
	MaxLatency   time.Duration
	// LatencyFactor bounds p99 as a multiple of its pre-release baseline,
	// measured at BaselineAt (zero: just before the newest revision
	// marked bad was created).
	LatencyFactor float64
	BaselineAt    time.Time
	Within        time.Duration // default the runbook's 5 minutes

	Getenv func(string) string
	Now    func() time.Time
	// Log receives lines worth showing (the baseline measured).
	Log func(string)
}

// DefaultMaxErrorRate is the runbook's "error rate < 0.1%".
const DefaultMaxErrorRate = 0.001

// DefaultWithin is the runbook's "recovery verified within 5 minutes".
const DefaultWithin = 5 * time.Minute

// SpecFor is the service's verify section as a Spec, with the Prometheus
// URL looked up in order: verify.prometheus, then $ROLLBACK_PROMETHEUS_URL.
// Callers override fields afterwards (flags win over the file).
func SpecFor(v *config.Verify, getenv func(string) string, now func() time.Time) Spec {
	s := Spec{MaxErrorRate: DefaultMaxErrorRate, Within: DefaultWithin, Getenv: getenv, Now: now}
	if v != nil {
		s.Smoke = v.Smoke
		s.Prometheus = v.Prometheus
		s.ErrorQuery, s.LatencyQuery = v.ErrorRateQuery, v.LatencyQuery
		s.RequestsQuery, s.ErrorsQuery, s.SlowQuery = v.RequestsQuery, v.ErrorsQuery, v.SlowQuery
		if v.MaxErrorRate > 0 {
			s.MaxErrorRate = v.MaxErrorRate
		}
		s.MaxLatency, s.LatencyFactor = v.MaxLatency, v.LatencyFactor
		if v.Within > 0 {
			s.Within = v.Within
		}
		s.Pods.Window = v.PodWindow
	}
	if s.Prometheus == "" && getenv != nil {
		s.Prometheus = getenv("ROLLBACK_PROMETHEUS_URL")
	}
	return s
}

// ErrNoPrometheus: metric checks are configured but no Prometheus is.
var ErrNoPrometheus = errors.New("metric checks need a Prometheus: verify.prometheus in rollback.yaml, --prometheus, or $ROLLBACK_PROMETHEUS_URL")

// HasMetrics reports whether the spec has metric checks.
func (s *Spec) HasMetrics() bool {
	return s.ErrorQuery != "" || s.LatencyQuery != "" || s.RequestsQuery != "" || s.SlowQuery != ""
}

// Validate rejects a spec that cannot be run as asked.
func (s *Spec) Validate() error {
	if s.MaxErrorRate < 0 || s.MaxErrorRate > 1 {
		return fmt.Errorf("the largest error rate is a fraction between 0 and 1 (0.001 is 0.1%%), got %g", s.MaxErrorRate)
	}
	if s.HasMetrics() && s.Prometheus == "" {
		return ErrNoPrometheus
	}
	if s.LatencyQuery != "" && s.MaxLatency <= 0 && s.LatencyFactor <= 0 {
		return errors.New("a latency query needs a largest latency (e.g. 500ms) or a latency factor (e.g. 1.5 times the pre-release baseline)")
	}
	return nil
}

func (s *Spec) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Health is the pod check and the smoke checks.
func (s *Spec) Health(ctx context.Context, cs kubernetes.Interface, t kube.Target) ([]Result, error) {
	pods, err := Pods(ctx, cs, t, s.Pods, s.Now)
	if err != nil {
		return nil, err
	}
	out := []Result{pods}
	client := &http.Client{Timeout: 30 * time.Second}
	for _, sm := range s.Smoke {
		out = append(out, RunSmoke(ctx, client, sm, s.Getenv))
	}
	return out, nil
}

// Metrics is the error-rate and latency checks, each polled until it
// holds or Within has passed (nil when none is configured).
func (s *Spec) Metrics(ctx context.Context, cs kubernetes.Interface, t kube.Target) ([]Result, error) {
	if !s.HasMetrics() {
		return nil, nil
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	p, err := metrics.NewPrometheus(s.Prometheus)
	if err != nil {
		return nil, err
	}
	var out []Result
	if s.RequestsQuery != "" && s.ErrorsQuery != "" {
		r, err := CountedRate(ctx, p, Counts{Requests: s.RequestsQuery, Errors: s.ErrorsQuery, Max: s.MaxErrorRate, Within: s.Within}, s.now)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	} else if s.ErrorQuery != "" {
		r, err := Metric(ctx, p, Threshold{Name: "error-rate", Query: s.ErrorQuery, Max: s.MaxErrorRate, Within: s.Within,
			Unit: func(v float64) string { return fmt.Sprintf("%.3f%%", 100*v) }}, s.now)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if s.SlowQuery != "" && s.RequestsQuery != "" {
		r, err := CountedRate(ctx, p, Counts{Check: "p99-latency", What: "slow", Requests: s.RequestsQuery, Errors: s.SlowQuery, Max: 0.01, Within: s.Within}, s.now)
		if err != nil {
			return nil, err
		}
		return append(out, r), nil
	}
	if s.LatencyQuery == "" {
		return out, nil
	}
	limit := s.MaxLatency
	if s.LatencyFactor > 0 {
		at := s.BaselineAt
		if at.IsZero() {
			if at, err = BaselineTime(ctx, cs, t); err != nil {
				return nil, err
			}
		}
		base, err := p.Query(ctx, s.LatencyQuery, at)
		if err != nil {
			return append(out, Result{Check: "p99-latency", Measured: "no baseline",
				Message: fmt.Sprintf("pre-release baseline at %s: %v", at.UTC().Format(time.RFC3339), err)}), nil
		}
		fl := time.Duration(base * s.LatencyFactor * float64(time.Second))
		if limit <= 0 || fl < limit {
			limit = fl
		}
		if s.Log != nil {
			s.Log(fmt.Sprintf("p99 latency baseline %s at %s; limit %.3gx = %s",
				time.Duration(base*float64(time.Second)).Round(time.Millisecond), at.UTC().Format(time.RFC3339), s.LatencyFactor, limit.Round(time.Millisecond)))
		}
	}
	r, err := Metric(ctx, p, Threshold{Name: "p99-latency", Query: s.LatencyQuery, Max: limit.Seconds(), Within: s.Within,
		Unit: func(v float64) string {
			return time.Duration(v * float64(time.Second)).Round(time.Millisecond).String()
		}}, s.now)
	if err != nil {
		return nil, err
	}
	return append(out, r), nil
}

// ErrNoBaseline: a latency factor needs a pre-release baseline, and no
// revision is marked bad to date it.
var ErrNoBaseline = errors.New("a latency factor needs a pre-release baseline: no revision is marked bad, so give the baseline's time (--baseline-at)")

// BaselineTime is when the pre-release latency is measured: just before
// the newest revision marked bad was created.
func BaselineTime(ctx context.Context, cs kubernetes.Interface, t kube.Target) (time.Time, error) {
	h, err := kube.GetHistory(ctx, cs, t)
	if err != nil {
		return time.Time{}, err
	}
	var bad *kube.Revision
	for i := range h.Revisions {
		if r := &h.Revisions[i]; r.Health == kube.Bad && (bad == nil || r.Created.After(bad.Created)) {
			bad = r
		}
	}
	if bad == nil {
		return time.Time{}, ErrNoBaseline
	}
	return bad.Created.Add(-time.Second), nil
}

// ErrFailed is a verification whose checks did not all pass.
var ErrFailed = errors.New("verification failed")

// Verdict joins results into a step's evidence, failing (ErrFailed) when
// one failed.
func Verdict(results []Result) (string, error) {
	var parts, failed []string
	for _, r := range results {
		line := r.Check + ": " + r.Measured
		if !r.Passed {
			line += " (" + r.Message + ")"
			failed = append(failed, line)
		}
		parts = append(parts, line)
	}
	if len(failed) > 0 {
		return "", fmt.Errorf("%w: %s", ErrFailed, strings.Join(failed, "; "))
	}
	return strings.Join(parts, "; "), nil
}
