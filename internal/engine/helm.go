package engine

import (
	"context"
	"fmt"

	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/progress"
)

// helmOwned turns a workload Helm manages into its release, so the
// rollback is Helm's own and Helm's history stays the truth (a kubectl
// undo under Helm leaves the next 'helm upgrade' rendering from the broken
// revision). Without a Helm client, or for other kinds, w is returned.
func (e *Engine) helmOwned(ctx context.Context, w *Workload) (*Workload, error) {
	if e.Helm == nil || w.Client == nil {
		return w, nil
	}
	rel, ns, err := kube.HelmOwner(ctx, w.Client, w.Target)
	if err != nil || rel == "" {
		return w, nil // the plan reports a missing workload
	}
	out := *w
	out.Target = kube.Target{Namespace: ns, Name: rel, Kind: kube.KindHelm}
	if err := e.Attach(ctx, &out); err != nil {
		return nil, err
	}
	e.Events.Emit(e.now(), kube.StepPlan, progress.Progress, fmt.Sprintf("%s is managed by Helm release %s: rolling back the release through Helm, so its history stays true", w.Target.Ref(), rel), nil)
	return &out, nil
}
