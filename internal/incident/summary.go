package incident

import "strings"

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
		for _, part := range strings.Split(m.Evidence, "; ") {
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
