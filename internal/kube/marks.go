package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Mark sets the health mark of one revision of t, on the object holding it
// (a ReplicaSet or a ControllerRevision; unknown clears it). The mark lives
// on the cluster object, so every machine sees the same history.
func Mark(ctx context.Context, cs kubernetes.Interface, t Target, object string, h Health, reason string, now time.Time) error {
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
	if err := kindOf(t).markPatch(ctx, cs, t.Namespace, object, patch); err != nil {
		return fmt.Errorf("mark %s %s: %w", object, h, err)
	}
	return nil
}
