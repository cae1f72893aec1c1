package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/gitops"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// pauseSettle bounds the wait for the reconciler to acknowledge the pause
// (a reconcile in flight finishing) before the undo.
const pauseSettle = 30 * time.Second

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
	msg, paused, err := gitops.Pause(ctx, w.Client, *o, x.inc.ID, pauseSettle)
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

// ResumeGitOps finishes what the run's revert step left: when the revert
// waits in a pull request, it resumes once that has merged and the
// reconciler's source has the merge; when the push was made but the source
// did not have it in time, once it has; with no revert journaled (gitops
// revert off, or an incident from before reverts were written), at once,
// on the operator's word that Git is reverted.
func (e *Engine) ResumeGitOps(ctx context.Context, id string) (string, error) {
	st, err := e.gitopsState(ctx, id)
	if err != nil {
		return "", err
	}
	if st.resumed != "" {
		return "", fmt.Errorf("incident %s: the reconciler was resumed already: %s", id, st.resumed)
	}
	if st.owner == nil {
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
	svc := e.service(t.Service)
	var cfg *config.GitOps
	if svc != nil {
		cfg = svc.GitOps
	}
	// resume waits, bounded, for the source to agree, then resumes.
	resume := func(src *gitops.Source, auth gitops.Auth, commit string) (string, error) {
		swaps, err := e.revertSwaps(ctx, id)
		if err != nil {
			return "", err
		}
		wait := gitopsWait(svc)
		ctx, cancel := context.WithTimeout(ctx, wait+2*time.Minute)
		defer cancel()
		return e.awaitAndResume(ctx, cs, id, *st.owner, src, auth, commit, swaps, wait)
	}
	if st.revert != nil {
		commit := st.revert.Result.Commit
		if st.revert.Result.Unchanged {
			commit = st.revert.Result.Base
		}
		if st.pr != nil {
			ps, err := e.prState(ctx, cfg, *st.pr)
			switch {
			case err != nil:
				return "", err
			case ps.Closed:
				return "", fmt.Errorf("pull request %s was closed without a merge: %s STAYS PAUSED; revert in Git another way and resume it by hand", st.pr.URL, st.owner)
			case !ps.Merged:
				return "", fmt.Errorf("pull request %s is not merged yet: %s STAYS PAUSED until it is", st.pr.URL, st.owner)
			}
			commit = ps.MergeCommit
		}
		auth, err := e.gitAuthFor(ctx, cs, svc, *st.owner)
		if err != nil {
			return "", err
		}
		return resume(&st.revert.Source, auth, commit)
	}
	// Reverted by hand: the reconciler resumes once its source no longer
	// names the abandoned version (resumed before its source fetched the
	// revert, Argo CD's self-heal re-applied the release in the e2e test).
	src, auth, gerr := e.gitSource(ctx, cs, *st.owner, cfg)
	if gerr == nil {
		return resume(src, auth, "")
	}
	msg, err := gitops.Resume(ctx, cs, *st.owner, id)
	if err != nil {
		return "", err
	}
	msg += " on the operator's word, Git not read (" + gerr.Error() + ")"
	if _, err := e.Store.AppendEvent(ctx, store.Event{Incident: id, Time: e.now(), Step: incident.StepGitOps, Phase: store.PhaseNote,
		Key: incident.KeyGitOpsResumed, Evidence: msg}); err != nil {
		return "", err
	}
	return msg, nil
}
