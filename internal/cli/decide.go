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

	"rollback/internal/decide"
	"rollback/internal/metrics"
	"rollback/internal/migrate"
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
	fillDecideFromConfig(f, o)
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

// gatherFacts establishes the flowchart's facts live (database, Prometheus)
// and applies the overrides.
func gatherFacts(ctx context.Context, f *Factory, o *DecideOptions, sev decide.Severity) (decide.Facts, error) {
	facts := decide.Facts{Severity: sev, HotfixETA: o.Hotfix, HotfixKnown: o.Hotfix > 0}
	unknown := func(why string) decide.Bool { return decide.Bool{Source: decide.Unknown, Evidence: why} }
	facts.MigrationRan, facts.CanDownMigrate = dbFacts(ctx, f, o)
	facts.APIAdopted, facts.CanaryBreached = unknown("no --api-adoption-query"), unknown("no --error-rate-query or --latency-ratio-query")
	if url := firstNonEmpty(o.PromURL, f.IO.Getenv("ROLLBACK_PROMETHEUS_URL")); url != "" {
		p, err := metrics.NewPrometheus(url)
		if err != nil {
			return facts, usageError{err: err}
		}
		facts.APIAdopted, facts.CanaryBreached = metricFacts(ctx, f, p, o)
	} else if o.APIQuery != "" || o.ErrQuery != "" || o.LatQuery != "" {
		return facts, usagef("metric queries need --prometheus URL (or $ROLLBACK_PROMETHEUS_URL)")
	}
	for fact, val := range o.Overrides {
		b, err := strconv.ParseBool(*val)
		if err != nil {
			return facts, usagef("--%s: want true or false, got %q", flagOf(fact), *val)
		}
		ov := decide.Bool{Value: b, Source: decide.Override, Evidence: fmt.Sprintf("--%s=%t", flagOf(fact), b)}
		switch fact {
		case "migrationRan":
			facts.MigrationRan = ov
		case "canDownMigrate":
			facts.CanDownMigrate = ov
		case "apiAdopted":
			facts.APIAdopted = ov
		case "canaryBreached":
			facts.CanaryBreached = ov
		}
	}
	return facts, nil
}

// fillDecideFromConfig takes what the flags left empty from the service's
// rollback.yaml: its database (dsnEnv, migrations dir, format),
// Prometheus and the decide: queries (the error rate defaulting to
// verify.errorRateQuery).
func fillDecideFromConfig(f *Factory, o *DecideOptions) {
	defer func() {
		o.DB.Dir = firstNonEmpty(o.DB.Dir, "migrations")
		if o.DB.Format == "" {
			o.DB.Format = "auto"
		}
		if o.APIShare <= 0 {
			o.APIShare = 0.01
		}
	}()
	svc := f.serviceConfig(o.Service)
	if svc == nil {
		return
	}
	if db := svc.Database; db != nil {
		o.DB.DSNEnv = db.DSNEnv
		o.DB.Dir = firstNonEmpty(o.DB.Dir, db.Dir)
		if (o.DB.Format == "" || o.DB.Format == "auto") && db.Format != "" {
			o.DB.Format = db.Format
		}
	}
	if d := svc.Decide; d != nil {
		o.ErrQuery = firstNonEmpty(o.ErrQuery, d.ErrorRateQuery)
		o.LatQuery = firstNonEmpty(o.LatQuery, d.LatencyRatioQuery)
		o.APIQuery = firstNonEmpty(o.APIQuery, d.APIAdoptionQuery)
		if d.APIAdoptionThreshold > 0 && o.APIShare <= 0 {
			o.APIShare = d.APIAdoptionThreshold
		}
	}
	if v := svc.Verify; v != nil {
		o.PromURL = firstNonEmpty(o.PromURL, v.Prometheus)
		o.ErrQuery = firstNonEmpty(o.ErrQuery, v.ErrorRateQuery)
	}
}

// dbFacts establishes "has the migration run" and "can we safely
// down-migrate" from the release record, the history and the drill log.
func dbFacts(ctx context.Context, f *Factory, o *DecideOptions) (ran, can decide.Bool) {
	unknown := func(why string) (decide.Bool, decide.Bool) {
		u := decide.Bool{Source: decide.Unknown, Evidence: why}
		return u, u
	}
	dsn, _ := migrate.LookupDSN(o.DB.DSN, o.DB.DSNEnv, f.IO.Getenv)
	if svc := f.serviceConfig(o.Service); svc != nil && svc.Database == nil && dsn == "" {
		none := decide.Bool{Source: decide.Config, Value: false, Evidence: o.Service + " has no database: in rollback.yaml"}
		return none, none
	}
	if o.DB.Release == "" {
		return unknown("no --release: which release's migration?")
	}
	if dsn == "" {
		return unknown("no database (" + migrate.DSNSources + ")")
	}
	s, err := o.DB.open(ctx, f, true)
	if err != nil {
		return unknown(err.Error())
	}
	defer s.Close()
	rel, err := migrate.LoadRelease(ctx, s.Conn, o.DB.Release)
	if err != nil {
		return unknown(err.Error())
	}
	st, err := s.State(ctx)
	if err != nil {
		return unknown(err.Error())
	}
	from, _ := migrate.ParseVersion(rel.Version)
	if rel.Version == "" {
		from = migrate.Version{}
	}
	ran = decide.Bool{Source: decide.Measured, Value: st.Current.Compare(from) > 0,
		Evidence: fmt.Sprintf("history at %s; release %s started from %s", orNone(st.Current.String()), rel.Name, orNone(rel.Version))}
	p, err := migrate.PlanUndo(s.Source, st, from)
	if err != nil {
		reason := err.Error()
		if !errors.Is(err, migrate.ErrUnsafe) {
			return ran, decide.Bool{Source: decide.Unknown, Evidence: reason}
		}
		return ran, decide.Bool{Source: decide.Measured, Value: false, Evidence: reason}
	}
	logPath := o.DrillLog
	if logPath == "" {
		var err error
		if logPath, err = f.statePath("drills.jsonl"); err != nil {
			return ran, decide.Bool{Source: decide.Unknown, Evidence: "drill log: " + err.Error()}
		}
	}
	dbName := migrate.DatabaseName(s.DSN)
	var untested []string
	for _, step := range p.Steps {
		ok, _, err := migrate.DrillLog{Path: logPath}.Tested(dbName, step.VersionText, step.Script)
		if err != nil || !ok {
			untested = append(untested, step.VersionText)
		}
	}
	if len(untested) > 0 {
		return ran, decide.Bool{Source: decide.Measured, Value: false,
			Evidence: fmt.Sprintf("undo scripts present, but the undo of %s has not passed a drill; run 'rollback db drill'", strings.Join(untested, ", "))}
	}
	return ran, decide.Bool{Source: decide.Measured, Value: true,
		Evidence: fmt.Sprintf("%d undo script(s) present and drilled; history clean", len(p.Steps))}
}

// metricFacts reads API adoption and canary breach from Prometheus.
func metricFacts(ctx context.Context, f *Factory, p metrics.Provider, o *DecideOptions) (api, breach decide.Bool) {
	now := f.Now()
	api = decide.Bool{Source: decide.Unknown, Evidence: "no --api-adoption-query"}
	if o.APIQuery != "" {
		if v, err := p.Query(ctx, o.APIQuery, now); err != nil {
			api.Evidence = err.Error()
		} else {
			api = decide.Bool{Source: decide.Measured, Value: v > o.APIShare,
				Evidence: fmt.Sprintf("new API version share %.2f%% (threshold %.2f%%)", 100*v, 100*o.APIShare)}
		}
	}
	breach = decide.Bool{Source: decide.Unknown, Evidence: "no --error-rate-query or --latency-ratio-query"}
	var parts []string
	measured := false
	if o.ErrQuery != "" {
		if v, err := p.Query(ctx, o.ErrQuery, now); err != nil {
			parts = append(parts, "error rate: "+err.Error())
		} else {
			measured = true
			breach.Value = breach.Value || v > decide.ErrorRateThreshold
			parts = append(parts, fmt.Sprintf("error rate %.2f%% (limit %.0f%%)", 100*v, 100*decide.ErrorRateThreshold))
		}
	}
	if o.LatQuery != "" {
		if v, err := p.Query(ctx, o.LatQuery, now); err != nil {
			parts = append(parts, "latency ratio: "+err.Error())
		} else {
			measured = true
			breach.Value = breach.Value || v > decide.LatencyFactor
			parts = append(parts, fmt.Sprintf("p99 latency %.2fx baseline (limit %.0fx)", v, decide.LatencyFactor))
		}
	}
	if len(parts) > 0 {
		breach.Evidence = strings.Join(parts, "; ")
	}
	if measured {
		breach.Source = decide.Measured
	}
	return api, breach
}

func flagOf(fact string) string {
	for _, ov := range overrideFlags {
		if ov.fact == fact {
			return ov.flag
		}
	}
	return fact
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}
