package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/progress"
)

// runDecision walks the flowchart for 'rollback run --severity' from live
// signals before anything changes. nil without --severity. A decision
// other than roll back is ErrDecisionAgainst unless --force.
func runDecision(ctx context.Context, f *Factory, o *RunOptions, p *kube.Plan, pr *renderer) (*engine.Decision, error) {
	d := &o.Decide
	if d.Severity == "" {
		return nil, nil
	}
	sev, err := decide.ParseSeverity(d.Severity)
	if err != nil {
		return nil, usageError{err: err}
	}
	d.Service = o.Service
	if d.DB.Release == "" && p.From != nil && len(p.From.Images) > 0 {
		d.DB.Release = image.VersionOf(p.From.Images[0]) // the abandoned release
	}
	res := &engine.Decision{Severity: sev, Forced: o.Force}
	err = progress.Func(pr.Event).Run(f.Now, "decide", func() (string, error) {
		facts, err := gatherFacts(ctx, f, d, sev)
		if err != nil {
			return "", err
		}
		res.Decision = decide.Decide(facts)
		msg := decisionLine(sev, res.Decision)
		if !engine.IsRollBack(res.Decision.Action) {
			if !o.Force {
				return "", fmt.Errorf("%w: %s; if you must roll back anyway, run again with --force (recorded as overruling the flowchart)", ErrDecisionAgainst, msg)
			}
			msg += "; overruled with --force"
		}
		return msg, nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// checkDecideFlags rejects decision flags that cannot apply, before
// anything is read or changed.
func checkDecideFlags(o *RunOptions) error {
	d := &o.Decide
	if d.Severity == "" {
		if d.Hotfix > 0 || len(d.Overrides) > 0 || o.Force {
			return usagef("--hotfix-eta, --force and the fact overrides need --severity (the decision flowchart runs only with a severity)")
		}
		return nil
	}
	if _, err := decide.ParseSeverity(d.Severity); err != nil {
		return usageError{err: err}
	}
	if d.Hotfix < 0 {
		return usagef("--hotfix-eta must be positive, got %s", d.Hotfix)
	}
	return nil
}

// decisionLine is the decision with the facts it turned on, in one line.
func decisionLine(sev decide.Severity, d decide.Decision) string {
	parts := []string{string(d.Action) + " (" + string(sev) + ")"}
	for _, r := range d.Reasons[1:] {
		a := r.Answer
		switch {
		case r.Source != "" && r.Evidence != "":
			a += " [" + string(r.Source) + ": " + r.Evidence + "]"
		case r.Source != "":
			a += " [" + string(r.Source) + "]"
		}
		parts = append(parts, strings.TrimSuffix(r.Question, "?")+": "+a)
	}
	return strings.Join(parts, "; ")
}
