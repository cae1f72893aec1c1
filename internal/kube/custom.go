package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

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
		err = statusOf(raw, err)
		if apierrors.IsForbidden(err) {
			// Not allowed to look is not "not there": say which rule.
			return nil, fmt.Errorf("get %s: %w; grant get and patch on %s (deploy/workloads-role.yaml)", t, err, resourceOf(path))
		}
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
	err = statusOf(raw, err)
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w; grant patch on %s (deploy/workloads-role.yaml)", err, resourceOf(path))
	}
	return err
}

// statusOf reads the server's Status from a failed request's body: the
// REST interface does not decode it, and its error says only "unknown",
// losing the reason (forbidden, a failed test operation's conflict).
func statusOf(raw []byte, err error) error {
	var st metav1.Status
	if json.Unmarshal(raw, &st) == nil && st.Message != "" {
		return &apierrors.StatusError{ErrStatus: st}
	}
	return err
}

// resourceOf names an API path's resource for an RBAC rule:
// "rollouts.argoproj.io in namespace NS" from
// /apis/argoproj.io/v1alpha1/namespaces/NS/rollouts/NAME[/status].
func resourceOf(path string) string {
	p := strings.Split(strings.Trim(path, "/"), "/")
	if len(p) >= 6 && p[0] == "apis" && p[3] == "namespaces" {
		r := p[5] + "." + p[1]
		if len(p) >= 8 {
			r = p[5] + "/" + p[7] + "." + p[1]
		}
		return r + " in namespace " + p[4]
	}
	return path
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
