// Package incident turns an incident's journal into the runbook's
// checklist (11 items, each with its status, evidence and timing), the time
// to recover, the post-incident review's due date, and a review draft.
// Everything here is a pure function of the store's records.
package incident

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/store"
)

// NotNotified starts the part of a communication step's evidence that
// says no message was delivered (the reasons follow); the checklist shows
// such an item as not notified, never as "stakeholders notified".
const NotNotified = "not notified"

// ReviewWithin is the runbook's "PIR within 48 hours".
const ReviewWithin = 48 * time.Hour

// Status of a checklist item.
type Status string

// Item statuses.
const (
	Pending Status = "pending"
	Running Status = "running"
	Done    Status = "done"
	Skipped Status = "n/a"
	Failed  Status = "failed"
	// Unnotified is a communication step that ran but delivered nothing.
	Unnotified Status = "not notified"
)

// Item is one line of the runbook's checklist.
type Item struct {
	Text     string        `json:"item"`
	Step     string        `json:"step"`
	Status   Status        `json:"status"`
	Evidence string        `json:"evidence,omitempty"`
	Started  time.Time     `json:"started,omitempty"`
	Took     time.Duration `json:"took,omitempty"`
	Overrun  string        `json:"overrun,omitempty"`
}

// Checklist derives the runbook's 11 items (one per step of Runbook that
// ticks one, in its order) from the incident and its journal.
func Checklist(inc *store.Incident, events []store.Event) []Item {
	type state struct {
		started, ended time.Time
		phase          store.Phase
		evidence, msg  string
		overrun        string
	}
	steps := map[string]*state{}
	get := func(n string) *state {
		if steps[n] == nil {
			steps[n] = &state{}
		}
		return steps[n]
	}
	for _, ev := range events {
		s := get(ev.Step)
		switch ev.Phase {
		case store.PhaseStarted:
			s.started, s.phase = ev.Time, store.PhaseStarted
		case store.PhaseDone:
			s.ended, s.phase, s.evidence = ev.Time, store.PhaseDone, ev.Evidence
		case store.PhaseFailed, store.PhaseInterrupted:
			s.ended, s.phase, s.msg = ev.Time, ev.Phase, ev.Message
		case store.PhaseOverrun:
			s.overrun = ev.Message
		}
	}
	items := make([]Item, 0, len(Runbook))
	for _, c := range Runbook {
		if c.Checklist == "" {
			continue
		}
		it := Item{Text: c.Checklist, Step: c.Name, Status: Pending}
		if c.OnIncident { // the decision lives on the incident itself
			if inc.Decision != "" {
				it.Status, it.Evidence = Done, inc.Decision
				if inc.Rationale != "" {
					it.Evidence += " — rationale recorded"
				}
			}
			items = append(items, it)
			continue
		}
		s := steps[c.Name]
		if s != nil {
			it.Started, it.Overrun = s.started, s.overrun
			switch s.phase {
			case store.PhaseStarted:
				it.Status = Running
			case store.PhaseDone:
				it.Status, it.Evidence = Done, s.evidence
				if strings.HasPrefix(s.evidence, "skipped: ") {
					it.Status, it.Evidence = Skipped, strings.TrimPrefix(s.evidence, "skipped: ")
				}
				if (c.Name == StepDeclare || c.Name == StepClose) && strings.Contains(s.evidence, "; "+NotNotified) {
					it.Status = Unnotified
				}
			case store.PhaseFailed:
				it.Status, it.Evidence = Failed, s.msg
			case store.PhaseInterrupted:
				it.Status, it.Evidence = Failed, "interrupted, resumable: "+s.msg
			}
			if !s.ended.IsZero() && !s.started.IsZero() {
				it.Took = s.ended.Sub(s.started)
			}
		}
		items = append(items, it)
	}
	return items
}

// TimeToRecover runs from the incident's opening to the end of the last
// recovery step (Kubernetes undo, down migration, verification).
func TimeToRecover(inc *store.Incident, events []store.Event) (time.Duration, bool) {
	var last time.Time
	for _, ev := range events {
		if ev.Phase == store.PhaseDone && (ev.Step == StepKube || ev.Step == StepDownMig || ev.Step == StepSmoke || ev.Step == StepMetrics) && ev.Time.After(last) {
			last = ev.Time
		}
	}
	if last.IsZero() {
		return 0, false
	}
	return last.Sub(inc.OpenedAt), true
}

// ReviewDue is when the post-incident review is due: 48 hours after the
// incident closed (or opened, while it is still open).
func ReviewDue(inc *store.Incident) time.Time {
	if inc.ClosedAt != nil {
		return inc.ClosedAt.Add(ReviewWithin)
	}
	return inc.OpenedAt.Add(ReviewWithin)
}

// ReviewState says whether a review is done, due soon or overdue at now.
func ReviewState(inc *store.Incident, events []store.Event, now time.Time) string {
	for _, ev := range events {
		if ev.Step == StepReviewDone {
			return "done"
		}
	}
	due := ReviewDue(inc)
	switch {
	case now.After(due):
		return "overdue"
	case due.Sub(now) <= 24*time.Hour:
		return "due"
	}
	return "scheduled"
}

// ReconcilerPaused is the pause of a GitOps reconciler that the incident
// left in place ("" when none or resumed): what the revert step said (a
// pull request waiting to merge, a source that did not have the revert in
// time), else what the pause step said.
func ReconcilerPaused(evs []store.Event) string {
	paused, said := false, ""
	for _, ev := range evs {
		switch {
		case ev.Key == KeyGitOpsOwner:
			paused = true
		case ev.Key == KeyGitOpsResumed:
			return ""
		case ev.Step == StepGitOps && ev.Phase == store.PhaseDone:
			said = ev.Evidence
		case ev.Step == StepGitOpsRevert && (ev.Phase == store.PhaseDone || ev.Phase == store.PhaseFailed):
			said = ev.Evidence
			if ev.Phase == store.PhaseFailed {
				said = "the revert in Git failed: " + ev.Message
			}
		}
	}
	if !paused {
		return ""
	}
	return said
}

// View is one incident as `rollback status` and the dashboard show it:
// the checklist with evidence, the decision's reasons, the journal.
type View struct {
	Incident             *store.Incident `json:"incident"`
	Checklist            []Item          `json:"checklist"`
	Reasons              []Reason        `json:"reasons,omitempty"`
	Events               []store.Event   `json:"events"`
	Review               string          `json:"review"`
	ReviewDue            time.Time       `json:"reviewDue"`
	TimeToRecoverSeconds float64         `json:"timeToRecoverSeconds,omitempty"`
	GitOpsPaused         string          `json:"gitopsPaused,omitempty"`
}

// Reason is one answer of the decision's rationale.
type Reason struct {
	Question string `json:"question"`
	Answer   string `json:"answer"`
	Source   string `json:"source,omitempty"`
	Evidence string `json:"evidence,omitempty"`
}

// NewView builds the view of an incident and its journal.
func NewView(inc *store.Incident, events []store.Event, now time.Time) View {
	v := View{Incident: inc, Checklist: Checklist(inc, events), Events: events,
		Review: ReviewState(inc, events, now), ReviewDue: ReviewDue(inc), GitOpsPaused: ReconcilerPaused(events)}
	if v.Events == nil {
		v.Events = []store.Event{}
	}
	_ = json.Unmarshal([]byte(inc.Rationale), &v.Reasons)
	if ttr, ok := TimeToRecover(inc, events); ok {
		v.TimeToRecoverSeconds = ttr.Seconds()
	}
	return v
}
