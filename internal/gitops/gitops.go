// Package gitops finds the GitOps reconciler that owns a workload (Argo CD
// or Flux) and pauses it before a rollback, so the reconciler does not
// re-apply the broken version from Git seconds after the undo (Argo CD's
// automated sync with self-heal, a Flux Kustomization's interval). The
// pause is recorded on the reconciler's own object (annotations) with the
// incident and what was there before, so it is never left without a
// record, a resumed run finds it done, and Resume puts it back once the
// revert is in Git. The revert itself is written here too (git.go: a
// 'git revert' of the release commit or an edit of exactly the image
// fields, pushed or proposed through a forge, forge.go), to the repository
// the reconciler's own objects name (source.go).
package gitops

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/kube"
)

// Labels and annotations the reconcilers put on what they apply.
const (
	ArgoTrackingID    = "argocd.argoproj.io/tracking-id" // APP:GROUP/KIND:NS/NAME
	ArgoInstanceLabel = "argocd.argoproj.io/instance"
	AppInstanceLabel  = "app.kubernetes.io/instance" // Argo CD's default label tracking
	FluxKsName        = "kustomize.toolkit.fluxcd.io/name"
	FluxKsNamespace   = "kustomize.toolkit.fluxcd.io/namespace"
	FluxHelmName      = "helm.toolkit.fluxcd.io/name"
	FluxHelmNamespace = "helm.toolkit.fluxcd.io/namespace"
)

// rollback's annotations on a paused reconciler object.
const (
	PausedByAnnotation  = "rollback/paused-by"
	PausedWasAnnotation = "rollback/paused-was"
)

// Owner is the reconciler object that applies a workload.
type Owner struct {
	Tool      string `json:"tool"` // argocd, flux
	Kind      string `json:"kind"` // Application, Kustomization, HelmRelease
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Weak: found only by app.kubernetes.io/instance, which Helm charts
	// set too; it counts only if the Application exists.
	Weak bool `json:"weak,omitempty"`
}

func (o Owner) String() string {
	return fmt.Sprintf("%s %s %s/%s", o.Tool, o.Kind, o.Namespace, o.Name)
}

// resource is the owner's kind as an RBAC rule names it.
func (o Owner) resource() string {
	switch o.Kind {
	case "Application":
		return "applications.argoproj.io"
	case "Kustomization":
		return "kustomizations.kustomize.toolkit.fluxcd.io"
	}
	return "helmreleases.helm.toolkit.fluxcd.io"
}

func (o Owner) path() string {
	switch o.Kind {
	case "Application":
		return "/apis/argoproj.io/v1alpha1/namespaces/" + o.Namespace + "/applications/" + o.Name
	case "Kustomization":
		return "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/" + o.Namespace + "/kustomizations/" + o.Name
	}
	return "/apis/helm.toolkit.fluxcd.io/v2/namespaces/" + o.Namespace + "/helmreleases/" + o.Name
}

// Detect finds the owner from a workload's metadata. Argo CD Applications
// live in argoNamespace ("argocd" when empty); Argo CD's default label
// tracking (app.kubernetes.io/instance) is a weak sign, since Helm charts
// set that label too: Pause acts on it only if the Application exists.
func Detect(m metav1.Object, argoNamespace string) *Owner {
	if argoNamespace == "" {
		argoNamespace = "argocd"
	}
	ann, lab := m.GetAnnotations(), m.GetLabels()
	switch {
	case lab[FluxKsName] != "":
		return &Owner{Tool: "flux", Kind: "Kustomization", Namespace: cmp.Or(lab[FluxKsNamespace], m.GetNamespace()), Name: lab[FluxKsName]}
	case lab[FluxHelmName] != "":
		return &Owner{Tool: "flux", Kind: "HelmRelease", Namespace: cmp.Or(lab[FluxHelmNamespace], m.GetNamespace()), Name: lab[FluxHelmName]}
	case ann[ArgoTrackingID] != "":
		app, _, _ := strings.Cut(ann[ArgoTrackingID], ":")
		ns := argoNamespace
		if a, n, ok := strings.Cut(app, "_"); ok { // apps in any namespace: NS_APP
			ns, app = a, n
		}
		return &Owner{Tool: "argocd", Kind: "Application", Namespace: ns, Name: app}
	case lab[ArgoInstanceLabel] != "":
		return &Owner{Tool: "argocd", Kind: "Application", Namespace: argoNamespace, Name: lab[ArgoInstanceLabel]}
	case lab[AppInstanceLabel] != "":
		return &Owner{Tool: "argocd", Kind: "Application", Namespace: argoNamespace, Name: lab[AppInstanceLabel], Weak: true}
	}
	return nil
}

type ownerObject struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Status   struct {
		LastHandledReconcileAt string `json:"lastHandledReconcileAt"`
		OperationState         *struct {
			Phase string `json:"phase"`
		} `json:"operationState"`
	} `json:"status"`
	Spec struct {
		Suspend    bool `json:"suspend,omitempty"`
		SyncPolicy *struct {
			Automated json.RawMessage `json:"automated,omitempty"`
		} `json:"syncPolicy,omitempty"`
	} `json:"spec"`
}

// Pause stops the owner from re-applying Git (Argo CD: the Application's
// automated sync, self-heal with it, is removed; Flux: spec.suspend), and
// records the incident and the previous setting on the object. Pausing
// one already paused by the incident changes nothing. It says what it did,
// and whether the owner is now paused by rollback (false when nothing was
// re-applying Git by itself).
//
// The patch is conditional on the object's resourceVersion; the reconciler
// writes its object's status all the time, so a patch that lost that race
// is made again on a fresh read.
//
// A reconcile already under way when the pause lands still applies what it
// read: settle bounds the wait for the reconciler to acknowledge the pause
// (Flux: its status handles the reconcile request sent with the pause,
// which it can only do after the one in flight; Argo CD: no sync operation
// running), so the undo is not overwritten by it. 0 does not wait.
func Pause(ctx context.Context, cs kubernetes.Interface, o Owner, incident string, settle time.Duration) (string, bool, error) {
	for attempt := 1; ; attempt++ {
		msg, paused, token, err := pauseOnce(ctx, cs, o, incident)
		if !raced(err) || attempt == 5 || ctx.Err() != nil {
			if err == nil && token != "" && settle > 0 {
				msg += "; " + awaitQuiet(ctx, cs, o, token, settle)
			}
			return msg, paused, err
		}
	}
}

// awaitQuiet waits until the reconciler has nothing in flight that could
// still apply the broken version, and says how it went.
func awaitQuiet(ctx context.Context, cs kubernetes.Interface, o Owner, token string, settle time.Duration) string {
	start := time.Now()
	for {
		obj, err := kube.GetCustom[ownerObject](ctx, cs, o.path(), kube.Target{Namespace: o.Namespace, Name: o.Name, Kind: kube.Kind(strings.ToLower(o.Kind))}, o.Tool+" CRDs")
		if err == nil {
			switch {
			case o.Tool == "argocd" && (obj.Status.OperationState == nil || (obj.Status.OperationState.Phase != "Running" && obj.Status.OperationState.Phase != "Terminating")):
				return fmt.Sprintf("no sync operation in flight (checked in %.1fs)", time.Since(start).Seconds())
			case o.Tool != "argocd" && obj.Status.LastHandledReconcileAt == token:
				return fmt.Sprintf("the controller acknowledged the pause in %.1fs (any reconcile in flight has finished)", time.Since(start).Seconds())
			}
		}
		if time.Since(start) > settle || ctx.Err() != nil {
			return fmt.Sprintf("the controller did not acknowledge the pause within %s (is it running?): a reconcile in flight may still apply; the undo's image check will say", settle)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// raced says whether a conditional patch lost to another writer: a
// conflict, or a JSON patch whose resourceVersion test failed.
func raced(err error) bool {
	return err != nil && (apierrors.IsConflict(err) || apierrors.IsInvalid(err))
}

// ReconcileRequestAnnotation asks a Flux controller to reconcile now; its
// status's lastHandledReconcileAt says when it has.
const ReconcileRequestAnnotation = "reconcile.fluxcd.io/requestedAt"

// pauseOnce pauses the owner by a patch conditional on what it read, and
// returns the token its acknowledgement will carry ("" when nothing was
// newly paused).
func pauseOnce(ctx context.Context, cs kubernetes.Interface, o Owner, incident string) (string, bool, string, error) {
	obj, err := kube.GetCustom[ownerObject](ctx, cs, o.path(), kube.Target{Namespace: o.Namespace, Name: o.Name, Kind: kube.Kind(strings.ToLower(o.Kind))}, o.Tool+" CRDs")
	if apierrors.IsForbidden(err) {
		// Not allowed to look is not "not there": a reconciler left
		// running would undo the rollback. Say which rule is missing.
		return "", false, "", fmt.Errorf("pause %s: forbidden: %w; grant get and patch on %s in namespace %s (deploy/workloads-role.yaml, role rollback-gitops)",
			o, err, o.resource(), o.Namespace)
	}
	if err != nil && o.Weak {
		// app.kubernetes.io/instance without an Application of that
		// name: a Helm release or a plain label, not Argo CD.
		return fmt.Sprintf("no Argo CD Application %s/%s for the app.kubernetes.io/instance label: not applied by Argo CD", o.Namespace, o.Name), false, "", nil
	}
	if err != nil {
		return "", false, "", err
	}
	// Whether it is paused is read from the spec (someone may have
	// resumed it by hand since an earlier pause was recorded).
	by := obj.Metadata.Annotations[PausedByAnnotation]
	var ops []map[string]any
	var was, did, resume string
	switch o.Tool {
	case "argocd":
		if obj.Spec.SyncPolicy == nil || len(obj.Spec.SyncPolicy.Automated) == 0 || string(obj.Spec.SyncPolicy.Automated) == "null" {
			if by != "" {
				m, p, err := join(ctx, cs, o, obj, incident)
				return m, p, "", err
			}
			return fmt.Sprintf("%s has no automated sync: nothing re-applies Git by itself", o), false, "", nil
		}
		was = string(obj.Spec.SyncPolicy.Automated)
		ops = append(ops, map[string]any{"op": "remove", "path": "/spec/syncPolicy/automated"})
		did = "automated sync (and self-heal) turned off, was " + was
		resume = fmt.Sprintf("argocd app set %s --sync-policy automated --self-heal", o.Name)
	default:
		if obj.Spec.Suspend {
			if by != "" {
				m, p, err := join(ctx, cs, o, obj, incident)
				return m, p, "", err
			}
			return fmt.Sprintf("%s is already suspended", o), false, "", nil
		}
		was = "false"
		ops = append(ops, map[string]any{"op": "add", "path": "/spec/suspend", "value": true})
		did = "suspended (spec.suspend: true)"
		resume = fmt.Sprintf("flux resume %s %s -n %s", strings.ToLower(o.Kind), o.Name, o.Namespace)
	}
	set := map[string]string{PausedByAnnotation: incident, PausedWasAnnotation: was}
	keys := []string{PausedByAnnotation, PausedWasAnnotation}
	token := "argocd"
	if o.Tool != "argocd" {
		token = fmt.Sprintf("rollback-pause-%s-%d", incident, time.Now().UnixNano())
		set[ReconcileRequestAnnotation] = token
		keys = append(keys, ReconcileRequestAnnotation)
	}
	if obj.Metadata.Annotations == nil {
		ops = append(ops, map[string]any{"op": "add", "path": "/metadata/annotations", "value": set})
	} else {
		for _, k := range keys {
			ops = append(ops, map[string]any{"op": "add", "path": "/metadata/annotations/" + strings.ReplaceAll(k, "/", "~1"), "value": set[k]})
		}
	}
	ops = append([]map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": obj.Metadata.ResourceVersion}}, ops...)
	b, err := json.Marshal(ops)
	if err != nil {
		return "", false, "", err
	}
	if err := kube.PatchCustom(ctx, cs, o.path(), types.JSONPatchType, b); err != nil {
		return "", false, "", fmt.Errorf("pause %s: %w", o, err)
	}
	return fmt.Sprintf("%s %s by %s. IT STAYS PAUSED until Git has the rollback: the gitops-revert step writes it and resumes it (or revert by hand, then 'rollback gitops resume %s', or '%s')", o, did, incident, incident, resume), true, token, nil
}

// pausers is the incidents that hold a pause (the annotation's list).
func pausers(by string) []string {
	var out []string
	for _, id := range strings.Split(by, ",") {
		if id = strings.TrimSpace(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// join adds the incident to an owner another incident paused: the owner
// resumes only when the last of them resumes it, so one incident's revert
// landing in Git never lets the reconciler re-apply another's broken
// version.
func join(ctx context.Context, cs kubernetes.Interface, o Owner, obj *ownerObject, incident string) (string, bool, error) {
	by := pausers(obj.Metadata.Annotations[PausedByAnnotation])
	for _, id := range by {
		if id == incident {
			return fmt.Sprintf("%s already paused by %s", o, strings.Join(by, ", ")), true, nil
		}
	}
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": obj.Metadata.ResourceVersion,
		"annotations": map[string]any{PausedByAnnotation: strings.Join(append(by, incident), ",")}}})
	if err != nil {
		return "", false, err
	}
	if err := kube.PatchCustom(ctx, cs, o.path(), types.MergePatchType, b); err != nil {
		return "", false, fmt.Errorf("pause %s: %w", o, err)
	}
	return fmt.Sprintf("%s already paused by %s; %s holds the pause too (it resumes when the last of them has its revert in Git)", o, strings.Join(by, ", "), incident), true, nil
}

// Resume puts back what Pause changed, for the incident (""; whoever
// paused it: an operator's word). While another incident still holds the
// pause, only this one's hold is released.
func Resume(ctx context.Context, cs kubernetes.Interface, o Owner, incident string) (string, error) {
	for attempt := 1; ; attempt++ {
		msg, err := resumeOnce(ctx, cs, o, incident)
		if !raced(err) || attempt == 5 || ctx.Err() != nil {
			return msg, err
		}
	}
}

func resumeOnce(ctx context.Context, cs kubernetes.Interface, o Owner, incident string) (string, error) {
	obj, err := kube.GetCustom[ownerObject](ctx, cs, o.path(), kube.Target{Namespace: o.Namespace, Name: o.Name, Kind: kube.Kind(strings.ToLower(o.Kind))}, o.Tool+" CRDs")
	if err != nil {
		return "", err
	}
	raw, ok := obj.Metadata.Annotations[PausedByAnnotation]
	if !ok {
		return fmt.Sprintf("%s was not paused by rollback", o), nil
	}
	by := pausers(raw)
	var rest []string
	for _, id := range by {
		if id != incident {
			rest = append(rest, id)
		}
	}
	meta := map[string]any{"resourceVersion": obj.Metadata.ResourceVersion}
	if incident != "" && len(rest) > 0 {
		if len(rest) == len(by) {
			return fmt.Sprintf("%s is paused by %s, not by %s: left paused", o, raw, incident), nil
		}
		meta["annotations"] = map[string]any{PausedByAnnotation: strings.Join(rest, ",")}
		b, err := json.Marshal(map[string]any{"metadata": meta})
		if err != nil {
			return "", err
		}
		if err := kube.PatchCustom(ctx, cs, o.path(), types.MergePatchType, b); err != nil {
			return "", fmt.Errorf("resume %s: %w", o, err)
		}
		return fmt.Sprintf("%s left paused: %s released its hold, %s still holds it", o, incident, strings.Join(rest, ", ")), nil
	}
	was := obj.Metadata.Annotations[PausedWasAnnotation]
	spec := map[string]any{}
	switch o.Tool {
	case "argocd":
		var automated any
		if err := json.Unmarshal([]byte(was), &automated); err != nil {
			return "", fmt.Errorf("%s: the recorded automated sync %q is not JSON: %w", o, was, err)
		}
		// A merge patch: the syncPolicy the pause emptied may be gone.
		spec["syncPolicy"] = map[string]any{"automated": automated}
	default:
		spec["suspend"] = was == "true"
	}
	meta["annotations"] = map[string]any{PausedByAnnotation: nil, PausedWasAnnotation: nil}
	b, err := json.Marshal(map[string]any{"metadata": meta, "spec": spec})
	if err != nil {
		return "", err
	}
	if err := kube.PatchCustom(ctx, cs, o.path(), types.MergePatchType, b); err != nil {
		return "", fmt.Errorf("resume %s: %w", o, err)
	}
	return fmt.Sprintf("%s resumed (paused by %s)", o, raw), nil
}
