package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"rollback/internal/canary"
	"rollback/internal/engine"
	"rollback/internal/image"
	"rollback/internal/kube"
	"rollback/internal/metrics"
)

// WatchOptions are the flags of `rollback watch`.
type WatchOptions struct {
	Service       string
	PromURL       string
	RequestsQuery string
	ErrorsQuery   string
	Interval      time.Duration
	For           time.Duration
	AnalysisEvery time.Duration
	Threshold     int
	MinSuccess    float64
	Inconclusive  int
	NoRollback    bool
	Timeout       time.Duration
	Output        string
}

// ErrRolledBack is returned by watch after it rolled the service back.
var ErrRolledBack = errors.New("canary analysis rolled the service back")

func newWatchCmd(f *Factory) *cobra.Command {
	o := &WatchOptions{}
	cmd := &cobra.Command{
		Use:   "watch SERVICE",
		Short: "Watch the new version's metrics and roll back automatically when a threshold breaks",
		Long: `Compare the current revision's version (the canary) with the previous one
(the baseline) every --interval, from Prometheus request and error counts, with
two detectors on the same numbers:
  - a sequential test (canary error rate at least 5x the baseline's and over
    1%), which catches a clearly broken canary in seconds;
  - Flagger's analysis: every --analysis-interval the canary's success rate
    must be at least --min-success (99); --threshold failed checks (3) roll
    back. Intervals without canary data count as inconclusive; --inconclusive
    of them (Argo's inconclusiveLimit) roll back too: no data is never healthy.
On a breach it rolls back as 'rollback run' does, through the whole runbook:
it takes the service's lease, opens an incident whose decision is the
detector's evidence, rolls back (never to a revision marked bad), verifies,
turns the flag off, notifies, blocks the broken version and schedules the
review; 'rollback resume' finishes it after an interruption. A breach while
another rollback of the service runs is recorded on that incident and not
acted on twice. Exit 7 when it rolled back, 0 when the
watch ended (--for) without a breach.

Queries are templates: {{version}} is the image tag, {{interval}} the interval.`,
		Example: `  rollback watch transaction-service --prometheus http://127.0.0.1:9090 --for 15m
  rollback watch deployment/transaction-service -n payments --prometheus http://prom:9090 \
    --interval 10s --no-rollback -o json`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			return runWatch(cmd.Context(), f, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.PromURL, "prometheus", "", "Prometheus URL (default $ROLLBACK_PROMETHEUS_URL)")
	fl.StringVar(&o.RequestsQuery, "requests-query", `sum(increase(http_requests_total{version="{{version}}"}[{{interval}}]))`, "PromQL template: requests of a version over the interval")
	fl.StringVar(&o.ErrorsQuery, "errors-query", `sum(increase(http_requests_total{version="{{version}}",code=~"5.."}[{{interval}}]))`, "PromQL template: 5xx answers of a version over the interval")
	fl.DurationVar(&o.Interval, "interval", 10*time.Second, "how often to measure")
	fl.DurationVar(&o.For, "for", 10*time.Minute, "how long to watch")
	fl.DurationVar(&o.AnalysisEvery, "analysis-interval", time.Minute, "Flagger's check interval")
	fl.IntVar(&o.Threshold, "threshold", 3, "Flagger's failed checks before rollback")
	fl.Float64Var(&o.MinSuccess, "min-success", 99, "Flagger's request-success-rate thresholdRange.min, percent")
	fl.IntVar(&o.Inconclusive, "inconclusive", 6, "intervals without canary data before rollback")
	fl.BoolVar(&o.NoRollback, "no-rollback", false, "report a breach but do not roll back")
	fl.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long the rollback may take to roll out")
	fl.StringVarP(&o.Output, "output", "o", "", "print the outcome as json or yaml")
	return cmd
}

type watchOutcome struct {
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

// tagOf is an image's version: its tag, else its digest.
func tagOf(ref string) string { return image.VersionOf(ref) }

func runWatch(ctx context.Context, f *Factory, o *WatchOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	if o.Interval <= 0 || o.For <= 0 || o.AnalysisEvery < o.Interval {
		return usagef("--interval and --for must be positive and --analysis-interval at least --interval")
	}
	url := firstNonEmpty(o.PromURL, f.IO.Getenv("ROLLBACK_PROMETHEUS_URL"))
	if url == "" {
		return usagef("watch needs a Prometheus: --prometheus URL or $ROLLBACK_PROMETHEUS_URL")
	}
	p, err := metrics.NewPrometheus(url)
	if err != nil {
		return usageError{err: err}
	}
	w, err := f.Resolve(o.Service)
	if err != nil {
		return err
	}
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return err
	}
	cur := h.Current()
	if cur == nil || len(cur.Images) == 0 {
		return fmt.Errorf("%w: %s has no current revision to watch", kube.ErrNoTarget, w.Target.Ref())
	}
	out := watchOutcome{Service: o.Service, Canary: tagOf(cur.Images[0])}
	for i := len(h.Revisions) - 1; i >= 0; i-- {
		if r := h.Revisions[i]; r.Number < cur.Number && len(r.Images) > 0 {
			out.Baseline = tagOf(r.Images[0])
			break
		}
	}
	r := newRenderer(f.IO, f.Now)
	logf := func(format string, a ...any) {
		fmt.Fprintf(f.IO.ErrOut, "%s  watch: %s\n", f.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, a...))
	}
	logf("canary %s against baseline %s, every %s for %s", out.Canary, orNone(out.Baseline), o.Interval, o.For)
	counts := func(version string) (canary.Counts, bool, error) {
		if version == "" {
			return canary.Counts{}, false, nil
		}
		q := func(t string) string {
			return strings.NewReplacer("{{version}}", version, "{{interval}}", promDuration(o.Interval)).Replace(t)
		}
		req, err := p.Query(ctx, q(o.RequestsQuery), f.Now())
		if errors.Is(err, metrics.ErrNoData) || errors.Is(err, metrics.ErrNaN) {
			return canary.Counts{}, false, nil
		}
		if err != nil {
			return canary.Counts{}, false, err
		}
		errs, err := p.Query(ctx, q(o.ErrorsQuery), f.Now())
		if errors.Is(err, metrics.ErrNoData) {
			errs, err = 0, nil // no 5xx series yet: no errors
		}
		if err != nil {
			return canary.Counts{}, false, err
		}
		return canary.Counts{Requests: req, Errors: errs}, req > 0, nil
	}
	seq := &canary.Sequential{}
	flagger := &canary.FlaggerDefault{Interval: int(o.AnalysisEvery / o.Interval), Threshold: o.Threshold, MinSuccess: o.MinSuccess}
	noData := 0
	deadline := f.Now().Add(o.For)
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for f.Now().Before(deadline) && !out.Breach {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		out.Intervals++
		c, ok, err := counts(out.Canary)
		if err != nil {
			return err
		}
		b, _, err := counts(out.Baseline)
		if err != nil {
			return err
		}
		if !ok {
			noData++
			logf("no canary data (%d/%d inconclusive)", noData, o.Inconclusive)
			if noData >= o.Inconclusive {
				out.Breach, out.Detector = true, "inconclusive"
				out.Reason = fmt.Sprintf("%d intervals without data for the canary %s: no data is never read as healthy", noData, out.Canary)
			}
			continue
		}
		noData = 0
		out.CanaryReq += c.Requests
		out.Canary5xx += c.Errors
		v := seq.Observe(c, b)
		logf("canary %.0f req %.0f 5xx, baseline %.0f req %.0f 5xx; sequential LLR %.1f of %.1f", c.Requests, c.Errors, b.Requests, b.Errors, v.LLR, v.Upper)
		switch {
		case v.Breach:
			out.Breach, out.Detector, out.Reason = true, "sequential", v.Reason
		case flagger.Observe(c):
			out.Breach, out.Detector = true, "threshold"
			out.Reason = fmt.Sprintf("%d analysis intervals with success rate under %.4g%% reached the threshold of %d", o.Threshold, o.MinSuccess, o.Threshold)
		}
	}
	if out.Breach {
		logf("BREACH (%s): %s", out.Detector, out.Reason)
		if !o.NoRollback {
			// The breach goes through the engine: the service's lease, an
			// incident decided by the detector, the whole runbook.
			s, err := f.openStore(ctx)
			if err != nil {
				return fmt.Errorf("breach (%s), but the store cannot be opened: %w", out.Reason, err)
			}
			defer s.Close()
			res, err := f.engine(s, r).OnBreach(ctx, w, engine.Breach{Detector: out.Detector, Reason: out.Reason}, o.Timeout)
			if res != nil {
				out.Incident = res.Incident
				out.Rollback = res.Result
			}
			if errors.Is(err, engine.ErrBusy) {
				return fmt.Errorf("breach (%s), not acted on twice: %w", out.Reason, err)
			}
			if err != nil {
				if out.Incident != "" {
					return fmt.Errorf("breach (%s), but the rollback failed: %w; incident %s is open: 'rollback resume %s'", out.Reason, err, out.Incident, out.Incident)
				}
				return fmt.Errorf("breach (%s), but the rollback failed: %w", out.Reason, err)
			}
		}
	} else {
		logf("no breach in %s (%d intervals, canary %.0f requests, %.0f 5xx)", o.For, out.Intervals, out.CanaryReq, out.Canary5xx)
	}
	if format != "" {
		if err := printStructured(f.IO.Out, format, out); err != nil {
			return err
		}
	} else if out.Breach {
		fmt.Fprintf(f.IO.Out, "Breach of %s %s (%s): %s\n", o.Service, out.Canary, out.Detector, out.Reason)
		if out.Rollback != nil && out.Rollback.Plan != nil {
			printRunSummary(f.IO, out.Rollback)
		}
		if out.Incident != "" {
			fmt.Fprintf(f.IO.Out, "Incident %s: checklist with 'rollback status %s'.\n", out.Incident, out.Incident)
		}
	} else {
		fmt.Fprintf(f.IO.Out, "No breach of %s %s in %s.\n", o.Service, out.Canary, o.For)
	}
	if out.Breach && !o.NoRollback {
		return fmt.Errorf("%w: %s", ErrRolledBack, out.Reason)
	}
	if out.Breach {
		return fmt.Errorf("%w (--no-rollback): %s", ErrVerifyFailed, out.Reason)
	}
	return nil
}

// promDuration renders a duration as a PromQL range (10s, 1m, 1500ms).
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}
