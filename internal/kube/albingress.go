package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// --- AWS Load Balancer Controller Ingress ---------------------------------

// ALBActionPrefix starts the annotation keys of an Ingress's custom
// actions (alb.ingress.kubernetes.io/actions.NAME: a JSON action; a
// forward action's forwardConfig.targetGroups are weighted).
const ALBActionPrefix = "alb.ingress.kubernetes.io/actions."

type albIngressAPI struct{}

// albAction is the part of an action rollback reads (JSON field names
// match case-insensitively, so the controller's older ServiceName/Weight
// spelling reads too).
type albAction struct {
	Type          string `json:"type"`
	ForwardConfig *struct {
		TargetGroups []struct {
			ServiceName    string          `json:"serviceName"`
			ServicePort    json.RawMessage `json:"servicePort"`
			TargetGroupARN string          `json:"targetGroupARN"`
			Weight         *int64          `json:"weight"`
		} `json:"targetGroups"`
	} `json:"forwardConfig"`
}

func (albIngressAPI) get(ctx context.Context, cs kubernetes.Interface, t Target) (*Route, error) {
	ing, err := cs.NetworkingV1().Ingresses(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return nil, notFound(t, err)
	}
	r := &Route{Kind: KindIngress, Name: ing.Name, ResourceVersion: ing.ResourceVersion, Generation: ing.Generation, Annotations: ing.Annotations}
	keys := make([]string, 0, len(ing.Annotations))
	for k := range ing.Annotations {
		if strings.HasPrefix(k, ALBActionPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		var a albAction
		if err := json.Unmarshal([]byte(ing.Annotations[k]), &a); err != nil {
			return nil, fmt.Errorf("%s: annotation %s is not a JSON action: %v", t, k, err)
		}
		if !strings.EqualFold(a.Type, "forward") || a.ForwardConfig == nil || len(a.ForwardConfig.TargetGroups) == 0 {
			continue
		}
		g := BackendGroup{Name: "action " + strings.TrimPrefix(k, ALBActionPrefix), key: k}
		for _, tg := range a.ForwardConfig.TargetGroups {
			b := Backend{Service: tg.ServiceName, Weight: 1}
			if tg.Weight != nil {
				b.Weight = *tg.Weight
			}
			if tg.ServiceName == "" {
				b.Other = "target group " + tg.TargetGroupARN + " (by ARN; switch it with kind alb-listener)"
			}
			g.Backends = append(g.Backends, b)
		}
		r.Groups = append(r.Groups, g)
	}
	if len(r.Groups) == 0 {
		return nil, fmt.Errorf("%w: %s has no forward action with target groups (annotation %sNAME)", ErrNotBlueGreen, t.Ref(), ALBActionPrefix)
	}
	return r, nil
}

// switchPatch rewrites each action's weights in its JSON, keeping every
// other field of the action as it was.
func (albIngressAPI) switchPatch(r *Route, weights [][]int64, switches string) (types.PatchType, []byte, error) {
	set := map[string]string{SwitchesAnnotation: switches}
	for gi, g := range r.Groups {
		key := g.key
		var a map[string]any
		if err := json.Unmarshal([]byte(r.Annotations[key]), &a); err != nil {
			return "", nil, err
		}
		fc, _ := field(a, "forwardConfig").(map[string]any)
		tgs, _ := field(fc, "targetGroups").([]any)
		if len(tgs) != len(g.Backends) {
			return "", nil, fmt.Errorf("%s changed while it was read", key)
		}
		for bi, tg := range tgs {
			m, _ := tg.(map[string]any)
			k := "weight"
			for name := range m {
				if strings.EqualFold(name, "weight") {
					k = name
				}
			}
			m[k] = weights[gi][bi]
		}
		b, err := json.Marshal(a)
		if err != nil {
			return "", nil, err
		}
		set[key] = string(b)
	}
	ops := append([]map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": r.ResourceVersion}}, annotationOps(r.Annotations, set)...)
	b, err := json.Marshal(ops)
	return types.JSONPatchType, b, err
}

// field is m's value under key, matched case-insensitively.
func field(m map[string]any, key string) any {
	if v, ok := m[key]; ok {
		return v
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

func (albIngressAPI) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	_, err := cs.NetworkingV1().Ingresses(t.Namespace).Patch(ctx, t.Name, pt, data, o)
	return err
}
