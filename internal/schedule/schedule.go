// Package schedule is the runbook's rollback testing table as due dates:
//
//	Dry-run Kubernetes rollback in staging                    every release
//	Test down migration against a copy of prod data           every migration
//	Chaos engineering: simulate a failed deployment           quarterly
//	Fire drill: execute the full rollback runbook             semi-annually
//
// It is a pure function of what was tested (the store's drills), what is
// deployed now and the clock; `rollback serve` runs what is due and
// `rollback status` and the dashboard show it.
package schedule

import (
	"time"

	"github.com/rollback-dev/rollback/internal/store"
)

// Kind of rollback test.
type Kind string

// The runbook's four tests.
const (
	DryRun    Kind = "dry-run"
	Migration Kind = "migration"
	Chaos     Kind = "chaos"
	FireDrill Kind = "fire-drill"
)

// Kinds in the runbook's order.
var Kinds = []Kind{DryRun, Migration, Chaos, FireDrill}

// Periods of the calendar tests: quarterly and semi-annually.
const (
	Quarterly    = 91 * 24 * time.Hour
	SemiAnnually = 182 * 24 * time.Hour
)

// Rule is how often a kind is due, as the runbook says it.
func (k Kind) Rule() string {
	switch k {
	case DryRun:
		return "every release"
	case Migration:
		return "every migration"
	case Chaos:
		return "quarterly"
	case FireDrill:
		return "semi-annually"
	}
	return ""
}

// States of an item.
const (
	OK      = "ok"
	Due     = "due"
	Overdue = "overdue"
	Failed  = "failed" // the last test of the current subject failed
	NA      = "n/a"
)

// Subjects is what a service has now that the tests are about.
type Subjects struct {
	Release   string // the deployed release ("" unknown)
	Migration string // the newest migration ("" none or unknown)
	HasDB     bool
}

// Item is one test of one service.
type Item struct {
	Service string       `json:"service"`
	Kind    Kind         `json:"kind"`
	Rule    string       `json:"rule"`
	Subject string       `json:"subject,omitempty"` // what must be tested now
	Last    *store.Drill `json:"last,omitempty"`
	// Due is when the test is (or was) due; zero when nothing is due
	// until the next release or migration.
	Due   time.Time `json:"due,omitempty"`
	State string    `json:"state"`
	Note  string    `json:"note,omitempty"`
}

// For lists a service's four items. drills are the service's, in any order.
func For(service string, subj Subjects, drills []store.Drill, now time.Time) []Item {
	var out []Item
	for _, k := range Kinds {
		it := Item{Service: service, Kind: k, Rule: k.Rule()}
		last, lastOK := latest(drills, k, "", false), latest(drills, k, "", true)
		it.Last = last
		switch k {
		case DryRun, Migration:
			it.Subject = subj.Release
			if k == Migration {
				it.Subject = subj.Migration
			}
			switch {
			case k == Migration && !subj.HasDB:
				it.State, it.Note = NA, "no database: in rollback.yaml"
			case it.Subject == "":
				it.State, it.Note = NA, "nothing to test (the "+map[Kind]string{DryRun: "release", Migration: "newest migration"}[k]+" is unknown)"
				if k == DryRun {
					it.State = OK
					if last == nil {
						it.State = Due
					}
				}
			default:
				tried := latest(drills, k, it.Subject, false)
				switch {
				case tried == nil:
					it.State, it.Due = Due, now
				case !tried.OK:
					it.State, it.Due, it.Last = Failed, now, tried
				default:
					it.State, it.Last = OK, tried
				}
			}
		case Chaos, FireDrill:
			every := Quarterly
			if k == FireDrill {
				every = SemiAnnually
			}
			switch {
			case lastOK == nil:
				it.State, it.Due = Due, now
				if last != nil {
					it.State = Failed
				}
			default:
				it.Due = lastOK.At.Add(every)
				it.State = OK
				if !now.Before(it.Due) {
					it.State = Overdue
				}
			}
		}
		out = append(out, it)
	}
	return out
}

// IsDue reports whether an item wants running now.
func (it Item) IsDue() bool {
	return it.State == Due || it.State == Overdue || it.State == Failed
}

// latest is the newest drill of kind (about subject, when given; only
// passed ones when okOnly).
func latest(drills []store.Drill, k Kind, subject string, okOnly bool) *store.Drill {
	var best *store.Drill
	for i := range drills {
		d := &drills[i]
		if Kind(d.Kind) != k || subject != "" && d.Subject != subject || okOnly && !d.OK {
			continue
		}
		if best == nil || d.At.After(best.At) {
			best = d
		}
	}
	return best
}
