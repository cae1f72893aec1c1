package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/verify"
)

// VerifyOptions are the flags of `rollback verify`.
type VerifyOptions struct {
	Service       string
	PromURL       string
	ErrorQuery    string
	RequestsQuery string
	ErrorsQuery   string
	SlowQuery     string
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
  1. pod health: every pod Ready, on the workload's image, none restarting;
  2. smoke tests: the HTTP checks of the service's verify.smoke in rollback.yaml
     (and any --smoke-url), with expected status, body and latency;
  3. metrics: the 5xx rate at most --max-error-rate (default 0.1%) and the p99
     latency at most --max-latency, reached within --within (default 5m).
     With --requests-query and --errors-query (counts over $window, the time
     since the check began), the rate passes only when the counts show it is
     under the bound with 95% confidence: as soon as they do when traffic is
     plentiful; when it is thin, the check waits up to --within and says how
     many requests it had.
Each check prints what it measured. No data is a failure, never a pass.
Exit code 0 when every check passes, 5 when one fails.`,
		Example: `  rollback verify transaction-service
  rollback verify statefulset/ledger -n payments --settle 10s
  rollback verify deployment/transaction-service -n payments --prometheus http://127.0.0.1:9090 \
    --error-rate-query 'sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))' \
    --smoke-url http://127.0.0.1:8080/healthz
  rollback verify transaction-service \
    --requests-query 'sum(increase(http_requests_total[$window]))' \
    --errors-query 'sum(increase(http_requests_total{code=~"5.."}[$window]))'`,
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
	fl.StringVar(&o.RequestsQuery, "requests-query", "", "PromQL: requests over $window (with --errors-query: the rate's 95% confidence bound decides)")
	fl.StringVar(&o.ErrorsQuery, "errors-query", "", "PromQL: failed requests over $window")
	fl.StringVar(&o.SlowQuery, "slow-query", "", "PromQL: requests over $window slower than the latency limit (with --requests-query: p99 as a slow share of at most 1%, 95% confidence)")
	fl.Float64Var(&o.MaxErrorRate, "max-error-rate", 0.001, "largest acceptable error rate (the runbook: < 0.1%)")
	fl.StringVar(&o.LatencyQuery, "latency-query", "", "PromQL: p99 latency in seconds")
	fl.DurationVar(&o.MaxLatency, "max-latency", 0, "largest acceptable p99 latency")
	fl.Float64Var(&o.LatencyFactor, "latency-factor", 0, "largest acceptable p99 latency as a multiple of the pre-release baseline (e.g. 1.5)")
	fl.StringVar(&o.BaselineAt, "baseline-at", "", "when the pre-release baseline is measured: RFC 3339 time (default: just before the newest revision marked bad was created)")
	fl.DurationVar(&o.Within, "within", 5*time.Minute, "how long the metrics may take to recover")
	fl.DurationVar(&o.Settle, "settle", 3*time.Second, "how long to watch restart counts (default: the service's verify.podWindow, else 3s)")
	fl.StringArrayVar(&o.SmokeURLs, "smoke-url", nil, "a GET that must answer 200 (repeatable)")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	return cmd
}

type verifyView struct {
	Service string          `json:"service"`
	Passed  bool            `json:"passed"`
	Checks  []verify.Result `json:"checks"`
}

// spec is the verification asked for: the service's verify section,
// overridden by the flags given.
func (o *VerifyOptions) spec(f *Factory, w *Workload) (verify.Spec, error) {
	var v *config.Verify
	if svc := f.serviceConfig(w.Service); svc != nil {
		v = svc.Verify
	}
	s := verify.SpecFor(v, f.IO.Getenv, f.Now)
	set := func(flag string) bool { return o.set[flag] }
	if set("prometheus") {
		s.Prometheus = o.PromURL
	}
	if set("error-rate-query") {
		s.ErrorQuery = o.ErrorQuery
	}
	if set("requests-query") || set("errors-query") {
		if !strings.Contains(o.RequestsQuery, "$window") || !strings.Contains(o.ErrorsQuery, "$window") {
			return s, usagef("--requests-query and --errors-query go together, each a count over $window, e.g. 'sum(increase(http_requests_total[$window]))'")
		}
		s.RequestsQuery, s.ErrorsQuery = o.RequestsQuery, o.ErrorsQuery
	}
	if set("slow-query") {
		if !strings.Contains(o.SlowQuery, "$window") || s.RequestsQuery == "" {
			return s, usagef("--slow-query counts requests over $window slower than the limit, with --requests-query")
		}
		s.SlowQuery = o.SlowQuery
	}
	if set("max-error-rate") {
		s.MaxErrorRate = o.MaxErrorRate
	}
	if set("latency-query") {
		s.LatencyQuery = o.LatencyQuery
	}
	if set("max-latency") {
		s.MaxLatency = o.MaxLatency
	}
	if set("latency-factor") {
		s.LatencyFactor = o.LatencyFactor
	}
	if set("within") {
		s.Within = o.Within
	}
	if set("settle") || s.Pods.Window == 0 {
		s.Pods.Window = o.Settle
	}
	if o.BaselineAt != "" {
		t, err := time.Parse(time.RFC3339, o.BaselineAt)
		if err != nil {
			return s, usagef("--baseline-at: want an RFC 3339 time such as 2026-11-26T03:00:00Z, got %q", o.BaselineAt)
		}
		s.BaselineAt = t
	}
	for i, u := range o.SmokeURLs {
		s.Smoke = append(s.Smoke, config.Smoke{Name: fmt.Sprintf("url-%d", i+1), URL: u})
	}
	if err := s.Validate(); err != nil {
		return s, usageError{err: err}
	}
	return s, nil
}

func runVerify(ctx context.Context, f *Factory, o *VerifyOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	w, err := f.Resolve(o.Service)
	if err != nil {
		return err
	}
	spec, err := o.spec(f, w)
	if err != nil {
		return err
	}
	spec.Log = func(line string) { fmt.Fprintln(f.IO.ErrOut, line) }
	view := verifyView{Service: o.Service, Passed: true}
	add := func(rs []verify.Result) {
		for _, r := range rs {
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
	}
	rs, err := spec.Health(ctx, w.Client, w.Target)
	if err != nil {
		return err
	}
	add(rs)
	rs, err = spec.Metrics(ctx, w.Client, w.Target)
	if errors.Is(err, verify.ErrNoBaseline) {
		return usageError{err: err}
	}
	if err != nil {
		return err
	}
	add(rs)
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
