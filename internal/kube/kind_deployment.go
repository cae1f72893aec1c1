package kube

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// A Deployment: its revisions are its ReplicaSets (history.go reads them).
type deploymentKind struct{ plainWorkload }

func (deploymentKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	return getDeploymentHistory(ctx, cs, t)
}

// undoPatch is guarded by the planned generation: the Deployment's spec
// must be the planned one. Its status (the controller rewrites it while
// pods come and go, more so while a broken version crashes) is no
// conflict.
func (deploymentKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	b, err := deploymentUndoPatch(to, map[string]any{"op": "test", "path": "/metadata/generation", "value": h.Deployment.Generation})
	return types.JSONPatchType, b, err
}

func (deploymentKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	_, err := cs.AppsV1().Deployments(t.Namespace).Patch(ctx, t.Name, pt, data, o)
	return err
}

func (deploymentKind) status(obj runtime.Object) (string, bool, error) {
	return typedStatus(obj, RolloutStatus)
}

func (deploymentKind) listWatch(cs kubernetes.Interface, t Target) *cache.ListWatch {
	c := cs.AppsV1().Deployments(t.Namespace)
	return listWatch(byName(t), c.List, c.Watch)
}

func (deploymentKind) markPatch(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	_, err := cs.AppsV1().ReplicaSets(ns).Patch(ctx, object, types.MergePatchType, data, metav1.PatchOptions{FieldManager: "rollback"})
	return err
}

func (deploymentKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	return settlePlain(ctx, s, out, settleWait, false)
}
