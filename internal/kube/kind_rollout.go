package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Argo Rollouts: a Rollout (argoproj.io/v1alpha1) keeps its revisions in
// ReplicaSets like a Deployment, numbered by rollout.argoproj.io/revision,
// its pods labelled rollouts-pod-template-hash. Its controller says which
// ReplicaSet is current (status.currentPodHash) and which is stable
// (status.stableRS). The rollback is what 'kubectl argo rollouts abort'
// and 'undo' do: abort the update in progress (status.abort, so the
// stable version takes all traffic at once), then put the target's
// template back. Argo fast-tracks a return to the stable ReplicaSet, and
// one within spec.rollbackWindow, skipping the steps and analysis; any
// other target is fully promoted (status.promoteFull, as 'kubectl argo
// rollouts promote --full') once the controller has taken the template,
// so a rollback never waits on canary steps or analysis.

// KindRollout is an Argo Rollouts Rollout.
const KindRollout Kind = "rollout"

// Argo Rollouts' label and annotation on ReplicaSets.
const (
	argoHashLabel          = "rollouts-pod-template-hash"
	argoRevisionAnnotation = "rollout.argoproj.io/revision"
)

// ArgoRollout is a Rollout as rollback reads it.
type ArgoRollout struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Replicas       *int32                 `json:"replicas,omitempty"`
		Selector       *metav1.LabelSelector  `json:"selector,omitempty"`
		Template       corev1.PodTemplateSpec `json:"template"`
		WorkloadRef    *json.RawMessage       `json:"workloadRef,omitempty"`
		Paused         bool                   `json:"paused,omitempty"`
		RollbackWindow *struct {
			Revisions int32 `json:"revisions"`
		} `json:"rollbackWindow,omitempty"`
		Strategy struct {
			Canary    *json.RawMessage `json:"canary,omitempty"`
			BlueGreen *json.RawMessage `json:"blueGreen,omitempty"`
		} `json:"strategy"`
	} `json:"spec"`
	Status struct {
		Abort              bool            `json:"abort,omitempty"`
		PromoteFull        bool            `json:"promoteFull,omitempty"`
		CurrentPodHash     string          `json:"currentPodHash,omitempty"`
		StableRS           string          `json:"stableRS,omitempty"`
		Phase              string          `json:"phase,omitempty"`
		Message            string          `json:"message,omitempty"`
		ObservedGeneration json.RawMessage `json:"observedGeneration,omitempty"` // a string in v1alpha1
		Replicas           int32           `json:"replicas,omitempty"`
		ReadyReplicas      int32           `json:"readyReplicas,omitempty"`
		UpdatedReplicas    int32           `json:"updatedReplicas,omitempty"`
		Canary             struct {
			Weights *struct {
				Canary struct {
					Weight  int32  `json:"weight"`
					PodHash string `json:"podTemplateHash"`
				} `json:"canary"`
				Stable struct {
					Weight  int32  `json:"weight"`
					PodHash string `json:"podTemplateHash"`
				} `json:"stable"`
			} `json:"weights,omitempty"`
		} `json:"canary"`
	} `json:"status"`
}

// Observed reports whether the controller has observed the Rollout's
// current generation.
func (r *ArgoRollout) Observed() bool {
	s := strings.Trim(string(r.Status.ObservedGeneration), `"`)
	g, err := strconv.ParseInt(s, 10, 64)
	return err == nil && g == r.Metadata.Generation
}

// InProgress: an update is under way (the current template is not the
// stable one).
func (r *ArgoRollout) InProgress() bool {
	return r.Status.CurrentPodHash != "" && r.Status.CurrentPodHash != r.Status.StableRS
}

func rolloutPath(ns, name string) string {
	return "/apis/argoproj.io/v1alpha1/namespaces/" + ns + "/rollouts/" + name
}

// GetRollout reads an Argo Rollout.
func GetRollout(ctx context.Context, cs kubernetes.Interface, t Target) (*ArgoRollout, error) {
	return getCustom[ArgoRollout](ctx, cs, rolloutPath(t.Namespace, t.Name), t, "the Argo Rollouts CRDs (rollouts.argoproj.io)")
}

type rolloutKind struct{}

// history waits (bounded) for the controller to observe the Rollout's
// latest spec: only then does status say which ReplicaSet is current.
func (rolloutKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	var ro *ArgoRollout
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if ro, err = GetRollout(ctx, cs, t); err != nil {
			return nil, err
		}
		if ro.Observed() {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the Argo Rollouts controller has not observed generation %d of %s (observed %s); is it running?",
				ro.Metadata.Generation, t, orDash(strings.Trim(string(ro.Status.ObservedGeneration), `"`)))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if ro.Spec.WorkloadRef != nil {
		return nil, fmt.Errorf("%s takes its template from a Deployment (spec.workloadRef); roll that Deployment back instead", t)
	}
	sel, err := metav1.LabelSelectorAsSelector(ro.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("%s has an invalid selector: %w", t, err)
	}
	list, err := cs.AppsV1().ReplicaSets(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list replicasets of %s: %w", t, err)
	}
	h := &History{Target: t, Rollout: ro, Template: ro.Spec.Template, Selector: ro.Spec.Selector,
		Paused: ro.Spec.Paused, ResourceVersion: ro.Metadata.ResourceVersion}
	for i := range list.Items {
		rs := &list.Items[i]
		if ref := metav1.GetControllerOf(rs); ref == nil || ref.UID != ro.Metadata.UID {
			continue
		}
		n, err := strconv.ParseInt(rs.Annotations[argoRevisionAnnotation], 10, 64)
		if err != nil {
			continue
		}
		r := rsRevision(rs, n)
		r.podHash = rs.Labels[argoHashLabel]
		r.Current = r.podHash == ro.Status.CurrentPodHash
		r.Stable = r.podHash == ro.Status.StableRS
		h.Revisions = append(h.Revisions, r)
	}
	h.order()
	return h, nil
}

// rsRevision is the revision a ReplicaSet holds.
func rsRevision(rs *appsv1.ReplicaSet, n int64) Revision {
	r := Revision{Number: n, Object: rs.Name, Images: images(&rs.Spec.Template), ChangeCause: rs.Annotations[ChangeCauseAnnotation],
		Created: rs.CreationTimestamp.Time, Replicas: rs.Status.Replicas, Ready: rs.Status.ReadyReplicas, Health: Unknown,
		HealthReason: rs.Annotations[HealthReasonAnnotation], template: rs.Spec.Template, annotations: rs.Annotations}
	if hv, err := ParseHealth(rs.Annotations[HealthAnnotation]); err == nil {
		r.Health = hv
	}
	return r
}

// undoPatch puts the target's template back (without Argo's hash label),
// as 'kubectl argo rollouts undo' does, guarded by the generation the plan
// was made from: the controller rewrites the status (and so the
// resourceVersion) all through a canary, the spec only changes with a new
// generation.
func (rolloutKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	tmpl := to.template.DeepCopy()
	delete(tmpl.Labels, argoHashLabel)
	b, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/generation", "value": h.Rollout.Metadata.Generation},
		{"op": "replace", "path": "/spec/template", "value": tmpl},
	})
	return types.JSONPatchType, b, err
}

func (rolloutKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	return patchResource(ctx, cs, rolloutPath(t.Namespace, t.Name), pt, data, o)
}

func (rolloutKind) status(runtime.Object) (string, bool, error)             { return "", true, nil }
func (rolloutKind) listWatch(kubernetes.Interface, Target) *cache.ListWatch { return nil }

func (rolloutKind) markPatch(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	return deploymentKind{}.markPatch(ctx, cs, ns, object, data)
}

// setRolloutStatus merge-patches the Rollout's status subresource, as the
// kubectl plugin's abort and promote --full do.
func setRolloutStatus(ctx context.Context, cs kubernetes.Interface, t Target, field string, dry DryRun) error {
	o := metav1.PatchOptions{}
	if dry == DryRunServer {
		o.DryRun = []string{metav1.DryRunAll}
	}
	return patchResource(ctx, cs, rolloutPath(t.Namespace, t.Name)+"/status", types.MergePatchType, []byte(`{"status":{"`+field+`":true}}`), o)
}

// abortRollout aborts an update in progress, so the stable version takes
// all traffic before the template changes. It reports what it did.
func abortRollout(ctx context.Context, cs kubernetes.Interface, h *History, dry DryRun) (string, error) {
	ro := h.Rollout
	if !ro.InProgress() || ro.Status.Abort || dry == DryRunClient {
		return "", nil
	}
	if err := setRolloutStatus(ctx, cs, h.Target, "abort", dry); err != nil {
		return "", fmt.Errorf("abort %s: %w", h.Target.Ref(), err)
	}
	return fmt.Sprintf("aborted the update to %s (stable %s takes the traffic)", ro.Status.CurrentPodHash, ro.Status.StableRS), nil
}

// fastTracked reports whether Argo skips the steps and analysis for a
// return to revision to: it is the stable ReplicaSet (an update had not
// completed), or within spec.rollbackWindow.
func fastTracked(h *History, to *Revision) (bool, string) {
	if to.Stable {
		return true, "the stable ReplicaSet"
	}
	ro := h.Rollout
	var stable *Revision
	for i := range h.Revisions {
		if h.Revisions[i].Stable {
			stable = &h.Revisions[i]
		}
	}
	if ro.Spec.RollbackWindow == nil || stable == nil || !to.Created.Before(stable.Created) {
		return false, ""
	}
	between := int32(0)
	for _, r := range h.Revisions {
		if r.Created.Before(stable.Created) && to.Created.Before(r.Created) {
			between++
		}
	}
	if between < ro.Spec.RollbackWindow.Revisions {
		return true, fmt.Sprintf("within spec.rollbackWindow (%d revisions)", ro.Spec.RollbackWindow.Revisions)
	}
	return false, ""
}

// waitRolloutHealthy waits until the controller has taken the target's
// template and the Rollout is Healthy on it (current = stable = target).
// A target Argo would not fast-track is fully promoted once the
// controller has taken it.
func waitRolloutHealthy(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, progress func(string)) (string, error) {
	fast, why := fastTracked(h, to)
	promoted := false
	var promotedAt time.Time
	last := ""
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ro, err := GetRollout(ctx, cs, h.Target)
		if err != nil {
			return "", err
		}
		cur := ""
		if ro.Observed() {
			cur = ro.Status.CurrentPodHash
		}
		// The target's hash: the controller adopts the target ReplicaSet
		// (its template equals the restored one).
		onTarget := cur != "" && cur == to.podHash
		msg := fmt.Sprintf("rollout %s: phase %s, current %s, stable %s, %d/%d ready", h.Target.Name, orDash(ro.Status.Phase),
			orDash(ro.Status.CurrentPodHash), orDash(ro.Status.StableRS), ro.Status.ReadyReplicas, ro.Status.Replicas)
		if ro.Status.Message != "" {
			msg += " (" + ro.Status.Message + ")"
		}
		if onTarget && ro.Status.StableRS == cur && ro.Status.Phase == "Healthy" {
			if progress != nil && msg != last {
				progress(msg)
			}
			switch {
			case fast:
				return "fast-tracked by Argo Rollouts: " + why, nil
			case promoted:
				return "fully promoted (status.promoteFull): steps and analysis skipped", nil
			}
			return "promoted", nil
		}
		// Promoted again when a later read shows the controller still
		// stepping without status.promoteFull (a status write of its own,
		// from a copy older than the promotion, can drop it: seen under
		// load with the real controller, paused at a step for a minute).
		if onTarget && !fast && ro.InProgress() && !ro.Status.PromoteFull && (!promoted || time.Since(promotedAt) >= 2*time.Second) {
			if err := setRolloutStatus(ctx, cs, h.Target, "promoteFull", DryRunNone); err != nil {
				return "", fmt.Errorf("promote %s fully: %w", h.Target.Ref(), err)
			}
			if promoted {
				msg += "; status.promoteFull was gone while the controller still stepped: promoted fully again"
			} else {
				msg += "; outside the rollback window: promoted fully (steps and analysis skipped)"
			}
			promoted, promotedAt = true, time.Now()
		}
		if progress != nil && msg != last {
			progress(msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w of %s to revision %d (last: %s)", ErrTimeout, h.Target.Ref(), to.Number, last)
		case <-tick.C:
		}
	}
}

func (rolloutKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	how, err := waitRolloutHealthy(ctx, s.cs, s.h, s.to, s.say)
	if err != nil {
		return "", err
	}
	out.revision = s.to.Number
	return fmt.Sprintf("%s is Healthy on revision %d (%s)", s.h.Target.Ref(), s.to.Number, how), nil
}

func (rolloutKind) traits() traits { return traits{restoresConfig: true} }

// prepare: abort the update in progress first, so the stable version
// takes the traffic at once.
func (rolloutKind) prepare(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, dry DryRun) error {
	aborted, err := abortRollout(ctx, cs, h, dry)
	if err != nil || aborted == "" || dry != DryRunNone {
		return err
	}
	// The abort changed the status, so the resourceVersion: the guard is
	// now that the spec (generation) is the planned one, or that a spec
	// changed since (scaled by an autoscaler) still has the planned
	// revision current (Undo then guards its patch again).
	ro, err := GetRollout(ctx, cs, h.Target)
	if err != nil {
		return err
	}
	if ro.Metadata.Generation != h.Rollout.Metadata.Generation {
		if _, same := stillPlanned(ctx, cs, h, to); !same {
			return fmt.Errorf("%w: %s was modified after the plan was made; run the command again", ErrConflict, h.Target.Ref())
		}
	}
	h.ResourceVersion = ro.Metadata.ResourceVersion
	return nil
}
