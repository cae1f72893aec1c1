package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/canary"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/store"
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
	MinSpan       time.Duration
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
    1%), which catches a clearly broken canary in seconds; its evidence
    against the canary accrues at most the threshold per --min-span (30s),
    from a starting third, so a breach needs three intervals and about 20s
    of data, and a healthy canary's blip of errors for a few seconds (a pod
    restarting, a dependency timing out) does not roll it back (0: no such
    limit);
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
	fl.DurationVar(&o.MinSpan, "min-span", canary.DefaultMinSpan, "the sequential test's evidence accrues at most its threshold per this span (0: no limit)")
	fl.DurationVar(&o.AnalysisEvery, "analysis-interval", time.Minute, "Flagger's check interval")
	fl.IntVar(&o.Threshold, "threshold", 3, "Flagger's failed checks before rollback")
	fl.Float64Var(&o.MinSuccess, "min-success", 99, "Flagger's request-success-rate thresholdRange.min, percent")
	fl.IntVar(&o.Inconclusive, "inconclusive", 6, "intervals without canary data before rollback")
	fl.BoolVar(&o.NoRollback, "no-rollback", false, "report a breach but do not roll back")
	fl.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long the rollback may take to roll out")
	fl.StringVarP(&o.Output, "output", "o", "", "print the outcome as json or yaml")
	return cmd
}

func runWatch(ctx context.Context, f *Factory, o *WatchOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	if o.Interval <= 0 || o.For <= 0 || o.AnalysisEvery < o.Interval {
		return usagef("--interval and --for must be positive and --analysis-interval at least --interval")
	}
	if o.MinSpan < 0 {
		return usagef("--min-span %s: expected a duration of 0 or more (0: no limit)", o.MinSpan)
	}
	minSpan := o.MinSpan
	if minSpan == 0 {
		minSpan = -1 // the engine's "none"; its zero is the default
	}
	url := cmp.Or(o.PromURL, f.IO.Getenv("ROLLBACK_PROMETHEUS_URL"))
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
	var s store.Store
	if !o.NoRollback {
		// Opened before watching: a breach must not wait on the store.
		if s, err = f.openStore(ctx); err != nil {
			return err
		}
		defer s.Close()
	}
	out, err := f.engine(s, newRenderer(f.IO, f.Now)).Watch(ctx, engine.WatchRequest{Workload: w, Prometheus: p,
		RequestsQuery: o.RequestsQuery, ErrorsQuery: o.ErrorsQuery, Interval: o.Interval, For: o.For, MinSpan: minSpan,
		AnalysisEvery: o.AnalysisEvery, Threshold: o.Threshold, MinSuccess: o.MinSuccess, Inconclusive: o.Inconclusive,
		NoRollback: o.NoRollback, Timeout: o.Timeout,
		Log: func(line string) {
			fmt.Fprintf(f.IO.ErrOut, "%s  watch: %s\n", f.Now().UTC().Format(time.RFC3339), line)
		}})
	if out == nil {
		return err
	}
	if out.Breach && !o.NoRollback && err != nil {
		if errors.Is(err, engine.ErrBusy) {
			return fmt.Errorf("breach (%s), not acted on twice: %w", out.Reason, err)
		}
		if out.Incident != "" {
			return fmt.Errorf("breach (%s), but the rollback failed: %w; incident %s is open: 'rollback resume %s'", out.Reason, err, out.Incident, out.Incident)
		}
		return fmt.Errorf("breach (%s), but the rollback failed: %w", out.Reason, err)
	}
	if err != nil {
		return err
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
