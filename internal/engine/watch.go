package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/canary"
	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/metrics"
)

// WatchRequest is a canary watch: the current revision's version (the
// canary) against the previous one (the baseline), every Interval, for
// For, from Prometheus request and error counts.
type WatchRequest struct {
	Workload   *Workload
	Prometheus metrics.Provider
	// RequestsQuery and ErrorsQuery are PromQL templates: {{version}} is
	// the image's version, {{interval}} the interval as a PromQL range.
	RequestsQuery, ErrorsQuery string
	Interval, For              time.Duration
	// MinSpan is the sequential test's (canary.Sequential.MinSpan): 0
	// the default, negative no limit.
	MinSpan time.Duration
	// Flagger's analysis: every AnalysisEvery the canary's success rate
	// must be at least MinSuccess (percent); Threshold failures breach.
	AnalysisEvery time.Duration
	Threshold     int
	MinSuccess    float64
	// Inconclusive intervals without canary data breach (no data is never
	// healthy).
	Inconclusive int
	// NoRollback reports a breach without acting on it.
	NoRollback bool
	Timeout    time.Duration // for the rollout of the rollback
	Log        func(string)
}

// WatchOutcome is what a watch saw and did.
type WatchOutcome struct {
	Service   string       `json:"service"`
	Canary    string       `json:"canaryVersion"`
	Baseline  string       `json:"baselineVersion"`
	Breach    bool         `json:"breach"`
	Detector  string       `json:"detector,omitempty"`
	Reason    string       `json:"reason,omitempty"`
	Intervals int          `json:"intervals"`
	Canary5xx float64      `json:"canaryErrors"`
	CanaryReq float64      `json:"canaryRequests"`
	Incident  string       `json:"incident,omitempty"`
	Rollback  *kube.Result `json:"rollback,omitempty"`
}

// Watch runs the canary watch and, on a breach, rolls back through the
// runbook (OnBreach) unless NoRollback. The outcome is returned with any
// error: ErrBusy when another rollback holds the service.
func (e *Engine) Watch(ctx context.Context, r WatchRequest) (*WatchOutcome, error) {
	w := r.Workload
	logf := func(format string, a ...any) {
		if r.Log != nil {
			r.Log(fmt.Sprintf(format, a...))
		}
	}
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return nil, err
	}
	// The split: an Argo Rollout's current vs stable ReplicaSet, a Flagger
	// canary's target vs primary, else the current vs previous revision.
	canaryImgs, baseImgs := h.Split()
	if len(canaryImgs) == 0 {
		return nil, fmt.Errorf("%w: %s has no current revision to watch", kube.ErrNoTarget, w.Target.Ref())
	}
	out := &WatchOutcome{Service: w.Key(), Canary: image.VersionOf(canaryImgs[0])}
	if len(baseImgs) > 0 && baseImgs[0] != canaryImgs[0] {
		out.Baseline = image.VersionOf(baseImgs[0])
	}
	logf("canary %s against baseline %s, every %s for %s", out.Canary, orNone(out.Baseline), r.Interval, r.For)
	if r.MinSpan >= 0 && 3*r.Interval > r.For {
		logf("note: the sequential test rations its evidence and needs at least 3 intervals (%s) to breach, longer than the watch: only the threshold analysis can roll back", 3*r.Interval)
	}
	counts := func(version string) (canary.Counts, bool, error) {
		if version == "" {
			return canary.Counts{}, false, nil
		}
		q := func(t string) string {
			return strings.NewReplacer("{{version}}", version, "{{interval}}", PromDuration(r.Interval)).Replace(t)
		}
		req, err := r.Prometheus.Query(ctx, q(r.RequestsQuery), e.now())
		if errors.Is(err, metrics.ErrNoData) || errors.Is(err, metrics.ErrNaN) {
			return canary.Counts{}, false, nil
		}
		if err != nil {
			return canary.Counts{}, false, err
		}
		errs, err := r.Prometheus.Query(ctx, q(r.ErrorsQuery), e.now())
		if errors.Is(err, metrics.ErrNoData) {
			errs, err = 0, nil // no 5xx series yet: no errors
		}
		if err != nil {
			return canary.Counts{}, false, err
		}
		return canary.Counts{Requests: req, Errors: errs}, req > 0, nil
	}
	seq := &canary.Sequential{MinSpan: r.MinSpan}
	flagger := &canary.FlaggerDefault{Interval: int(r.AnalysisEvery / r.Interval), Threshold: r.Threshold, MinSuccess: r.MinSuccess}
	noData := 0
	deadline := e.now().Add(r.For)
	tick := time.NewTicker(r.Interval)
	defer tick.Stop()
	for e.now().Before(deadline) && !out.Breach {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-tick.C:
		}
		out.Intervals++
		c, ok, err := counts(out.Canary)
		if err != nil {
			return out, err
		}
		b, _, err := counts(out.Baseline)
		if err != nil {
			return out, err
		}
		if !ok {
			noData++
			logf("no canary data (%d/%d inconclusive)", noData, r.Inconclusive)
			if noData >= r.Inconclusive {
				out.Breach, out.Detector = true, "inconclusive"
				out.Reason = fmt.Sprintf("%d intervals without data for the canary %s: no data is never read as healthy", noData, out.Canary)
			}
			continue
		}
		noData = 0
		out.CanaryReq += c.Requests
		out.Canary5xx += c.Errors
		v := seq.Observe(c, b, r.Interval)
		logf("canary %.0f req %.0f 5xx, baseline %.0f req %.0f 5xx; sequential LLR %.1f of %.1f", c.Requests, c.Errors, b.Requests, b.Errors, v.LLR, v.Upper)
		switch {
		case v.Breach:
			out.Breach, out.Detector, out.Reason = true, "sequential", v.Reason
		case flagger.Observe(c):
			out.Breach, out.Detector = true, "threshold"
			out.Reason = fmt.Sprintf("%d analysis intervals with success rate under %.4g%% reached the threshold of %d", r.Threshold, r.MinSuccess, r.Threshold)
		}
	}
	if !out.Breach {
		logf("no breach in %s (%d intervals, canary %.0f requests, %.0f 5xx)", r.For, out.Intervals, out.CanaryReq, out.Canary5xx)
		return out, nil
	}
	logf("BREACH (%s): %s", out.Detector, out.Reason)
	if r.NoRollback {
		return out, nil
	}
	// The breach goes through the runbook: the service's lease, an
	// incident decided by the detector, notify, verify, block, review.
	res, err := e.OnBreach(ctx, w, Breach{Detector: out.Detector, Reason: out.Reason}, r.Timeout)
	if res != nil {
		out.Incident, out.Rollback = res.Incident, res.Result
	}
	return out, err
}

// PromDuration renders a duration as a PromQL range (10s, 1m, 1500ms).
func PromDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// SupervisedFor is how long the supervised watch follows a new release.
const SupervisedFor = 10 * time.Minute

// NewRelease is the version of the release the workload is rolling out
// against another it still runs (the current revision's, or an Argo
// Rollout's or a Flagger canary's canary), or "" when there is nothing new
// to compare.
func NewRelease(ctx context.Context, w *Workload) (string, error) {
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return "", err
	}
	canaryImgs, baseImgs := h.Split()
	if len(canaryImgs) == 0 || len(baseImgs) == 0 || canaryImgs[0] == baseImgs[0] {
		return "", nil
	}
	return image.VersionOf(canaryImgs[0]), nil
}

// SupervisedWatch is the watch 'rollback serve' runs on a new release of a
// service with automation.watch: SupervisedFor long, on the service's
// Prometheus (verify.prometheus, else prom), never rolling back for
// missing data alone (a release nobody calls is not a failed one).
func SupervisedWatch(svc *config.Service, w *Workload, prom string) (WatchRequest, error) {
	if svc == nil || svc.Automation == nil || svc.Automation.Watch == nil {
		return WatchRequest{}, fmt.Errorf("%s: no automation.watch configured", w.Key())
	}
	if svc.Verify != nil && svc.Verify.Prometheus != "" {
		prom = svc.Verify.Prometheus
	}
	if prom == "" {
		return WatchRequest{}, fmt.Errorf("%s: no Prometheus to watch with (verify.prometheus, or serve's --prometheus)", w.Key())
	}
	p, err := metrics.NewPrometheus(prom)
	if err != nil {
		return WatchRequest{}, err
	}
	aw := svc.Automation.Watch
	req := DrillWatch(p, aw.RequestsQuery, aw.ErrorsQuery, aw.Interval)
	req.Workload, req.For = w, SupervisedFor
	req.Inconclusive = int(SupervisedFor/req.Interval) + 1
	return req, nil
}
