package kube

import (
	"errors"
	"fmt"
	"strings"
)

// Errors a plan can be refused with. Each is wrapped with the details.
var (
	ErrPaused           = errors.New("workload is paused")
	ErrRevisionNotFound = errors.New("revision not found")
	ErrNoTarget         = errors.New("no revision to roll back to")
	ErrTargetBad        = errors.New("target revision is marked bad")
)

// Plan is what a rollback would do.
type Plan struct {
	Target Target    `json:"target"`
	From   *Revision `json:"from"`
	To     *Revision `json:"to"`
	// Reason says why To was chosen.
	Reason string `json:"reason"`
	// NoOp is true when the workload's template already matches To.
	NoOp bool `json:"noop"`
}

// Summary is a one-line description of the change.
func (p *Plan) Summary() string {
	if p.NoOp {
		return fmt.Sprintf("nothing to do: %s already runs revision %d (%s)", p.Target.Ref(), p.To.Number, strings.Join(p.To.Images, ", "))
	}
	if p.To.Colour != "" {
		from := "none"
		if p.From != nil {
			from = fmt.Sprintf("%s (%s)", p.From.Colour, strings.Join(p.From.Images, ", "))
		}
		return fmt.Sprintf("%s: %s -> %s (%s)", p.Target.Ref(), from, p.To.Colour, strings.Join(p.To.Images, ", "))
	}
	from := "none"
	if p.From != nil {
		from = fmt.Sprintf("revision %d (%s)", p.From.Number, strings.Join(p.From.Images, ", "))
	}
	return fmt.Sprintf("%s: %s -> revision %d (%s)", p.Target.Ref(), from, p.To.Number, strings.Join(p.To.Images, ", "))
}

// PlanUndo chooses the revision to roll back to. With toRevision > 0 it is
// that revision; otherwise the newest revision older than the current one
// that is marked good, or, when none is, the newest older one not marked
// bad (with no marks at all that is the previous revision, as kubectl
// picks). A revision marked bad is never chosen.
func PlanUndo(h *History, toRevision int64) (*Plan, error) {
	t := h.Target
	ref, ns := t.Ref(), t.Namespace
	if h.Paused {
		return nil, fmt.Errorf("%w: you cannot roll back a paused %s; resume it first with 'kubectl rollout resume %s -n %s' and try again",
			ErrPaused, t.Of(), ref, ns)
	}
	p := &Plan{Target: t, From: h.Current()}
	if toRevision > 0 {
		r := h.Find(toRevision)
		if r == nil {
			return nil, fmt.Errorf("%w: revision %d is not in the history of %s (available: %s); see 'rollback history %s -n %s'",
				ErrRevisionNotFound, toRevision, ref, revisionList(h), ref, ns)
		}
		if r.Health == Bad {
			return nil, fmt.Errorf("%w: revision %d of %s is marked bad (%s); if it is safe after all, clear the mark with 'rollback mark %s %d unknown -n %s'",
				ErrTargetBad, r.Number, ref, orDash(r.HealthReason), ref, r.Number, ns)
		}
		p.To, p.Reason = r, fmt.Sprintf("revision %d was asked for", r.Number)
	} else {
		cur := int64(1<<63 - 1)
		if p.From != nil {
			cur = p.From.Number
		}
		var good, notBad *Revision
		for i := len(h.Revisions) - 1; i >= 0; i-- {
			r := &h.Revisions[i]
			if r.Number >= cur {
				continue
			}
			if r.Health == Good && good == nil {
				good = r
			}
			if r.Health != Bad && notBad == nil {
				notBad = r
			}
		}
		switch {
		case good != nil:
			p.To, p.Reason = good, fmt.Sprintf("revision %d is the newest older revision marked good", good.Number)
		case notBad != nil:
			p.To, p.Reason = notBad, fmt.Sprintf("no older revision is marked good; revision %d is the newest older one not marked bad", notBad.Number)
		default:
			return nil, fmt.Errorf("%w: %s has no revision older than the current one that is not marked bad (history: %s); deploy a fixed version instead, or clear a mark with 'rollback mark'",
				ErrNoTarget, ref, revisionList(h))
		}
	}
	p.NoOp = EqualIgnoreHash(&p.To.template, &h.Template)
	if h.LB != nil || h.Rollout != nil || h.Helm != nil {
		// Target groups have no template, and a Rollout's is not
		// defaulted as its ReplicaSets' are: the controller's (or the
		// listener's) word on what is current decides.
		p.NoOp = p.To.Current
	}
	if f := h.Flagger; f != nil {
		// Done when the target is back and Flagger has promoted it.
		p.NoOp = p.To.Current && f.primaryOn(p.To) && !f.Canary.Analysing()
	}
	return p, nil
}

func revisionList(h *History) string {
	if len(h.Revisions) == 0 {
		return "none"
	}
	parts := make([]string, len(h.Revisions))
	for i, r := range h.Revisions {
		parts[i] = fmt.Sprintf("%d", r.Number)
		if r.Health != Unknown {
			parts[i] += " (" + string(r.Health) + ")"
		}
		if r.Current {
			parts[i] += " (current)"
		}
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "no reason recorded"
	}
	return s
}
