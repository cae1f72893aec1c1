package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/store"
)

// Breach is a detector's verdict that the canary is broken.
type Breach struct {
	Detector string // sequential, threshold, inconclusive
	Reason   string // with the numbers
}

// ErrBusy: another run holds the service; the breach was journaled there
// and not acted on twice.
var ErrBusy = errors.New("another rollback holds the service")

// OnBreach rolls the workload back on a detector's breach, through the
// whole runbook: the service's lease, an incident whose decision is the
// detector's evidence, notify, verify, flag off, block and review, as any
// run, and resumable as any run. A breach while another run holds the
// service, or while an incident of the service is open, is journaled on
// that incident and not acted on twice (ErrBusy).
func (e *Engine) OnBreach(ctx context.Context, w *Workload, b Breach, timeout time.Duration) (*Outcome, error) {
	out, err := e.Run(ctx, RunRequest{Workload: w, Timeout: timeout,
		Decide: func(context.Context, *kube.Plan) (*Decision, error) { return &Decision{Detector: &b}, nil }})
	if err == nil || !(isHeld(err) || errors.Is(err, ErrOpenIncident)) {
		return out, err
	}
	// Someone else is rolling back: say so on their incident.
	if open, oerr := e.OpenIncident(ctx, w.Key()); oerr == nil && open != nil {
		_, _ = e.Store.AppendEvent(context.WithoutCancel(ctx), store.Event{Incident: open.ID, Time: e.now(), Step: "watch", Phase: store.PhaseNote,
			Message: fmt.Sprintf("canary breach (%s) while this incident was open: not acted on twice: %s", b.Detector, b.Reason)})
		return &Outcome{Incident: open.ID}, fmt.Errorf("%w: incident %s is open (%v)", ErrBusy, open.ID, err)
	}
	return nil, fmt.Errorf("%w: %v", ErrBusy, err)
}

func isHeld(err error) bool {
	var le *store.LeaseError
	var lk *store.LockError
	return errors.As(err, &le) || errors.As(err, &lk)
}
