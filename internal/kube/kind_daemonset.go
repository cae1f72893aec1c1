package kube

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// A DaemonSet: its revisions are ControllerRevisions.
type daemonSetKind struct{ plainWorkload }

func (daemonSetKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	ds, err := cs.AppsV1().DaemonSets(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return nil, notFound(t, err)
	}
	h := &History{Target: Target{Namespace: ds.Namespace, Name: ds.Name, Kind: KindDaemonSet}, DaemonSet: ds,
		Template: ds.Spec.Template, ResourceVersion: ds.ResourceVersion}
	// A DaemonSet's pods carry the ControllerRevision's hash label.
	return revisionHistory(ctx, cs, h, ds.UID, ds.Spec.Selector, func(cr *appsv1.ControllerRevision) string { return cr.Labels[controllerRevisionHash] })
}

func (daemonSetKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	return revisionUndoPatch(h, to)
}

func (daemonSetKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	_, err := cs.AppsV1().DaemonSets(t.Namespace).Patch(ctx, t.Name, pt, data, o)
	return err
}

// DaemonSetStatus is kubectl rollout status' verdict on a DaemonSet. With
// OnDelete the same counts apply once the rollback has replaced the pods.
func DaemonSetStatus(d *appsv1.DaemonSet) (string, bool, error) {
	if d.Generation > d.Status.ObservedGeneration {
		return "Waiting for daemon set spec update to be observed...", false, nil
	}
	if d.Status.UpdatedNumberScheduled < d.Status.DesiredNumberScheduled {
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...",
			d.Name, d.Status.UpdatedNumberScheduled, d.Status.DesiredNumberScheduled), false, nil
	}
	if d.Status.NumberAvailable < d.Status.DesiredNumberScheduled {
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...",
			d.Name, d.Status.NumberAvailable, d.Status.DesiredNumberScheduled), false, nil
	}
	return fmt.Sprintf("daemon set %q successfully rolled out", d.Name), true, nil
}

func (daemonSetKind) status(obj runtime.Object) (string, bool, error) {
	return typedStatus(obj, DaemonSetStatus)
}

func (daemonSetKind) listWatch(cs kubernetes.Interface, t Target) *cache.ListWatch {
	c := cs.AppsV1().DaemonSets(t.Namespace)
	return listWatch(byName(t), c.List, c.Watch)
}

func (daemonSetKind) markPatch(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	return markControllerRevision(ctx, cs, ns, object, data)
}

func (daemonSetKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	if s.h.onDelete() {
		return settlePlain(ctx, s, out, settleOnDelete, false)
	}
	return settlePlain(ctx, s, out, settleWait, true)
}
