package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Mark sets the health mark of one ReplicaSet (unknown clears it). The
// mark lives on the cluster object, so every machine sees the same history.
func Mark(ctx context.Context, cs kubernetes.Interface, namespace, replicaSet string, h Health, reason string, now time.Time) error {
	ann := map[string]any{}
	if h == Unknown {
		ann[HealthAnnotation], ann[HealthReasonAnnotation], ann[HealthAtAnnotation] = nil, nil, nil
	} else {
		ann[HealthAnnotation] = string(h)
		ann[HealthAtAnnotation] = now.UTC().Format(time.RFC3339)
		if reason != "" {
			ann[HealthReasonAnnotation] = reason
		} else {
			ann[HealthReasonAnnotation] = nil
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	_, err = cs.AppsV1().ReplicaSets(namespace).Patch(ctx, replicaSet, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "rollback"})
	if err != nil {
		return fmt.Errorf("mark replicaset %s %s: %w", replicaSet, h, err)
	}
	return nil
}
