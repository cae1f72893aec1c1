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

// A StatefulSet: its revisions are ControllerRevisions.
type statefulSetKind struct{ plainWorkload }

func (statefulSetKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	sts, err := cs.AppsV1().StatefulSets(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return nil, notFound(t, err)
	}
	h := &History{Target: Target{Namespace: sts.Namespace, Name: sts.Name, Kind: KindStatefulSet}, StatefulSet: sts,
		Template: sts.Spec.Template, ResourceVersion: sts.ResourceVersion}
	// A StatefulSet's pods carry the ControllerRevision's name.
	return revisionHistory(ctx, cs, h, sts.UID, sts.Spec.Selector, func(cr *appsv1.ControllerRevision) string { return cr.Name })
}

func (statefulSetKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	return revisionUndoPatch(h, to)
}

func (statefulSetKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	_, err := cs.AppsV1().StatefulSets(t.Namespace).Patch(ctx, t.Name, pt, data, o)
	return err
}

// StatefulSetStatus is kubectl rollout status' verdict on a StatefulSet,
// with its partitioned roll out. OnDelete is not watched by kubectl; the
// rollback replaces such pods itself (see replaceOnDelete), so here it is
// complete once the spec is observed and every pod is on the update
// revision and Ready.
func StatefulSetStatus(s *appsv1.StatefulSet) (string, bool, error) {
	if s.Status.ObservedGeneration == 0 || s.Generation > s.Status.ObservedGeneration {
		return "Waiting for statefulset spec update to be observed...", false, nil
	}
	replicas := int32(1)
	if s.Spec.Replicas != nil {
		replicas = *s.Spec.Replicas
	}
	if s.Status.ReadyReplicas < replicas {
		return fmt.Sprintf("Waiting for %d pods to be ready...", replicas-s.Status.ReadyReplicas), false, nil
	}
	if s.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		if s.Status.UpdatedReplicas < replicas {
			return fmt.Sprintf("Waiting for OnDelete pods to be replaced: %d out of %d on revision %s...", s.Status.UpdatedReplicas, replicas, s.Status.UpdateRevision), false, nil
		}
		return fmt.Sprintf("statefulset rolling update complete %d pods at revision %s...", s.Status.UpdatedReplicas, s.Status.UpdateRevision), true, nil
	}
	if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil && *ru.Partition > 0 {
		if s.Status.UpdatedReplicas < replicas-*ru.Partition {
			return fmt.Sprintf("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...",
				s.Status.UpdatedReplicas, replicas-*ru.Partition), false, nil
		}
		return fmt.Sprintf("partitioned roll out complete: %d new pods have been updated...", s.Status.UpdatedReplicas), true, nil
	}
	if s.Status.UpdateRevision != s.Status.CurrentRevision {
		return fmt.Sprintf("waiting for statefulset rolling update to complete %d pods at revision %s...", s.Status.UpdatedReplicas, s.Status.UpdateRevision), false, nil
	}
	return fmt.Sprintf("statefulset rolling update complete %d pods at revision %s...", s.Status.CurrentReplicas, s.Status.CurrentRevision), true, nil
}

func (statefulSetKind) status(obj runtime.Object) (string, bool, error) {
	return typedStatus(obj, StatefulSetStatus)
}

func (statefulSetKind) listWatch(cs kubernetes.Interface, t Target) *cache.ListWatch {
	c := cs.AppsV1().StatefulSets(t.Namespace)
	return listWatch(byName(t), c.List, c.Watch)
}

func (statefulSetKind) markPatch(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	return markControllerRevision(ctx, cs, ns, object, data)
}

func (statefulSetKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	if s.h.onDelete() {
		return settlePlain(ctx, s, out, settleOnDelete, false)
	}
	// The controller never replaces a pod stuck on the broken revision
	// (kubernetes#67250): the rollback does.
	return settlePlain(ctx, s, out, settleStuck, false)
}
