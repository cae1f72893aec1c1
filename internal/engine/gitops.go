package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/rollback-dev/rollback/internal/gitops"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// pauseGitOps pauses the Argo CD Application or Flux object that applies
// the workload before the undo: without it the reconciler re-applies the
// broken version from Git, after the rollback has verified and closed.
func pauseGitOps(ctx context.Context, x *execution, sc *runbook.StepContext) (string, error) {
	w := x.w
	if w.Client == nil {
		return "", fmt.Errorf("no cluster object: %w", runbook.ErrSkip)
	}
	t := w.Target
	if t.Of() == kube.KindHelm {
		// A Helm release (a Flux HelmRelease's, say): its workload
		// carries the reconciler's labels.
		h, err := kube.GetHistory(ctx, w.Client, t)
		if err != nil {
			return "", err
		}
		if h.Helm.Workload == nil {
			return "", fmt.Errorf("helm release %s has no workload to read a reconciler from: %w", t.Name, runbook.ErrSkip)
		}
		t = *h.Helm.Workload
	}
	m, err := kube.ObjectMeta(ctx, w.Client, t)
	if err != nil {
		return "", err
	}
	var o *gitops.Owner
	if m != nil {
		o = gitops.Detect(m, "")
	}
	if o == nil {
		return "", fmt.Errorf("%s is not applied by Argo CD or Flux: %w", t.Ref(), runbook.ErrSkip)
	}
	msg, paused, err := gitops.Pause(ctx, w.Client, *o, x.inc.ID)
	if err != nil || !paused {
		return msg, err
	}
	// The pause outlives the run: recorded for 'rollback status' and
	// 'rollback gitops resume'.
	b, err := json.Marshal(o)
	if err != nil {
		return "", err
	}
	if _, err := x.e.Store.AppendEvent(ctx, store.Event{Incident: x.inc.ID, Time: x.e.now(), Step: incident.StepGitOps, Phase: store.PhaseNote,
		Key: incident.KeyGitOpsOwner, Evidence: string(b)}); err != nil {
		return "", err
	}
	return msg, nil
}

// ResumeGitOps resumes the reconciler the incident paused, once the revert
// is in Git, and journals it.
func (e *Engine) ResumeGitOps(ctx context.Context, id string) (string, error) {
	evs, err := e.Store.Events(ctx, id)
	if err != nil {
		return "", err
	}
	var o *gitops.Owner
	for _, ev := range evs {
		if ev.Key == incident.KeyGitOpsOwner {
			o = &gitops.Owner{}
			if err := json.Unmarshal([]byte(ev.Evidence), o); err != nil {
				return "", fmt.Errorf("incident %s: the journaled reconciler is unreadable: %w", id, err)
			}
		}
		if ev.Key == incident.KeyGitOpsResumed {
			return "", fmt.Errorf("incident %s: the reconciler was resumed already: %s", id, ev.Evidence)
		}
	}
	if o == nil {
		return "", fmt.Errorf("incident %s paused no GitOps reconciler", id)
	}
	t, err := e.target(ctx, id)
	if err != nil {
		return "", err
	}
	if e.Client == nil {
		return "", errors.New("no Kubernetes client")
	}
	cs, err := e.Client(t.Context)
	if err != nil {
		return "", err
	}
	msg, err := gitops.Resume(ctx, cs, *o)
	if err != nil {
		return "", err
	}
	if _, err := e.Store.AppendEvent(ctx, store.Event{Incident: id, Time: e.now(), Step: incident.StepGitOps, Phase: store.PhaseNote,
		Key: incident.KeyGitOpsResumed, Evidence: msg}); err != nil {
		return "", err
	}
	return msg, nil
}
