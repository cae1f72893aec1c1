package kube

import (
	"context"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// SetImage sets the first container's image of a Deployment, StatefulSet
// or DaemonSet, as `kubectl set image` does: the chaos drill deploys a
// deliberately failing version with it (never to production).
func SetImage(ctx context.Context, cs kubernetes.Interface, t Target, image string) error {
	patch, _ := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}})
	var err error
	switch t.Of() {
	case KindDeployment:
		_, err = cs.AppsV1().Deployments(t.Namespace).Patch(ctx, t.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "rollback"})
	case KindStatefulSet:
		_, err = cs.AppsV1().StatefulSets(t.Namespace).Patch(ctx, t.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "rollback"})
	case KindDaemonSet:
		_, err = cs.AppsV1().DaemonSets(t.Namespace).Patch(ctx, t.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "rollback"})
	default:
		return fmt.Errorf("set image: %s is not a Deployment, StatefulSet or DaemonSet", t.Ref())
	}
	if err != nil {
		return fmt.Errorf("set image of %s: %w", t.Ref(), err)
	}
	return nil
}
