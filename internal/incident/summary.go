package incident

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/store"
)

// Outcomes are the closing summary's measured lines (runbook Step 6),
// read from the checklist's evidence so the message says what the run
// measured, not what it hoped.
type Outcomes struct {
	ErrorRate     string
	DownMigration string
	SmokeTests    string
}

// SummaryOutcomes reads the outcomes from a checklist.
func SummaryOutcomes(items []Item) Outcomes {
	byStep := map[string]Item{StepMetrics: {Status: Pending}, StepDownMig: {Status: Pending}, StepSmoke: {Status: Pending}}
	for _, it := range items {
		byStep[it.Step] = it
	}
	o := Outcomes{}
	m := byStep[StepMetrics]
	switch m.Status {
	case Done:
		o.ErrorRate = m.Evidence
		for _, part := range topLevel(m.Evidence) {
			if strings.HasPrefix(part, "error-rate: ") {
				o.ErrorRate = strings.TrimPrefix(part, "error-rate: ") + " ✅"
			}
		}
	case Skipped:
		o.ErrorRate = "not measured (" + m.Evidence + ")"
	default:
		o.ErrorRate = "not verified (" + string(m.Status) + ")"
	}
	d := byStep[StepDownMig]
	switch d.Status {
	case Done:
		o.DownMigration = "applied ✅ (" + d.Evidence + ")"
	case Skipped:
		o.DownMigration = "not needed (" + d.Evidence + ")"
	default:
		o.DownMigration = string(d.Status)
	}
	s := byStep[StepSmoke]
	switch s.Status {
	case Done:
		o.SmokeTests = "✅ " + s.Evidence
	case Skipped:
		o.SmokeTests = "not run (" + s.Evidence + ")"
	default:
		o.SmokeTests = string(s.Status)
	}
	return o
}

// CloseByHand closes an open incident whose run cannot or need not finish
// (verification keeps failing, the rest was done by hand), journaling who
// closed it and why, so a later rollback of the service is not refused.
// It changes nothing on an incident that is already closed.
func CloseByHand(ctx context.Context, s store.Store, id, reason, by string, now time.Time) (*store.Incident, bool, error) {
	inc, err := s.GetIncident(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if inc.Status == store.StatusClosed {
		return inc, false, nil
	}
	if _, err := s.AppendEvent(ctx, store.Event{Incident: id, Time: now, Step: "run", Phase: store.PhaseNote,
		Message: fmt.Sprintf("closed by hand by %s: %s", by, reason)}); err != nil {
		return nil, false, err
	}
	inc.Status, inc.ClosedAt = store.StatusClosed, &now
	if err := s.UpdateIncident(ctx, inc); err != nil {
		return nil, false, err
	}
	return inc, true, nil
}

// topLevel splits evidence into its checks at "; " outside parentheses
// (a check's own detail may hold "; ").
func topLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ';':
			if depth == 0 && strings.HasPrefix(s[i:], "; ") {
				out = append(out, s[start:i])
				start = i + 2
			}
		}
	}
	return append(out, s[start:])
}
