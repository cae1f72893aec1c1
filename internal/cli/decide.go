package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/engine"
)

// DecideOptions are the flags of `rollback decide`.
type DecideOptions struct {
	Service  string
	Severity string
	Hotfix   time.Duration

	DB        DBOptions
	DrillLog  string
	PromURL   string
	APIQuery  string
	APIShare  float64
	ErrQuery  string
	LatQuery  string
	Overrides map[string]*string
	Output    string
}

var overrideFlags = []struct{ flag, fact, help string }{
	{"migration-ran", "migrationRan", "override: has the abandoned release's DB migration run (true|false)"},
	{"can-down-migrate", "canDownMigrate", "override: can the database safely be down-migrated (true|false)"},
	{"api-adopted", "apiAdopted", "override: have consumers adopted the new API version (true|false)"},
	{"canary-breached", "canaryBreached", "override: are canary metrics over the thresholds (true|false)"},
}

func newDecideCmd(f *Factory) *cobra.Command {
	o := &DecideOptions{Overrides: map[string]*string{}}
	cmd := &cobra.Command{
		Use:   "decide SERVICE --severity P1..P4",
		Short: "Walk the roll-backward flowchart from live signals and print the decision with its reasons",
		Long: `Decide between rolling forward and rolling back, as the runbook's flowchart
does, from facts gathered live:
  - has the abandoned release's migration run, and can the database safely be
    down-migrated (undo scripts present, history clean, the undo drilled):
    from the history table, the release record ('rollback db record') and the
    drill log; needs --release and a database (--dsn or $ROLLBACK_DB_DSN);
  - have consumers adopted the new API version: --api-adoption-query, a PromQL
    share of traffic on the new version, above --api-adoption-threshold;
  - are canary metrics breached: --error-rate-query above 1%, or
    --latency-ratio-query (canary p99 / baseline p99) above 2.
Every fact can be overridden by a flag; overrides are shown as such. A fact
that cannot be established is unknown and never read as the comfortable
answer.`,
		Example: `  rollback decide transaction-service --severity P1 --hotfix-eta 40m
  rollback decide transaction-service --severity P1 --release v1.2.0 --dir migrations \
    --prometheus http://prometheus:9090 \
    --error-rate-query 'sum(rate(http_requests_total{app="transaction-service",code=~"5.."}[5m])) / sum(rate(http_requests_total{app="transaction-service"}[5m]))'
  rollback decide transaction-service --severity P1 --migration-ran=false -o json`,
		Args: exactArgs(1, "one SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Service = args[0]
			for _, ov := range overrideFlags {
				if !cmd.Flags().Changed(ov.flag) {
					delete(o.Overrides, ov.fact)
				}
			}
			return runDecide(cmd.Context(), f, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Severity, "severity", "", "incident severity: P1, P2, P3 or P4 (required)")
	fl.DurationVar(&o.Hotfix, "hotfix-eta", 0, "how far away a fix is (e.g. 40m); not given: no hotfix in sight")
	fl.StringVar(&o.DB.DSN, "dsn", "", "PostgreSQL connection string (default $ROLLBACK_DB_DSN, then $DATABASE_URL)")
	fl.StringVar(&o.DB.Dir, "dir", "", "directory of migration scripts (default: database.dir in rollback.yaml, else migrations)")
	fl.StringVar(&o.DB.Release, "release", "", "the abandoned release, as recorded with 'rollback db record'")
	fl.StringVar(&o.DrillLog, "drill-log", "", "drill log (default: the state directory's drills.jsonl)")
	fl.StringVar(&o.PromURL, "prometheus", "", "Prometheus URL for the metric facts (default $ROLLBACK_PROMETHEUS_URL)")
	fl.StringVar(&o.APIQuery, "api-adoption-query", "", "PromQL: share (0..1) of traffic on the new API version")
	fl.Float64Var(&o.APIShare, "api-adoption-threshold", 0, "share above which the new API version counts as adopted (default 0.01, or decide.apiAdoptionThreshold)")
	fl.StringVar(&o.ErrQuery, "error-rate-query", "", "PromQL: the new version's error rate (0..1); over 0.01 is a breach")
	fl.StringVar(&o.LatQuery, "latency-ratio-query", "", "PromQL: new p99 latency / baseline p99 latency; over 2 is a breach")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	for _, ov := range overrideFlags {
		o.Overrides[ov.fact] = fl.String(ov.flag, "", ov.help)
	}
	o.DB.Format = "auto"
	return cmd
}

type decideView struct {
	Service  string          `json:"service"`
	Facts    decide.Facts    `json:"facts"`
	Decision decide.Decision `json:"decision"`
}

func runDecide(ctx context.Context, f *Factory, o *DecideOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	if o.Severity == "" {
		return usagef("--severity is required: P1 (system down, data corruption, security), P2, P3 or P4")
	}
	sev, err := decide.ParseSeverity(o.Severity)
	if err != nil {
		return usageError{err: err}
	}
	facts, err := gatherFacts(ctx, f, o, sev)
	if err != nil {
		return err
	}
	d := decide.Decide(facts)
	if format != "" {
		return printStructured(f.IO.Out, format, decideView{Service: o.Service, Facts: facts, Decision: d})
	}
	fmt.Fprintf(f.IO.Out, "Decision for %s (%s): %s\n\n", o.Service, sev, strings.ToUpper(strings.ReplaceAll(string(d.Action), "-", " ")))
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	for _, r := range d.Reasons {
		src := ""
		if r.Source != "" {
			src = "[" + string(r.Source) + "]"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Question, r.Answer, src, r.Evidence)
	}
	tw.Flush()
	for _, n := range d.Notes {
		fmt.Fprintf(f.IO.Out, "note: %s\n", n)
	}
	return nil
}

// request is the flags as the engine's facts request; the service's
// rollback.yaml fills what they leave empty.
func (o *DecideOptions) request(sev decide.Severity) (engine.FactsRequest, error) {
	r := engine.FactsRequest{Service: o.Service, Severity: sev, Hotfix: o.Hotfix,
		DSN: o.DB.DSN, Dir: o.DB.Dir, Format: o.DB.Format, Release: o.DB.Release, DrillLog: o.DrillLog,
		Prometheus: o.PromURL, APIQuery: o.APIQuery, APIShare: o.APIShare, ErrQuery: o.ErrQuery, LatQuery: o.LatQuery,
		Overrides: map[string]engine.Override{}}
	for fact, val := range o.Overrides {
		b, err := strconv.ParseBool(*val)
		if err != nil {
			return r, usagef("--%s: want true or false, got %q", flagOf(fact), *val)
		}
		r.Overrides[fact] = engine.Override{Value: b, Evidence: fmt.Sprintf("--%s=%t", flagOf(fact), b)}
	}
	return r, nil
}

// gatherFacts asks the engine for the flowchart's facts.
func gatherFacts(ctx context.Context, f *Factory, o *DecideOptions, sev decide.Severity) (decide.Facts, error) {
	r, err := o.request(sev)
	if err != nil {
		return decide.Facts{}, err
	}
	facts, err := f.engine(nil, nil).Facts(ctx, r)
	if errors.Is(err, engine.ErrMetricsWithoutPrometheus) {
		return facts, usageError{err: err}
	}
	return facts, err
}

func flagOf(fact string) string {
	for _, ov := range overrideFlags {
		if ov.fact == fact {
			return ov.flag
		}
	}
	return fact
}
