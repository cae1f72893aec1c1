package engine

import (
	"context"
	"fmt"

	"rollback/internal/gitops"
	"rollback/internal/kube"
	"rollback/internal/runbook"
)

// pauseGitOps pauses the Argo CD Application or Flux object that applies
// the workload before the undo: without it the reconciler re-applies the
// broken version from Git, after the rollback has verified and closed.
func pauseGitOps(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	w := x.w
	if w.Client == nil {
		return "", fmt.Errorf("no cluster object: %w", runbook.ErrSkip)
	}
	m, err := kube.ObjectMeta(ctx, w.Client, w.Target)
	if err != nil {
		return "", err
	}
	var o *gitops.Owner
	if m != nil {
		o = gitops.Detect(m, "")
	}
	if o == nil {
		return "", fmt.Errorf("%s is not applied by Argo CD or Flux: %w", w.Target.Ref(), runbook.ErrSkip)
	}
	return gitops.Pause(ctx, w.Client, *o, x.inc.ID)
}
