package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is what `rollback serve` exports about itself on /metrics.
type Metrics struct {
	Registry      *prometheus.Registry
	TimeToRecover *prometheus.HistogramVec
	Runs          *prometheus.CounterVec
	StepDuration  *prometheus.HistogramVec
	Triggers      *prometheus.CounterVec
	DrillsDue     *prometheus.GaugeVec
	Leader        prometheus.Gauge
}

// NewMetrics registers the server's metrics on a registry of its own
// (with the Go and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		TimeToRecover: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rollback_time_to_recover_seconds", Help: "From the incident's declaration to verified recovery.",
			Buckets: []float64{15, 30, 60, 120, 300, 600, 900, 1800, 3600}}, []string{"service"}),
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollback_runs_total", Help: "Rollback runs by how they ended (recovered, failed, interrupted)."}, []string{"service", "outcome"}),
		StepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rollback_step_duration_seconds", Help: "Runbook step durations.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 10)}, []string{"step", "outcome"}),
		Triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollback_triggers_total", Help: "Triggers (alerts, chat commands, API runs) by source and what they did."}, []string{"source", "action"}),
		DrillsDue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rollback_drills_due", Help: "1 when a rollback test of the runbook's schedule is due or overdue."}, []string{"service", "kind"}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rollback_leader", Help: "1 while this replica leads."}),
	}
	m.Registry.MustRegister(m.TimeToRecover, m.Runs, m.StepDuration, m.Triggers, m.DrillsDue, m.Leader,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
