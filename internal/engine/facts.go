package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/migrate"
)

// FactsRequest says where the decision flowchart's facts come from. Empty
// fields are taken from the service's rollback.yaml (database, Prometheus,
// decide: and verify: queries).
type FactsRequest struct {
	Service  string
	Severity decide.Severity
	Hotfix   time.Duration

	DSN, Dir, Format string
	Release          string // the abandoned release ('rollback db record')
	DrillLog         string // default: the state directory's drills.jsonl

	Prometheus string // default: verify.prometheus, then $ROLLBACK_PROMETHEUS_URL
	APIQuery   string
	APIShare   float64 // default decide.apiAdoptionThreshold, else 0.01
	ErrQuery   string
	LatQuery   string

	// Overrides replace measured facts: migrationRan, canDownMigrate,
	// apiAdopted, canaryBreached; Evidence says who set them.
	Overrides map[string]Override
}

// Override is an operator's answer to one of the flowchart's questions.
type Override struct {
	Value    bool
	Evidence string // e.g. --api-adopted=false
}

// ErrMetricsWithoutPrometheus: metric queries were given and no Prometheus.
var ErrMetricsWithoutPrometheus = errors.New("metric queries need a Prometheus: --prometheus URL, verify.prometheus or $ROLLBACK_PROMETHEUS_URL")

// withConfig fills what the request left empty from the service's
// rollback.yaml.
func (e *Engine) withConfig(r FactsRequest) (FactsRequest, string) {
	dsnEnv := ""
	if svc := e.service(r.Service); svc != nil {
		if db := svc.Database; db != nil {
			dsnEnv = db.DSNEnv
			r.Dir = cmp.Or(r.Dir, db.Dir)
			if r.Format == "" || r.Format == "auto" {
				r.Format = db.Format
			}
		}
		if d := svc.Decide; d != nil {
			r.ErrQuery = cmp.Or(r.ErrQuery, d.ErrorRateQuery)
			r.LatQuery = cmp.Or(r.LatQuery, d.LatencyRatioQuery)
			r.APIQuery = cmp.Or(r.APIQuery, d.APIAdoptionQuery)
			if r.APIShare <= 0 {
				r.APIShare = d.APIAdoptionThreshold
			}
		}
		if v := svc.Verify; v != nil {
			r.Prometheus = cmp.Or(r.Prometheus, v.Prometheus)
			r.ErrQuery = cmp.Or(r.ErrQuery, v.ErrorRateQuery)
		}
	}
	r.Dir = cmp.Or(r.Dir, "migrations")
	r.Format = cmp.Or(r.Format, "auto")
	r.Prometheus = cmp.Or(r.Prometheus, e.getenv("ROLLBACK_PROMETHEUS_URL"))
	if r.APIShare <= 0 {
		r.APIShare = 0.01
	}
	return r, dsnEnv
}

// Facts establishes the flowchart's facts live (database, drill log,
// Prometheus) and applies the overrides. A fact that cannot be
// established is unknown, never the comfortable answer.
func (e *Engine) Facts(ctx context.Context, r FactsRequest) (decide.Facts, error) {
	r, dsnEnv := e.withConfig(r)
	facts := decide.Facts{Severity: r.Severity, HotfixETA: r.Hotfix, HotfixKnown: r.Hotfix > 0}
	unknown := func(why string) decide.Bool { return decide.Bool{Source: decide.Unknown, Evidence: why} }
	facts.MigrationRan, facts.CanDownMigrate = e.dbFacts(ctx, r, dsnEnv)
	facts.APIAdopted, facts.CanaryBreached = unknown("no --api-adoption-query"), unknown("no --error-rate-query or --latency-ratio-query")
	if r.Prometheus != "" {
		p, err := metrics.NewPrometheus(r.Prometheus)
		if err != nil {
			return facts, err
		}
		facts.APIAdopted, facts.CanaryBreached = e.metricFacts(ctx, p, r)
	} else if r.APIQuery != "" || r.ErrQuery != "" || r.LatQuery != "" {
		return facts, ErrMetricsWithoutPrometheus
	}
	for fact, ov := range r.Overrides {
		b := decide.Bool{Value: ov.Value, Source: decide.Override, Evidence: ov.Evidence}
		switch fact {
		case "migrationRan":
			facts.MigrationRan = b
		case "canDownMigrate":
			facts.CanDownMigrate = b
		case "apiAdopted":
			facts.APIAdopted = b
		case "canaryBreached":
			facts.CanaryBreached = b
		default:
			return facts, fmt.Errorf("unknown fact %q to override", fact)
		}
	}
	return facts, nil
}

// dbFacts establishes "has the migration run" and "can we safely
// down-migrate" from the release record, the history and the drill log.
func (e *Engine) dbFacts(ctx context.Context, r FactsRequest, dsnEnv string) (ran, can decide.Bool) {
	unknown := func(why string) (decide.Bool, decide.Bool) {
		u := decide.Bool{Source: decide.Unknown, Evidence: why}
		return u, u
	}
	dsn, _ := migrate.LookupDSN(r.DSN, dsnEnv, e.getenv)
	if svc := e.service(r.Service); svc != nil && svc.Database == nil && dsn == "" {
		none := decide.Bool{Source: decide.Config, Value: false, Evidence: r.Service + " has no database: in rollback.yaml"}
		return none, none
	}
	if r.Release == "" {
		return unknown("no --release: which release's migration?")
	}
	if dsn == "" {
		return unknown("no database (" + migrate.DSNSources + ")")
	}
	p, err := migrate.Open(ctx, migrate.ProviderOptions{DSN: dsn, Dir: r.Dir, Format: r.Format, NeedSource: true})
	if err != nil {
		return unknown(err.Error())
	}
	defer p.Close()
	from, rel, err := p.Release(ctx, r.Release)
	if err != nil {
		return unknown(err.Error())
	}
	st, err := p.State(ctx)
	if err != nil {
		return unknown(err.Error())
	}
	ran = decide.Bool{Source: decide.Measured, Value: st.Current.Compare(from) > 0,
		Evidence: fmt.Sprintf("history at %s; release %s started from %s", orNone(st.Current.String()), rel.Name, orNone(rel.Version))}
	plan, err := p.PlanFrom(st, from)
	if err != nil {
		reason := err.Error()
		if !errors.Is(err, migrate.ErrUnsafe) {
			return ran, decide.Bool{Source: decide.Unknown, Evidence: reason}
		}
		return ran, decide.Bool{Source: decide.Measured, Value: false, Evidence: reason}
	}
	logPath := r.DrillLog
	if logPath == "" {
		if e.StateDir == nil {
			return ran, decide.Bool{Source: decide.Unknown, Evidence: "no drill log"}
		}
		if logPath, err = e.StateDir("drills.jsonl"); err != nil {
			return ran, decide.Bool{Source: decide.Unknown, Evidence: "drill log: " + err.Error()}
		}
	}
	dbName := migrate.DatabaseName(p.DSN)
	var untested []string
	for _, step := range plan.Steps {
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
		Evidence: fmt.Sprintf("%d undo script(s) present and drilled; history clean", len(plan.Steps))}
}

// metricFacts reads API adoption and canary breach from Prometheus.
func (e *Engine) metricFacts(ctx context.Context, p metrics.Provider, r FactsRequest) (api, breach decide.Bool) {
	now := e.now()
	api = decide.Bool{Source: decide.Unknown, Evidence: "no --api-adoption-query"}
	if r.APIQuery != "" {
		if v, err := p.Query(ctx, r.APIQuery, now); err != nil {
			api.Evidence = err.Error()
		} else {
			api = decide.Bool{Source: decide.Measured, Value: v > r.APIShare,
				Evidence: fmt.Sprintf("new API version share %.2f%% (threshold %.2f%%)", 100*v, 100*r.APIShare)}
		}
	}
	breach = decide.Bool{Source: decide.Unknown, Evidence: "no --error-rate-query or --latency-ratio-query"}
	var parts []string
	measured := false
	if r.ErrQuery != "" {
		if v, err := p.Query(ctx, r.ErrQuery, now); err != nil {
			parts = append(parts, "error rate: "+err.Error())
		} else {
			measured = true
			breach.Value = breach.Value || v > decide.ErrorRateThreshold
			parts = append(parts, fmt.Sprintf("error rate %.2f%% (limit %.0f%%)", 100*v, 100*decide.ErrorRateThreshold))
		}
	}
	if r.LatQuery != "" {
		if v, err := p.Query(ctx, r.LatQuery, now); err != nil {
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
