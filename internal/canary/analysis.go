// Package canary decides, from metrics, whether a canary must be rolled
// back: a Flagger-compatible threshold analysis (thresholdRange min/max per
// check, a threshold of failed checks) with Argo-style failure and
// inconclusive limits, and a faster sequential test that compares canary
// against baseline request and error counts.
package canary

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rollback-dev/rollback/internal/metrics"
)

// Range is Flagger's thresholdRange: a value outside [Min, Max] fails.
type Range struct {
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
}

// Check is one metric check.
type Check struct {
	Name           string        `json:"name"`
	Query          string        `json:"query"`
	ThresholdRange Range         `json:"thresholdRange"`
	Interval       time.Duration `json:"interval"`
}

// Analysis configures the threshold analysis.
type Analysis struct {
	Checks []Check `json:"metrics"`
	// Threshold is Flagger's: failed checks before rollback (default 3).
	Threshold int `json:"threshold"`
	// InconclusiveLimit: checks with no data before rollback (Argo's
	// inconclusiveLimit; no data is never read as healthy). Default 3.
	InconclusiveLimit int `json:"inconclusiveLimit"`
}

// SeedAnalysis is the runbook's Canary: request-success-rate min 99,
// request-duration (p99, ms) max 500, interval 1m, threshold 3. The
// queries are PromQL over the demo service's metrics.
func SeedAnalysis(selector string) Analysis {
	minSR, maxMS := 99.0, 500.0
	return Analysis{
		Threshold: 3, InconclusiveLimit: 3,
		Checks: []Check{
			{Name: "request-success-rate", Interval: time.Minute, ThresholdRange: Range{Min: &minSR},
				Query: fmt.Sprintf(`100 * sum(rate(http_requests_total{%s,code!~"5.."}[1m])) / sum(rate(http_requests_total{%s}[1m]))`, selector, selector)},
			{Name: "request-duration", Interval: time.Minute, ThresholdRange: Range{Max: &maxMS},
				Query: fmt.Sprintf(`1000 * histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{%s}[1m])))`, selector)},
		},
	}
}

// Result of one evaluation of every check.
type Result struct {
	Time         time.Time     `json:"time"`
	Values       []CheckResult `json:"checks"`
	Failed       int           `json:"failedChecks"`
	Inconclusive int           `json:"inconclusiveChecks"`
	Rollback     bool          `json:"rollback"`
	Reason       string        `json:"reason,omitempty"`
}

// CheckResult is one check's measurement.
type CheckResult struct {
	Name    string  `json:"name"`
	Value   float64 `json:"value"`
	Passed  bool    `json:"passed"`
	NoData  bool    `json:"noData,omitempty"`
	Message string  `json:"message"`
}

// Analyzer keeps the failed and inconclusive counts across evaluations.
type Analyzer struct {
	A            Analysis
	P            metrics.Provider
	failed       int
	inconclusive int
}

// Evaluate runs every check once at time at.
func (z *Analyzer) Evaluate(ctx context.Context, at time.Time) (Result, error) {
	thr, inc := z.A.Threshold, z.A.InconclusiveLimit
	if thr <= 0 {
		thr = 3
	}
	if inc <= 0 {
		inc = 3
	}
	r := Result{Time: at}
	for _, c := range z.A.Checks {
		v, err := z.P.Query(ctx, c.Query, at)
		cr := CheckResult{Name: c.Name, Value: v}
		switch {
		case errors.Is(err, metrics.ErrNoData) || errors.Is(err, metrics.ErrNaN):
			cr.NoData, cr.Message = true, "no data: "+err.Error()
			z.inconclusive++
		case err != nil:
			return r, err
		default:
			cr.Passed, cr.Message = c.ThresholdRange.check(v)
			if !cr.Passed {
				z.failed++
			}
		}
		r.Values = append(r.Values, cr)
	}
	r.Failed, r.Inconclusive = z.failed, z.inconclusive
	switch {
	case z.failed >= thr:
		r.Rollback, r.Reason = true, fmt.Sprintf("%d failed checks reached the threshold of %d", z.failed, thr)
	case z.inconclusive >= inc:
		r.Rollback, r.Reason = true, fmt.Sprintf("%d checks without data reached the inconclusive limit of %d", z.inconclusive, inc)
	}
	return r, nil
}

func (rg Range) check(v float64) (bool, string) {
	if rg.Min != nil && v < *rg.Min {
		return false, fmt.Sprintf("%.4g is below the minimum %.4g", v, *rg.Min)
	}
	if rg.Max != nil && v > *rg.Max {
		return false, fmt.Sprintf("%.4g is above the maximum %.4g", v, *rg.Max)
	}
	return true, fmt.Sprintf("%.4g is within range", v)
}
