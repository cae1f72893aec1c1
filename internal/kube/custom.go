package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Custom resources (HTTPRoute, Rollout, Canary, reconcilers' objects) are
// read and patched through the API server's REST interface, as JSON.

// getResource reads a custom resource's JSON through the API server's
// REST interface; crds names the CRDs for the error when they are not
// installed.
func getResource(ctx context.Context, cs kubernetes.Interface, path string, t Target, crds string) ([]byte, error) {
	rc := cs.Discovery().RESTClient()
	if rc == nil {
		return nil, fmt.Errorf("get %s: this client has no REST interface for custom resources", t)
	}
	raw, err := rc.Get().AbsPath(path).Do(ctx).Raw()
	if err != nil {
		var st apierrors.APIStatus
		if apierrors.IsNotFound(err) && errors.As(err, &st) && st.Status().Details != nil && st.Status().Details.Name == "" {
			// No object name in the 404: the resource type itself is missing.
			return nil, fmt.Errorf("get %s: %s are not installed in this cluster: %w", t, crds, err)
		}
		return nil, notFound(t, err)
	}
	return raw, nil
}

// getCustom reads a custom resource into T.
func getCustom[T any](ctx context.Context, cs kubernetes.Interface, path string, t Target, crds string) (*T, error) {
	raw, err := getResource(ctx, cs, path, t, crds)
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", t, err)
	}
	return &v, nil
}

// patchResource patches a custom resource (path may end in /status).
func patchResource(ctx context.Context, cs kubernetes.Interface, path string, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	req := cs.Discovery().RESTClient().Patch(pt).AbsPath(path).Body(data)
	if o.FieldManager != "" {
		req = req.Param("fieldManager", o.FieldManager)
	}
	for _, d := range o.DryRun {
		req = req.Param("dryRun", d)
	}
	raw, err := req.DoRaw(ctx)
	if err == nil {
		return nil
	}
	// The REST interface does not decode the server's Status: read it,
	// so the reason (a failed test operation: a conflict) is not lost.
	var st metav1.Status
	if json.Unmarshal(raw, &st) == nil && st.Message != "" {
		return &apierrors.StatusError{ErrStatus: st}
	}
	return err
}

// GetCustom reads a custom resource (an API path such as
// /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME) into T; crds names the
// CRDs for the error when they are not installed.
func GetCustom[T any](ctx context.Context, cs kubernetes.Interface, path string, t Target, crds string) (*T, error) {
	return getCustom[T](ctx, cs, path, t, crds)
}

// PatchCustom patches a custom resource.
func PatchCustom(ctx context.Context, cs kubernetes.Interface, path string, pt types.PatchType, data []byte) error {
	return patchResource(ctx, cs, path, pt, data, metav1.PatchOptions{FieldManager: "rollback"})
}
