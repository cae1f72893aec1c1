package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Custom resources (HTTPRoute, Rollout, Canary, reconcilers' objects) are
// read and patched through the API server's REST interface, as JSON.

// Clients is everything a rollback talks to for one workload: the typed
// client, a dynamic one beside it (custom resources go through it; a fake
// of each in tests), and the adapters of the kinds that live outside the
// Kubernetes API: a load balancer's listener API (KindLoadBalancer) and
// the namespace's Helm releases (KindHelm). A Target is only an identity;
// what reaches it travels here.
type Clients struct {
	kubernetes.Interface
	Dyn  dynamic.Interface
	LB   LoadBalancer
	Helm HelmReleases
}

// WithAdapters is cs with the given adapters (nil keeps what cs has).
func WithAdapters(cs kubernetes.Interface, lb LoadBalancer, helm HelmReleases) kubernetes.Interface {
	c := clientsOf(cs)
	if lb != nil {
		c.LB = lb
	}
	if helm != nil {
		c.Helm = helm
	}
	return c
}

// clientsOf is cs as Clients (a bare typed client has no dynamic client
// and no adapters).
func clientsOf(cs kubernetes.Interface) Clients {
	switch c := cs.(type) {
	case Clients:
		return c
	case *Clients:
		return *c
	}
	return Clients{Interface: cs, Dyn: dynamicOf(cs)}
}

// AdaptersOf are the load balancer and Helm adapters cs carries (nil when
// not).
func AdaptersOf(cs kubernetes.Interface) (LoadBalancer, HelmReleases) {
	c := clientsOf(cs)
	return c.LB, c.Helm
}

// Dynamic is the dynamic client.
func (c Clients) Dynamic() dynamic.Interface { return c.Dyn }

// NewClients makes both clients from one configuration.
func NewClients(rc *rest.Config) (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return Clients{Interface: cs, Dyn: dyn}, nil
}

// dynamicOf is the client's dynamic client, or nil.
func dynamicOf(cs kubernetes.Interface) dynamic.Interface {
	if d, ok := cs.(interface{ Dynamic() dynamic.Interface }); ok {
		return d.Dynamic()
	}
	return nil
}

// resourcePath is an API path of a namespaced custom resource:
// /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME[/SUBRESOURCE].
type resourcePath struct {
	gvr             schema.GroupVersionResource
	namespace, name string
	sub             []string
}

func parsePath(path string) (resourcePath, error) {
	p := strings.Split(strings.Trim(path, "/"), "/")
	if len(p) < 7 || len(p) > 8 || p[0] != "apis" || p[3] != "namespaces" || slices.Contains(p, "") {
		return resourcePath{}, fmt.Errorf("not a namespaced custom resource's path: %q", path)
	}
	return resourcePath{gvr: schema.GroupVersionResource{Group: p[1], Version: p[2], Resource: p[5]}, namespace: p[4], name: p[6], sub: p[7:]}, nil
}

// getResource reads a custom resource's JSON (through the dynamic client
// when the client has one, else the API server's REST interface); crds
// names the CRDs for the error when they are not installed.
func getResource(ctx context.Context, cs kubernetes.Interface, path string, t Target, crds string) ([]byte, error) {
	var raw []byte
	var err error
	if dyn := dynamicOf(cs); dyn != nil {
		rp, perr := parsePath(path)
		if perr != nil {
			return nil, perr
		}
		var u *unstructured.Unstructured
		if u, err = dyn.Resource(rp.gvr).Namespace(rp.namespace).Get(ctx, rp.name, metav1.GetOptions{}, rp.sub...); err == nil {
			raw, err = u.MarshalJSON()
		}
	} else {
		rc := cs.Discovery().RESTClient()
		if rc == nil {
			return nil, fmt.Errorf("get %s: this client has no REST interface for custom resources", t)
		}
		raw, err = rc.Get().AbsPath(path).Do(ctx).Raw()
		if err != nil {
			err = statusOf(raw, err)
		}
	}
	if err != nil {
		if apierrors.IsForbidden(err) {
			// Not allowed to look is not "not there": say which rule.
			return nil, fmt.Errorf("get %s: %w; grant get and patch on %s (deploy/workloads-role.yaml)", t, err, resourceOf(path))
		}
		var st apierrors.APIStatus
		if apierrors.IsNotFound(err) && errors.As(err, &st) && (st.Status().Details == nil || st.Status().Details.Name == "") {
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
	var err error
	if dyn := dynamicOf(cs); dyn != nil {
		rp, perr := parsePath(path)
		if perr != nil {
			return perr
		}
		_, err = dyn.Resource(rp.gvr).Namespace(rp.namespace).Patch(ctx, rp.name, pt, data, o, rp.sub...)
	} else {
		req := cs.Discovery().RESTClient().Patch(pt).AbsPath(path).Body(data)
		if o.FieldManager != "" {
			req = req.Param("fieldManager", o.FieldManager)
		}
		for _, d := range o.DryRun {
			req = req.Param("dryRun", d)
		}
		var raw []byte
		if raw, err = req.DoRaw(ctx); err != nil {
			err = statusOf(raw, err)
		}
	}
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
