package cli

import (
	"context"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"rollback/internal/config"
	"rollback/internal/kube"
	"rollback/internal/metrics"
	"rollback/internal/verify"
)

// VerifyOptions are the flags of `rollback verify`.
type VerifyOptions struct {
	Service       string
	PromURL       string
	ErrorQuery    string
	MaxErrorRate  float64
	LatencyQuery  string
	MaxLatency    time.Duration
	LatencyFactor float64
	BaselineAt    string
	Within        time.Duration
	Settle        time.Duration
	SmokeURLs     []string
	Output        string
	set           map[string]bool
}

func newVerifyCmd(f *Factory) *cobra.Command {
	o := &VerifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify SERVICE",
		Short: "Measure whether the rollback worked: pod health, smoke tests, error rate and latency",
		Long: `Verify a rolled-back service, as the runbook's Step 4 says:
  1. pod health: every pod Ready, on the Deployment's image, restarts not climbing;
  2. smoke tests: the HTTP checks of the service's verify.smoke in rollback.yaml
     (and any --smoke-url), with expected status, body and latency;
  3. metrics: the 5xx rate at most --max-error-rate (default 0.1%) and the p99
     latency at most --max-latency, reached within --within (default 5m).
Each check prints what it measured. No data is a failure, never a pass.
Exit code 0 when every check passes, 5 when one fails.`,
		Example: `  rollback verify transaction-service
  rollback verify deployment/transaction-service -n payments --prometheus http://127.0.0.1:9090 \
    --error-rate-query 'sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))' \
    --smoke-url http://127.0.0.1:8080/healthz`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			o.set = map[string]bool{}
			cmd.Flags().Visit(func(fl *pflag.Flag) { o.set[fl.Name] = true })
			return runVerify(cmd.Context(), f, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.PromURL, "prometheus", "", "Prometheus URL (default: the service's verify.prometheus, then $ROLLBACK_PROMETHEUS_URL)")
	fl.StringVar(&o.ErrorQuery, "error-rate-query", "", "PromQL: the 5xx share (0..1)")
	fl.Float64Var(&o.MaxErrorRate, "max-error-rate", 0.001, "largest acceptable error rate (the runbook: < 0.1%)")
	fl.StringVar(&o.LatencyQuery, "latency-query", "", "PromQL: p99 latency in seconds")
	fl.DurationVar(&o.MaxLatency, "max-latency", 0, "largest acceptable p99 latency")
	fl.Float64Var(&o.LatencyFactor, "latency-factor", 0, "largest acceptable p99 latency as a multiple of the pre-release baseline (e.g. 1.5)")
	fl.StringVar(&o.BaselineAt, "baseline-at", "", "when the pre-release baseline is measured: RFC 3339 time (default: just before the newest revision marked bad was created)")
	fl.DurationVar(&o.Within, "within", 5*time.Minute, "how long the metrics may take to recover")
	fl.DurationVar(&o.Settle, "settle", 3*time.Second, "how long to watch restart counts")
	fl.StringArrayVar(&o.SmokeURLs, "smoke-url", nil, "a GET that must answer 200 (repeatable)")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	return cmd
}

// merge fills unset flags from the service's verify section.
func (o *VerifyOptions) merge(v *config.Verify) []config.Smoke {
	if v == nil {
		return nil
	}
	if !o.set["prometheus"] && v.Prometheus != "" {
		o.PromURL = v.Prometheus
	}
	if !o.set["error-rate-query"] && v.ErrorRateQuery != "" {
		o.ErrorQuery = v.ErrorRateQuery
	}
	if !o.set["max-error-rate"] && v.MaxErrorRate > 0 {
		o.MaxErrorRate = v.MaxErrorRate
	}
	if !o.set["latency-query"] && v.LatencyQuery != "" {
		o.LatencyQuery = v.LatencyQuery
	}
	if !o.set["max-latency"] && v.MaxLatency > 0 {
		o.MaxLatency = v.MaxLatency
	}
	if !o.set["within"] && v.Within > 0 {
		o.Within = v.Within
	}
	return v.Smoke
}

type verifyView struct {
	Service string          `json:"service"`
	Passed  bool            `json:"passed"`
	Checks  []verify.Result `json:"checks"`
}

func runVerify(ctx context.Context, f *Factory, o *VerifyOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	if o.MaxErrorRate < 0 || o.MaxErrorRate > 1 {
		return usagef("--max-error-rate is a fraction between 0 and 1 (0.001 is 0.1%%), got %g", o.MaxErrorRate)
	}
	w, err := f.Resolve(o.Service)
	if err != nil {
		return err
	}
	var smokes []config.Smoke
	if w.Service != "" {
		cfg, _ := f.Config()
		smokes = o.merge(cfg.Services[w.Service].Verify)
	}
	for i, u := range o.SmokeURLs {
		smokes = append(smokes, config.Smoke{Name: fmt.Sprintf("url-%d", i+1), URL: u})
	}
	if o.PromURL == "" {
		o.PromURL = f.IO.Getenv("ROLLBACK_PROMETHEUS_URL")
	}
	if (o.ErrorQuery != "" || o.LatencyQuery != "") && o.PromURL == "" {
		return usagef("metric checks need a Prometheus: --prometheus, the service's verify.prometheus, or $ROLLBACK_PROMETHEUS_URL")
	}
	if o.LatencyQuery != "" && o.MaxLatency <= 0 && o.LatencyFactor <= 0 {
		return usagef("--latency-query needs --max-latency (e.g. 500ms) or --latency-factor (e.g. 1.5 times the pre-release baseline)")
	}
	view := verifyView{Service: o.Service, Passed: true}
	add := func(r verify.Result) {
		view.Checks = append(view.Checks, r)
		view.Passed = view.Passed && r.Passed
		if format == "" {
			mark := "✓"
			if !r.Passed {
				mark = "✗"
			}
			fmt.Fprintf(f.IO.ErrOut, "%s %s: %s %s\n", mark, r.Check, r.Measured, r.Message)
		}
	}
	pods, err := verify.Pods(ctx, w.Client, w.Target, o.Settle)
	if err != nil {
		return err
	}
	add(pods)
	client := &http.Client{Timeout: 30 * time.Second}
	for _, s := range smokes {
		add(verify.RunSmoke(ctx, client, s, f.IO.Getenv))
	}
	if o.PromURL != "" {
		p, err := metrics.NewPrometheus(o.PromURL)
		if err != nil {
			return usageError{err: err}
		}
		if o.ErrorQuery != "" {
			r, err := verify.Metric(ctx, p, verify.Threshold{Name: "error-rate", Query: o.ErrorQuery, Max: o.MaxErrorRate, Within: o.Within,
				Unit: func(v float64) string { return fmt.Sprintf("%.3f%%", 100*v) }}, f.Now)
			if err != nil {
				return err
			}
			add(r)
		}
		if o.LatencyQuery != "" && o.LatencyFactor > 0 {
			at, err := baselineTime(ctx, w, o.BaselineAt)
			if err != nil {
				return err
			}
			base, err := p.Query(ctx, o.LatencyQuery, at)
			if err != nil {
				add(verify.Result{Check: "p99-latency", Measured: "no baseline", Message: fmt.Sprintf("pre-release baseline at %s: %v", at.UTC().Format(time.RFC3339), err)})
			} else {
				limit := time.Duration(base * o.LatencyFactor * float64(time.Second))
				if o.MaxLatency <= 0 || limit < o.MaxLatency {
					o.MaxLatency = limit
				}
				fmt.Fprintf(f.IO.ErrOut, "p99 latency baseline %s at %s; limit %.3gx = %s\n",
					time.Duration(base*float64(time.Second)).Round(time.Millisecond), at.UTC().Format(time.RFC3339), o.LatencyFactor, o.MaxLatency.Round(time.Millisecond))
			}
		}
		if o.LatencyQuery != "" && o.MaxLatency > 0 {
			r, err := verify.Metric(ctx, p, verify.Threshold{Name: "p99-latency", Query: o.LatencyQuery, Max: o.MaxLatency.Seconds(), Within: o.Within,
				Unit: func(v float64) string {
					return time.Duration(v * float64(time.Second)).Round(time.Millisecond).String()
				}}, f.Now)
			if err != nil {
				return err
			}
			add(r)
		}
	}
	if format != "" {
		if err := printStructured(f.IO.Out, format, view); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tRESULT\tMEASURED\tNOTE")
		for _, r := range view.Checks {
			res := "pass"
			if !r.Passed {
				res = "FAIL"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, res, r.Measured, r.Message)
		}
		tw.Flush()
	}
	if !view.Passed {
		return fmt.Errorf("%w: see the failing checks above", ErrVerifyFailed)
	}
	return nil
}

// baselineTime is when the pre-release latency is measured: --baseline-at,
// or just before the newest revision marked bad was created.
func baselineTime(ctx context.Context, w *Workload, flag string) (time.Time, error) {
	if flag != "" {
		t, err := time.Parse(time.RFC3339, flag)
		if err != nil {
			return t, usagef("--baseline-at: want an RFC 3339 time such as 2026-11-26T03:00:00Z, got %q", flag)
		}
		return t, nil
	}
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
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
		return time.Time{}, usagef("--latency-factor needs a pre-release baseline: no revision is marked bad, so pass --baseline-at")
	}
	return bad.Created.Add(-time.Second), nil
}
