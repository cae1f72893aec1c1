package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DryRun is kubectl's --dry-run: none changes the cluster, client sends
// nothing, server sends the change with dryRun=All so admission runs but
// nothing is stored.
type DryRun string

// The dry-run modes.
const (
	DryRunNone   DryRun = "none"
	DryRunClient DryRun = "client"
	DryRunServer DryRun = "server"
)

// ParseDryRun accepts none, client or server ("" is none).
func ParseDryRun(s string) (DryRun, error) {
	switch d := DryRun(s); d {
	case "":
		return DryRunNone, nil
	case DryRunNone, DryRunClient, DryRunServer:
		return d, nil
	}
	return "", fmt.Errorf("invalid --dry-run %q: expected none, client or server", s)
}

// ErrConflict means the workload changed between planning and patching.
var ErrConflict = errors.New("deployment changed while planning")

// annotationsToSkip are the ReplicaSet annotations an undo does not copy
// to the Deployment: kubectl's list, plus rollback's own marks, which
// belong to one ReplicaSet and must not spread to the next revision.
var annotationsToSkip = map[string]bool{
	corev1.LastAppliedConfigAnnotation:          true,
	RevisionAnnotation:                          true,
	RevisionHistoryAnnotation:                   true,
	"deployment.kubernetes.io/desired-replicas": true,
	"deployment.kubernetes.io/max-replicas":     true,
	appsv1.DeprecatedRollbackTo:                 true,
}

func skipAnnotation(k string) bool {
	return annotationsToSkip[k] || strings.HasPrefix(k, annotationPrefix)
}

// deploymentUndoPatch builds the JSON patch kubectl's undo sends: the
// target's pod template (without its pod-template-hash label) and its
// annotations, after guard (a JSON patch test of what the plan was made
// from: the generation, or the resourceVersion), so a Deployment changed
// in between is not overwritten.
func deploymentUndoPatch(to *Revision, guard map[string]any) ([]byte, error) {
	tmpl := to.template.DeepCopy()
	delete(tmpl.Labels, podTemplateHashLabel)
	ann := map[string]string{}
	for k, v := range to.annotations {
		if !skipAnnotation(k) {
			ann[k] = v
		}
	}
	ops := []map[string]any{
		guard,
		{"op": "replace", "path": "/spec/template", "value": tmpl},
		{"op": "add", "path": "/metadata/annotations", "value": ann},
	}
	return json.Marshal(ops)
}

// Undo applies the plan to the cluster (unless dry is client), as kubectl
// rollout undo does for the workload's kind.
func Undo(ctx context.Context, cs kubernetes.Interface, h *History, p *Plan, dry DryRun) error {
	if p.NoOp {
		return nil
	}
	k := kindOf(h.Target)
	// What the kind needs before its undo (abort an update in progress,
	// fail an analysis, repair a stuck release, check the standby).
	if err := k.prepare(ctx, cs, h, p.To, dry); err != nil {
		return err
	}
	pt, patch, err := k.undoPatch(h, p.To)
	if err != nil {
		return err
	}
	if dry == DryRunClient {
		return nil
	}
	opts := metav1.PatchOptions{FieldManager: "rollback"}
	if dry == DryRunServer {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	err = k.patch(ctx, cs, h.Target, pt, patch, opts)
	// A workload's spec changes under a rollback for reasons that do not
	// touch what it replaces: an autoscaler or a person scaling it, a
	// minReadySeconds tweak, a controller's annotation. The patch's guard
	// refuses them all; when the workload still runs the revision the plan
	// was made from, and the target is still there, the same undo is
	// guarded again with what is there now and sent again.
	replans := 0
	for conflicted(ctx, cs, h, err) {
		now, same := stillPlanned(ctx, cs, h, p.To)
		if !same || replans == maxReplans {
			return fmt.Errorf("%w: %s was modified after the plan was made; run the command again", ErrConflict, h.Target.Ref())
		}
		replans++
		note := fmt.Sprintf("re-guarded after %s changed but still ran revision %d", h.Target.Ref(), h.Current().Number)
		if h.Prepared == "" {
			h.Prepared = note
		} else if !strings.Contains(h.Prepared, note) {
			h.Prepared += "; " + note
		}
		if pt, patch, err = k.undoPatch(now, p.To); err != nil {
			return err
		}
		err = k.patch(ctx, cs, h.Target, pt, patch, opts)
		h.Deployment, h.StatefulSet, h.DaemonSet, h.Rollout, h.ResourceVersion = now.Deployment, now.StatefulSet, now.DaemonSet, now.Rollout, now.ResourceVersion
	}
	if err != nil {
		return fmt.Errorf("patch %s: %w", h.Target.Ref(), err)
	}
	return nil
}

// maxReplans bounds the undo's re-guarded attempts against a workload
// whose spec keeps changing.
const maxReplans = 5

// conflicted: the patch was refused because the object is not the one the
// plan was made from (its guard failed).
func conflicted(ctx context.Context, cs kubernetes.Interface, h *History, err error) bool {
	return err != nil && (testFailed(err) || apierrors.IsConflict(err) || apierrors.IsInvalid(err) && changedSincePlan(ctx, cs, h))
}

// stillPlanned reads the workload again and reports whether a plan to
// roll back to revision to still holds: a Deployment, StatefulSet,
// DaemonSet or Argo Rollout whose current revision is the one the plan was
// made from, with the target still in its history (an autoscaler's
// replicas or a person's minReadySeconds change the spec, not what the
// undo replaces). Other kinds (a route's weights, a Flagger canary, a
// Service's selector) never hold: a change of their spec is a change of
// what the undo replaces.
func stillPlanned(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision) (*History, bool) {
	switch h.Target.Of() {
	case KindDeployment, KindStatefulSet, KindDaemonSet, KindRollout:
	default:
		return nil, false
	}
	was := h.Current()
	if was == nil || to == nil {
		return nil, false
	}
	now, err := GetHistory(ctx, cs, h.Target)
	if err != nil {
		return nil, false
	}
	cur := now.Current()
	return now, cur != nil && cur.Object == was.Object && now.FindObject(to.Object) != nil
}

// testFailed: the API server refused a JSON patch because its test
// operation (the planned resourceVersion or generation) failed; the
// server says so in the Status's message or causes.
func testFailed(err error) bool {
	var se *apierrors.StatusError
	if !errors.As(err, &se) || !apierrors.IsInvalid(err) {
		return false
	}
	if strings.Contains(se.ErrStatus.Message, "test") {
		return true
	}
	if d := se.ErrStatus.Details; d != nil {
		for _, c := range d.Causes {
			if strings.Contains(c.Message, "test") {
				return true
			}
		}
	}
	return false
}

// changedSincePlan: the object's guard (generation for the kinds whose
// status a controller rewrites, resourceVersion for the others) is no
// longer the planned one. The API server's refusal of a failed JSON patch
// test on a custom resource says no more than "invalid".
func changedSincePlan(ctx context.Context, cs kubernetes.Interface, h *History) bool {
	now, err := GetHistory(ctx, cs, h.Target)
	if err != nil {
		return false
	}
	switch {
	case h.Target.Of() == KindDeployment:
		return now.Deployment != nil && now.Deployment.Generation != h.Deployment.Generation
	case h.Route != nil && h.Target.Of() == KindHTTPRoute:
		return now.Route != nil && now.Route.Generation != h.Route.Generation
	case h.Rollout != nil:
		return now.Rollout != nil && now.Rollout.Metadata.Generation != h.Rollout.Metadata.Generation
	}
	return now.ResourceVersion != h.ResourceVersion
}
