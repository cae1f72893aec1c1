// Package verify measures whether a rollback worked, as the runbook's
// Step 4 says: pod health, smoke tests against the rolled-back version, and
// the error rate and latency recovered in the metrics. Every check reports
// the value it measured; nothing is assumed.
package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/metrics"
)

// Result is one check's verdict with what it measured.
type Result struct {
	Check    string `json:"check"`
	Passed   bool   `json:"passed"`
	Measured string `json:"measured"`
	Message  string `json:"message,omitempty"`
}

// PodCheck says over which window pod restarts are counted.
type PodCheck struct {
	// Since is when the rollback began: a container that restarted since
	// then counts, so crashes during the rollout are seen without waiting
	// (zero: only restarts during Window count).
	Since time.Time
	// Window is how long after Since the check watches; the part of it
	// that has not passed yet is waited for (zero: no wait).
	Window time.Duration
}

// Pods checks that every pod of the workload is Ready and runs its
// template's image(s), that there are as many as desired, and that no
// container restarted since the rollback began (or over the window).
func Pods(ctx context.Context, cs kubernetes.Interface, t kube.Target, pc PodCheck, now func() time.Time) (Result, error) {
	r := Result{Check: "pod-health"}
	if now == nil {
		now = time.Now
	}
	since := pc.Since
	if since.IsZero() {
		since = now()
	}
	if wait := since.Add(pc.Window).Sub(now()); wait > 0 {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(wait):
		}
	}
	h, err := kube.GetHistory(ctx, cs, t)
	if err != nil {
		return r, err
	}
	if h.LB != nil {
		return targetHealth(ctx, h)
	}
	want := images(h.Template.Spec.Containers)
	pods, err := kube.ListPods(ctx, cs, h)
	if err != nil {
		return r, err
	}
	ready, total := 0, 0
	var bad, restarted []string
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		total++
		if kube.PodReady(&p) {
			ready++
		}
		if got := images(p.Spec.Containers); got != want {
			bad = append(bad, fmt.Sprintf("%s runs %s", p.Name, got))
		}
		for _, c := range p.Status.ContainerStatuses {
			if restartedSince(c, since) {
				restarted = append(restarted, fmt.Sprintf("%s/%s (%d restarts)", p.Name, c.Name, c.RestartCount))
			}
		}
	}
	desired := h.Desired()
	window := "since the rollback began"
	if pc.Since.IsZero() {
		window = "over " + pc.Window.String()
	}
	r.Measured = fmt.Sprintf("%d/%d ready (desired %d) on %s; %d container(s) restarted %s", ready, total, desired, want, len(restarted), window)
	var problems []string
	if ready < int(desired) || ready < total {
		problems = append(problems, "not every pod is Ready")
	}
	if len(bad) > 0 {
		problems = append(problems, "pods on another image: "+strings.Join(bad, "; "))
	}
	if len(restarted) > 0 {
		problems = append(problems, "restarting: "+strings.Join(restarted, "; "))
	}
	r.Passed = len(problems) == 0
	r.Message = strings.Join(problems, "; ")
	return r, nil
}

// targetHealth is the pod check of a load balancer's colour: every
// registered target of the target group the listener forwards to is
// healthy.
func targetHealth(ctx context.Context, h *kube.History) (Result, error) {
	r := Result{Check: "target-health"}
	cur := h.Current()
	healthy, total, msg, err := h.LB.Health(ctx, cur.Object)
	if err != nil {
		return r, err
	}
	r.Measured = fmt.Sprintf("%d/%d target(s) of %s healthy (%s)", healthy, total, cur.Colour, msg)
	r.Passed = total > 0 && healthy == total
	if !r.Passed {
		r.Message = "not every target is healthy"
	}
	return r, nil
}

// restartedSince: the container's last termination (a restart) finished
// at or after since.
func restartedSince(c corev1.ContainerStatus, since time.Time) bool {
	t := c.LastTerminationState.Terminated
	return c.RestartCount > 0 && t != nil && !t.FinishedAt.Time.Before(since.Truncate(time.Second))
}

func images(cs []corev1.Container) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Image)
	}
	return strings.Join(out, ",")
}

// RunSmoke runs one smoke check. Header values may name environment
// variables as ${NAME}; their values are never reported.
func RunSmoke(ctx context.Context, c *http.Client, s config.Smoke, getenv func(string) string) Result {
	r := Result{Check: "smoke:" + s.Name}
	method := s.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL, nil)
	if err != nil {
		r.Message = err.Error()
		return r
	}
	for k, v := range s.Headers {
		req.Header.Set(k, os.Expand(v, getenv))
	}
	start := time.Now()
	resp, err := c.Do(req)
	lat := time.Since(start)
	if err != nil {
		r.Measured, r.Message = fmt.Sprintf("no answer after %s", lat.Round(time.Millisecond)), err.Error()
		return r
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	want := s.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	r.Measured = fmt.Sprintf("%s %s -> %d in %s", method, s.URL, resp.StatusCode, lat.Round(time.Millisecond))
	var problems []string
	if resp.StatusCode != want {
		problems = append(problems, fmt.Sprintf("status %d, want %d", resp.StatusCode, want))
	}
	if s.ExpectBody != "" && !strings.Contains(string(body), s.ExpectBody) {
		problems = append(problems, fmt.Sprintf("body does not contain %q", s.ExpectBody))
	}
	if s.MaxLatency > 0 && lat > s.MaxLatency {
		problems = append(problems, fmt.Sprintf("latency %s over %s", lat.Round(time.Millisecond), s.MaxLatency))
	}
	r.Passed, r.Message = len(problems) == 0, strings.Join(problems, "; ")
	return r
}

// Threshold is a metric check: Query's value must be at most Max, and the
// check passes as soon as it is, within the Within window.
type Threshold struct {
	Name   string
	Query  string
	Max    float64
	Unit   func(float64) string
	Within time.Duration
	Every  time.Duration
}

// poll runs try every every until it says done or within has passed
// (each try's queries bounded by what is left of within, and a second);
// at the end the result's message says it still did not hold.
func poll(ctx context.Context, r *Result, within, every time.Duration, now func() time.Time, try func(qctx context.Context) (done bool)) (Result, error) {
	deadline := now().Add(within)
	if every <= 0 {
		every = 5 * time.Second
	}
	for {
		qctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Second))
		done := try(qctx)
		cancel()
		if ctx.Err() != nil {
			return *r, ctx.Err()
		}
		if done {
			return *r, nil
		}
		left := deadline.Sub(now())
		if left <= 0 {
			r.Message += fmt.Sprintf(" (still, after %s)", within)
			return *r, nil
		}
		select {
		case <-ctx.Done():
			return *r, ctx.Err()
		case <-time.After(min(every, left)):
		}
	}
}

// queryFailed says in r what a failed query means: no data (a failure,
// never healthy) or an unreachable Prometheus (retried).
func queryFailed(r *Result, err error, failures *int) {
	if errors.Is(err, metrics.ErrNoData) || errors.Is(err, metrics.ErrNaN) {
		r.Measured, r.Message = "no data", err.Error()
		return
	}
	*failures++
	r.Measured, r.Message = "unreachable", fmt.Sprintf("%d failed quer%s, last: %v", *failures, plural(*failures, "y", "ies"), err)
}

// Metric polls the query until it is at most Max or Within has passed. No
// data and NaN count as failing, never as healthy. An unreachable or
// silent Prometheus is retried, each query bounded by what is left of
// Within, until Within runs out; the result then says what was seen.
func Metric(ctx context.Context, p metrics.Provider, th Threshold, now func() time.Time) (Result, error) {
	r := Result{Check: th.Name}
	unit := th.Unit
	if unit == nil {
		unit = func(v float64) string { return fmt.Sprintf("%g", v) }
	}
	failures := 0
	return poll(ctx, &r, th.Within, th.Every, now, func(qctx context.Context) bool {
		v, err := p.Query(qctx, th.Query, now())
		if err != nil {
			queryFailed(&r, err, &failures)
			return false
		}
		r.Measured = unit(v)
		if v <= th.Max {
			r.Passed, r.Message = true, fmt.Sprintf("at most %s", unit(th.Max))
			return true
		}
		r.Message = fmt.Sprintf("over %s", unit(th.Max))
		return false
	})
}

// Counts is an error-rate check from request and error counts: it passes
// when the upper bound of the rate's one-sided 95% confidence interval
// (Wilson's score interval) is at most Max.
type Counts struct {
	// Check names the result (default error-rate); What the counted
	// requests are (default errors).
	Check, What string
	// Requests and Errors are PromQL counts over $window, replaced with
	// the time since the check began (whole seconds).
	Requests, Errors string
	Max              float64
	Within, Every    time.Duration
}

// z95 is the one-sided 95% normal quantile.
const z95 = 1.6448536269514722

// Bounds are the ends of the one-sided 95% Wilson score interval of a
// rate of errors in n requests ([0, 1] when n is 0).
func Bounds(errors, n float64) (lower, upper float64) {
	if n <= 0 {
		return 0, 1
	}
	p := min(max(errors/n, 0), 1)
	z2 := z95 * z95
	centre := p + z2/(2*n)
	spread := z95 * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	return max((centre-spread)/(1+z2/n), 0), min((centre+spread)/(1+z2/n), 1)
}

// CountedRate polls the counts since it began and passes as soon as they
// show, with 95% confidence, that the error rate is at most th.Max:
// plentiful traffic finishes in seconds, thin traffic waits up to
// th.Within and then says how many requests it had and what bound they
// allow. The result carries the measured rate, the bound and the count.
func CountedRate(ctx context.Context, p metrics.Provider, th Counts, now func() time.Time) (Result, error) {
	r := Result{Check: cmp.Or(th.Check, "error-rate")}
	what := cmp.Or(th.What, "errors")
	start := now()
	pct := func(v float64) string { return fmt.Sprintf("%.3f%%", 100*v) }
	failures := 0
	return poll(ctx, &r, th.Within, th.Every, now, func(qctx context.Context) bool {
		window := fmt.Sprintf("%ds", max(int(math.Ceil(now().Sub(start).Seconds())), 1))
		n, err := p.Query(qctx, strings.ReplaceAll(th.Requests, "$window", window), now())
		var e float64
		if err == nil {
			e, err = p.Query(qctx, strings.ReplaceAll(th.Errors, "$window", window), now())
			if errors.Is(err, metrics.ErrNoData) && n > 0 {
				e, err = 0, nil // no failed request has been counted
			}
		}
		if err != nil {
			queryFailed(&r, err, &failures)
			return false
		}
		n, e = math.Round(n), math.Round(e)
		lo, up := Bounds(e, n)
		rate := 0.0
		if n > 0 {
			rate = e / n
		}
		r.Measured = fmt.Sprintf("%s %s (%.0f of %.0f requests in %s; 95%% upper bound %s)", pct(rate), what, e, n, window, pct(up))
		switch {
		case n > 0 && up <= th.Max:
			r.Passed, r.Message = true, "upper bound at most "+pct(th.Max)
			return true
		case lo > th.Max:
			r.Message = "over " + pct(th.Max) + " with 95% confidence"
		default:
			r.Message = fmt.Sprintf("not enough requests yet to show the rate is under %s with 95%% confidence", pct(th.Max))
		}
		return false
	})
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
