package incident

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/store"
)

// Report renders a post-incident review draft in Markdown: summary,
// impact, timeline, decision and evidence, what went well and what went
// wrong (read from the journal), action items, and the due date.
func Report(inc *store.Incident, events []store.Event, now time.Time) string {
	var b strings.Builder
	items := Checklist(inc, events)
	fmt.Fprintf(&b, "# Post-incident review: %s — %s\n\n", inc.ID, inc.Service)
	fmt.Fprintf(&b, "Draft generated %s. Review due **%s** (48 hours after %s); status: %s.\n\n",
		now.UTC().Format(time.RFC3339), ReviewDue(inc).UTC().Format(time.RFC3339), closedOrOpened(inc), ReviewState(inc, events, now))

	b.WriteString("## Summary\n\n")
	fmt.Fprintf(&b, "- Service: %s\n- Severity: %s\n- Rolled back: %s → %s\n", inc.Service, or(inc.Severity, "not recorded"), or(inc.BadVersion, "?"), or(inc.GoodVersion, "?"))
	fmt.Fprintf(&b, "- Opened: %s\n", inc.OpenedAt.UTC().Format(time.RFC3339))
	if inc.ClosedAt != nil {
		fmt.Fprintf(&b, "- Closed: %s\n", inc.ClosedAt.UTC().Format(time.RFC3339))
	}
	if ttr, ok := TimeToRecover(inc, events); ok {
		fmt.Fprintf(&b, "- Time to recover: %s\n", ttr.Round(time.Second))
	} else {
		b.WriteString("- Time to recover: not recovered yet\n")
	}

	b.WriteString("\n## Impact\n\n_To be completed by the reviewers: affected users, requests, data, duration._\n\n")

	b.WriteString("## Decision and evidence\n\n")
	if inc.Decision == "" {
		b.WriteString("No decision was recorded.\n\n")
	} else {
		fmt.Fprintf(&b, "Decision: **%s**\n\n", inc.Decision)
		var reasons []struct {
			Question string `json:"question"`
			Answer   string `json:"answer"`
			Source   string `json:"source"`
			Evidence string `json:"evidence"`
		}
		if json.Unmarshal([]byte(inc.Rationale), &reasons) == nil && len(reasons) > 0 {
			b.WriteString("| Question | Answer | Source | Evidence |\n|---|---|---|---|\n")
			for _, r := range reasons {
				fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", cell(r.Question), cell(r.Answer), cell(r.Source), cell(r.Evidence))
			}
			b.WriteString("\n")
		} else if inc.Rationale != "" {
			fmt.Fprintf(&b, "%s\n\n", inc.Rationale)
		}
	}

	b.WriteString("## Checklist\n\n| | Item | Evidence | Took |\n|---|---|---|---|\n")
	for _, it := range items {
		took := ""
		if it.Took > 0 {
			took = it.Took.Round(time.Second).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mark(it.Status), it.Text, cell(it.Evidence), took)
	}

	b.WriteString("\n## Timeline\n\n")
	for _, ev := range events {
		if ev.Phase == store.PhaseIntent {
			continue
		}
		line := string(ev.Phase)
		if ev.Evidence != "" {
			line += ": " + ev.Evidence
		} else if ev.Message != "" {
			line += ": " + ev.Message
		}
		fmt.Fprintf(&b, "- %s `%s` %s\n", ev.Time.UTC().Format("15:04:05"), ev.Step, line)
	}

	var well, wrong []string
	for _, it := range items {
		switch {
		case it.Status == Failed:
			wrong = append(wrong, fmt.Sprintf("%s failed: %s", it.Text, it.Evidence))
		case it.Status == Unnotified:
			wrong = append(wrong, fmt.Sprintf("%s: nobody was told (%s)", it.Text, it.Evidence))
		case it.Overrun != "":
			wrong = append(wrong, fmt.Sprintf("%s overran its budget (%s)", it.Text, it.Overrun))
		case strings.Contains(it.Evidence, "uncertain"):
			wrong = append(wrong, fmt.Sprintf("%s: %s", it.Text, it.Evidence))
		case it.Status == Pending || it.Status == Running:
			wrong = append(wrong, it.Text+": not done")
		case it.Status == Done && it.Took > 0:
			well = append(well, fmt.Sprintf("%s in %s", it.Text, it.Took.Round(time.Second)))
		}
	}
	b.WriteString("\n## What went well\n\n")
	list(&b, well, "_Nothing recorded._")
	b.WriteString("\n## What went wrong\n\n")
	list(&b, wrong, "_Nothing recorded by the tool; the reviewers add what it cannot see._")
	b.WriteString("\n## Action items\n\n")
	actions := []string{"Find and fix the root cause of " + or(inc.BadVersion, "the broken version") + " (owner, due date)."}
	if inc.BadVersion != "" {
		actions = append(actions, fmt.Sprintf("Unblock %s %s only after the fix: `rollback unblock %s %s`.", inc.Service, inc.BadVersion, inc.Service, inc.BadVersion))
	}
	for _, w := range wrong {
		actions = append(actions, "Follow up: "+w)
	}
	list(&b, actions, "")
	return b.String()
}

func list(b *strings.Builder, xs []string, empty string) {
	if len(xs) == 0 {
		fmt.Fprintf(b, "%s\n", empty)
		return
	}
	for _, x := range xs {
		fmt.Fprintf(b, "- %s\n", x)
	}
}

func mark(s Status) string {
	switch s {
	case Done:
		return "✅"
	case Skipped:
		return "➖"
	case Failed:
		return "❌"
	case Unnotified:
		return "⚠️"
	case Running:
		return "⏳"
	}
	return "⬜"
}

func cell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ") }

func or(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func closedOrOpened(inc *store.Incident) string {
	if inc.ClosedAt != nil {
		return "close"
	}
	return "opening (still open)"
}
