// Package decide is the runbook's roll-backward decision flowchart as a
// pure function: Facts in, a Decision with every reason out. Gathering the
// facts (from the history table, Prometheus, the cluster) happens elsewhere.
package decide

import (
	"fmt"
	"time"
)

// Action is what to do.
type Action string

// The flowchart's outcomes, plus "no action" for what is not a trigger.
const (
	NoAction                Action = "no-action"
	RollForward             Action = "roll-forward"
	RollBack                Action = "roll-back"
	RollBackWithDownMigrate Action = "roll-back-with-down-migration"
	RollForwardOnlyOption   Action = "roll-forward-only-option"
)

// Severity of the incident.
type Severity string

// Severities.
const (
	P1 Severity = "P1"
	P2 Severity = "P2"
	P3 Severity = "P3"
	P4 Severity = "P4"
)

// ParseSeverity accepts P1..P4 (case-insensitive).
func ParseSeverity(s string) (Severity, error) {
	switch sv := Severity(upper(s)); sv {
	case P1, P2, P3, P4:
		return sv, nil
	}
	return "", fmt.Errorf("invalid severity %q: expected P1, P2, P3 or P4", s)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}

// Source says where a fact came from.
type Source string

// Fact sources.
const (
	Measured Source = "measured" // read live from a system
	Override Source = "override" // set by a human with a flag
	Config   Source = "config"   // stated by rollback.yaml (e.g. no database)
	Unknown  Source = "unknown"  // could not be established
)

// Bool is a yes/no fact with its provenance.
type Bool struct {
	Value    bool   `json:"value"`
	Source   Source `json:"source"`
	Evidence string `json:"evidence,omitempty"`
}

// Known reports whether the fact was established.
func (b Bool) Known() bool { return b.Source != Unknown && b.Source != "" }

// Facts are the inputs of the flowchart.
type Facts struct {
	Severity Severity `json:"severity"`
	// HotfixETA is how far away a fix is; zero with HotfixKnown false
	// means nobody knows.
	HotfixETA   time.Duration `json:"hotfixEta"`
	HotfixKnown bool          `json:"hotfixKnown"`
	// MigrationRan: the abandoned release's database migration has run.
	MigrationRan Bool `json:"migrationRan"`
	// CanDownMigrate: undo scripts present, database clean, drill passed.
	CanDownMigrate Bool `json:"canDownMigrate"`
	// APIAdopted: consumers already use the new API version.
	APIAdopted Bool `json:"apiAdopted"`
	// CanaryBreached: error rate > 1% or latency > 2x baseline.
	CanaryBreached Bool `json:"canaryBreached"`
}

// Reason is one step of the flowchart with the fact it turned on.
type Reason struct {
	Question string `json:"question"`
	Answer   string `json:"answer"`
	Source   Source `json:"source,omitempty"`
	Evidence string `json:"evidence,omitempty"`
}

// Decision is the flowchart's result.
type Decision struct {
	Action  Action   `json:"action"`
	Reasons []Reason `json:"reasons"`
	Notes   []string `json:"notes,omitempty"`
}

// Rules from the runbook.
const (
	HotfixWindow       = 15 * time.Minute // "Is a hotfix available in < 15 min?"
	SlowFixLowerBound  = 30 * time.Minute // "fix > 30–60 minutes away"
	ErrorRateThreshold = 0.01             // "error rate > 1%"
	LatencyFactor      = 2.0              // "latency > 2x"
)

// Decide walks the flowchart:
//
//	P1 incident (or canary breach) → hotfix in < 15 min? yes: roll forward.
//	no → has the DB migration run? no: roll back immediately.
//	yes → can we safely down-migrate? yes: roll back + down-migrate;
//	no: roll forward (only option).
//
// Unknown facts are never read as the comfortable answer: an unknown
// "migration ran" is treated as ran, an unknown "can down-migrate" as no.
// Consumers having adopted the new API version rules a rollback out.
func Decide(f Facts) Decision {
	d := Decision{}
	add := func(q, a string, b *Bool) {
		r := Reason{Question: q, Answer: a}
		if b != nil {
			r.Source, r.Evidence = b.Source, b.Evidence
		}
		d.Reasons = append(d.Reasons, r)
	}
	trigger := f.Severity == P1 || f.CanaryBreached.Known() && f.CanaryBreached.Value
	switch {
	case f.Severity == P1 && f.CanaryBreached.Value:
		add("Is this a rollback trigger?", "yes: P1 incident, and canary metrics breached the thresholds", &f.CanaryBreached)
	case f.Severity == P1:
		add("Is this a rollback trigger?", "yes: P1 incident (system down, data corruption or security vulnerability)", nil)
	case trigger:
		add("Is this a rollback trigger?", fmt.Sprintf("yes: canary metrics breached (error rate > %.0f%% or latency > %.0fx baseline), though severity is %s", ErrorRateThreshold*100, LatencyFactor, orNone(string(f.Severity))), &f.CanaryBreached)
	default:
		add("Is this a rollback trigger?", fmt.Sprintf("no: severity %s and no canary breach; fix forward through the normal release process", orNone(string(f.Severity))), &f.CanaryBreached)
		d.Action = NoAction
		return d
	}
	switch {
	case f.HotfixKnown && f.HotfixETA < HotfixWindow:
		add("Is a hotfix available in < 15 min?", fmt.Sprintf("yes: ETA %s", f.HotfixETA), nil)
		d.Action = RollForward
		return d
	case f.HotfixKnown:
		add("Is a hotfix available in < 15 min?", fmt.Sprintf("no: ETA %s", f.HotfixETA), nil)
		if f.HotfixETA < SlowFixLowerBound {
			d.Notes = append(d.Notes, fmt.Sprintf("the fix is %s away: the flowchart's 15-minute rule says roll back, though the trigger list only calls a fix more than 30–60 minutes away 'not quickly fixable'", f.HotfixETA))
		}
	default:
		add("Is a hotfix available in < 15 min?", "no: no hotfix ETA was given", nil)
	}
	if f.APIAdopted.Known() && f.APIAdopted.Value {
		add("Has the new API version been adopted by consumers?", "yes: rolling back would break them", &f.APIAdopted)
		d.Action = RollForwardOnlyOption
		return d
	}
	if f.APIAdopted.Known() {
		add("Has the new API version been adopted by consumers?", "no", &f.APIAdopted)
	} else {
		add("Has the new API version been adopted by consumers?", "unknown: not measured; check before rolling back", &f.APIAdopted)
		d.Notes = append(d.Notes, "API adoption is unknown: configure the adoption query or pass --api-adopted=false after checking")
	}
	ran := f.MigrationRan.Value || !f.MigrationRan.Known()
	if !ran {
		add("Has the DB migration run?", "no", &f.MigrationRan)
		d.Action = RollBack
		return d
	}
	if f.MigrationRan.Known() {
		add("Has the DB migration run?", "yes", &f.MigrationRan)
	} else {
		add("Has the DB migration run?", "unknown: treated as yes", &f.MigrationRan)
	}
	if f.CanDownMigrate.Known() && f.CanDownMigrate.Value {
		add("Can we safely down-migrate?", "yes", &f.CanDownMigrate)
		d.Action = RollBackWithDownMigrate
		return d
	}
	if f.CanDownMigrate.Known() {
		add("Can we safely down-migrate?", "no", &f.CanDownMigrate)
	} else {
		add("Can we safely down-migrate?", "unknown: treated as no", &f.CanDownMigrate)
	}
	d.Action = RollForwardOnlyOption
	return d
}

func orNone(s string) string {
	if s == "" {
		return "not given"
	}
	return s
}
