package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// --- Gateway API HTTPRoute -----------------------------------------------

// httpRouteAPI reads and patches gateway.networking.k8s.io/v1 HTTPRoutes
// through the API server's REST interface (the CRD's fields as the
// Gateway API documents them).
type httpRouteAPI struct{}

type httpRoute struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Rules []struct {
			Name        string `json:"name,omitempty"`
			BackendRefs []struct {
				Group     *string `json:"group,omitempty"`
				Kind      *string `json:"kind,omitempty"`
				Name      string  `json:"name"`
				Namespace *string `json:"namespace,omitempty"`
				Weight    *int64  `json:"weight,omitempty"`
			} `json:"backendRefs,omitempty"`
		} `json:"rules,omitempty"`
	} `json:"spec"`
	Status struct {
		Parents []struct {
			ParentRef struct {
				Name string `json:"name"`
			} `json:"parentRef"`
			ControllerName string             `json:"controllerName"`
			Conditions     []metav1.Condition `json:"conditions,omitempty"`
		} `json:"parents,omitempty"`
	} `json:"status"`
}

func httpRoutePath(ns, name string) string {
	return "/apis/gateway.networking.k8s.io/v1/namespaces/" + ns + "/httproutes/" + name
}

func (httpRouteAPI) get(ctx context.Context, cs kubernetes.Interface, t Target) (*Route, error) {
	hr, err := getCustom[httpRoute](ctx, cs, httpRoutePath(t.Namespace, t.Name), t, "the Gateway API CRDs (httproutes.gateway.networking.k8s.io/v1)")
	if err != nil {
		return nil, err
	}
	r := &Route{Kind: KindHTTPRoute, Name: hr.Metadata.Name, ResourceVersion: hr.Metadata.ResourceVersion,
		Generation: hr.Metadata.Generation, Annotations: hr.Metadata.Annotations}
	for i, rule := range hr.Spec.Rules {
		g := BackendGroup{Name: "rule " + strconv.Itoa(i), index: i}
		if rule.Name != "" {
			g.Name += " (" + rule.Name + ")"
		}
		for _, ref := range rule.BackendRefs {
			b := Backend{Service: ref.Name, Weight: 1}
			if ref.Weight != nil {
				b.Weight = *ref.Weight
			}
			switch {
			case ref.Kind != nil && *ref.Kind != "Service" || ref.Group != nil && *ref.Group != "":
				b.Other = fmt.Sprintf("%s %s", strings.TrimPrefix(deref(ref.Group)+"/"+deref(ref.Kind), "/"), ref.Name)
			case ref.Namespace != nil && *ref.Namespace != t.Namespace:
				b.Other = fmt.Sprintf("service/%s in namespace %s", ref.Name, *ref.Namespace)
			}
			g.Backends = append(g.Backends, b)
		}
		if len(g.Backends) > 0 {
			r.Groups = append(r.Groups, g)
		}
	}
	gen := hr.Metadata.Generation
	parents := hr.Status.Parents
	if len(parents) > 0 {
		r.Accepted = func() (bool, string) {
			for _, p := range parents {
				for _, typ := range []string{"Accepted", "ResolvedRefs"} {
					c := meta(p.Conditions, typ)
					switch {
					case c == nil:
						return false, fmt.Sprintf("%s has not reported %s", p.ControllerName, typ)
					case c.ObservedGeneration < gen:
						return false, fmt.Sprintf("%s has not observed generation %d yet", p.ControllerName, gen)
					case c.Status != metav1.ConditionTrue:
						return false, fmt.Sprintf("%s: %s is %s (%s: %s)", p.ControllerName, typ, c.Status, c.Reason, c.Message)
					}
				}
			}
			return true, ""
		}
	}
	return r, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func meta(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// switchPatch is guarded by the route's generation: a Gateway controller
// rewrites the status (and so the resourceVersion) at any time.
func (httpRouteAPI) switchPatch(r *Route, weights [][]int64, switches string) (types.PatchType, []byte, error) {
	ops := []map[string]any{{"op": "test", "path": "/metadata/generation", "value": r.Generation}}
	for gi, g := range r.Groups {
		for bi := range g.Backends {
			ops = append(ops, map[string]any{"op": "add", "path": fmt.Sprintf("/spec/rules/%d/backendRefs/%d/weight", g.index, bi), "value": weights[gi][bi]})
		}
	}
	ops = append(ops, annotationOps(r.Annotations, map[string]string{SwitchesAnnotation: switches})...)
	b, err := json.Marshal(ops)
	return types.JSONPatchType, b, err
}

func (httpRouteAPI) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	return patchResource(ctx, cs, httpRoutePath(t.Namespace, t.Name), pt, data, o)
}
