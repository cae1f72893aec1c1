package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Weighted blue/green: a route splits traffic between backend Services by
// weight (a Gateway API HTTPRoute's rules, an AWS Load Balancer Controller
// Ingress's forward actions). Each backend Service is a colour, backed by
// the Deployment whose pod template its selector matches. The active
// colour is the one with the most weight; rolling back gives all of each
// group's weight to the standby colour and none to the others, after the
// same standby check as a Service's selector switch, with the switch
// recorded on the route so a second rollback does not switch back to the
// abandoned colour.

// Route is a weighted route as rollback reads it.
type Route struct {
	Kind            Kind
	Name            string
	ResourceVersion string
	Generation      int64
	Annotations     map[string]string
	Groups          []BackendGroup
	// Accepted reports whether the controller serving the route has
	// accepted its current generation ("" when no controller reports a
	// status; a Gateway API route's status.parents).
	Accepted func() (ok bool, msg string)
}

// BackendGroup is one rule (HTTPRoute) or forward action (Ingress): its
// traffic is split between its backends.
type BackendGroup struct {
	Name     string
	Backends []Backend
	index    int    // the rule's index (HTTPRoute)
	key      string // the action's annotation (Ingress)
}

// Backend is one weighted backend of a group.
type Backend struct {
	Service string
	// Other is set when the backend is not a Service rollback can check
	// (a target group by ARN, another namespace, another kind): why.
	Other  string
	Weight int64
}

// routeAPI is what differs between route kinds.
type routeAPI interface {
	get(ctx context.Context, cs kubernetes.Interface, t Target) (*Route, error)
	// switchPatch sets the weights (group index, backend index) and the
	// switches annotation, guarded by the route's resourceVersion.
	switchPatch(r *Route, weights [][]int64, switches string) (types.PatchType, []byte, error)
	patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error
}

type routeKind struct{ api routeAPI }

func (k routeKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	r, err := k.api.get(ctx, cs, t)
	if err != nil {
		return nil, err
	}
	total := map[string]int64{}
	var order []string
	for _, g := range r.Groups {
		for _, b := range g.Backends {
			if b.Other != "" {
				return nil, fmt.Errorf("%w: %s's %s has a backend rollback cannot check (%s); only Services in namespace %s are switched",
					ErrNotBlueGreen, t.Ref(), g.Name, b.Other, t.Namespace)
			}
			if _, ok := total[b.Service]; !ok {
				order = append(order, b.Service)
			}
			total[b.Service] += b.Weight
		}
	}
	if len(order) < 2 {
		return nil, fmt.Errorf("%w: %s has %d backend Service(s) %v; a switch needs two colours (e.g. NAME-blue and NAME-green)", ErrNotBlueGreen, t.Ref(), len(order), order)
	}
	active := order[0]
	for _, s := range order {
		if total[s] > total[active] {
			active = s
		}
	}
	if total[active] == 0 {
		return nil, fmt.Errorf("%w: %s sends no traffic to any backend (every weight is 0)", ErrNotBlueGreen, t.Ref())
	}
	deps, err := cs.AppsV1().Deployments(t.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list the colours of %s: %w", t, err)
	}
	h := &History{Target: t, Route: r, ResourceVersion: r.ResourceVersion}
	for _, name := range order {
		svc, err := cs.CoreV1().Services(t.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("%w: %s's backend service/%s does not exist in namespace %s", ErrNotBlueGreen, t.Ref(), name, t.Namespace)
			}
			return nil, fmt.Errorf("get backend service/%s of %s: %w", name, t, err)
		}
		if len(svc.Spec.Selector) == 0 {
			return nil, fmt.Errorf("%w: %s's backend service/%s has no selector, so its pods cannot be checked", ErrNotBlueGreen, t.Ref(), name)
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		d := backingDeployment(deps.Items, sel)
		if d == nil {
			return nil, fmt.Errorf("%w: no Deployment in namespace %s has pods service/%s selects (%s)", ErrNotBlueGreen, t.Namespace, name, sel)
		}
		rev := colourRevision(d, name, name == active)
		rev.selector = sel
		if rev.Current {
			h.Template = d.Spec.Template
			h.Selector = &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}
		}
		h.Revisions = append(h.Revisions, rev)
	}
	numberColours(h, switchesOf(r.Annotations))
	return h, nil
}

// backingDeployment is the Deployment (by name, first) whose pod template
// sel matches.
func backingDeployment(deps []appsv1.Deployment, sel labels.Selector) *appsv1.Deployment {
	var out *appsv1.Deployment
	for i := range deps {
		d := &deps[i]
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) && (out == nil || d.Name < out.Name) {
			out = d
		}
	}
	return out
}

// colourRevision is a blue/green colour's revision: its Deployment.
func colourRevision(d *appsv1.Deployment, colour string, active bool) Revision {
	r := Revision{Object: d.Name, Colour: colour, Images: images(&d.Spec.Template), ChangeCause: d.Annotations[ChangeCauseAnnotation],
		Created: d.CreationTimestamp.Time, Replicas: d.Status.Replicas, Ready: d.Status.ReadyReplicas,
		Health: Unknown, HealthReason: d.Annotations[HealthReasonAnnotation], Current: active,
		template: d.Spec.Template, deployment: d}
	if hv, err := ParseHealth(d.Annotations[HealthAnnotation]); err == nil {
		r.Health = hv
	}
	return r
}

// numberColours orders the colours as revisions: never active first (by
// creation), then by when they were last active; the active colour last.
func numberColours(h *History, switches []Switch) {
	lastActive := map[string]int{}
	for i, s := range switches {
		lastActive[s.From] = i + 1
	}
	sort.SliceStable(h.Revisions, func(i, j int) bool {
		a, b := h.Revisions[i], h.Revisions[j]
		if a.Current != b.Current {
			return b.Current
		}
		if lastActive[a.Colour] != lastActive[b.Colour] {
			return lastActive[a.Colour] < lastActive[b.Colour]
		}
		return a.Created.Before(b.Created)
	})
	for i := range h.Revisions {
		h.Revisions[i].Number = int64(i + 1)
	}
}

// switchesJSON appends a switch to the recorded ones (the last 20 kept).
func switchesJSON(ann map[string]string, from, to string) (string, error) {
	sw := append(switchesOf(ann), Switch{From: from, To: to, At: time.Now().UTC()})
	if len(sw) > 20 {
		sw = sw[len(sw)-20:]
	}
	b, err := json.Marshal(sw)
	return string(b), err
}

// switchWeights gives each group's weight to the colour to: every group
// that has it sends it all of its weight (at least 1), the others 0. A
// group that sends traffic to another colour but has no backend of to
// cannot be switched: the rollback is refused rather than left half done.
func switchWeights(r *Route, to string) ([][]int64, error) {
	out := make([][]int64, len(r.Groups))
	for i, g := range r.Groups {
		var sum int64
		has := false
		for _, b := range g.Backends {
			sum += b.Weight
			has = has || b.Service == to
		}
		out[i] = make([]int64, len(g.Backends))
		if !has {
			for j, b := range g.Backends {
				out[i][j] = b.Weight
			}
			if sum > 0 {
				return nil, fmt.Errorf("%w: %s sends traffic to %s but has no backend %s; add it (weight 0) so the whole route can switch", ErrNotBlueGreen, g.Name, g.Backends[0].Service, to)
			}
			continue
		}
		if sum < 1 {
			sum = 1
		}
		for j, b := range g.Backends {
			if b.Service == to {
				out[i][j] = sum
				sum = 0 // a colour listed twice gets it once
			}
		}
	}
	return out, nil
}

func (k routeKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	w, err := switchWeights(h.Route, to.Colour)
	if err != nil {
		return "", nil, err
	}
	from := ""
	if c := h.Current(); c != nil {
		from = c.Colour
	}
	sw, err := switchesJSON(h.Route.Annotations, from, to.Colour)
	if err != nil {
		return "", nil, err
	}
	return k.api.switchPatch(h.Route, w, sw)
}

func (k routeKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	return k.api.patch(ctx, cs, t, pt, data, o)
}

// status is unused for a route (see waitRouted).
func (routeKind) status(runtime.Object) (string, bool, error) { return "", true, nil }

// listWatch: a route's switch is polled (waitRouted), never watched.
func (routeKind) listWatch(kubernetes.Interface, Target) *cache.ListWatch { return nil }

func (routeKind) markPatch(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	return serviceKind{}.markPatch(ctx, cs, ns, object, data)
}

// jsonPointer escapes a JSON Pointer token (RFC 6901).
func jsonPointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// annotationOps are JSON Patch operations that set annotations, creating
// metadata.annotations when the object has none.
func annotationOps(have map[string]string, set map[string]string) []map[string]any {
	if have == nil {
		return []map[string]any{{"op": "add", "path": "/metadata/annotations", "value": set}}
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ops []map[string]any
	for _, k := range keys {
		ops = append(ops, map[string]any{"op": "add", "path": "/metadata/annotations/" + jsonPointer(k), "value": set[k]})
	}
	return ops
}

// waitRouted polls the route until every group that has the colour sends
// it all its traffic, the route's controller (if one reports) has
// accepted it, and the colour's Service has as many ready endpoints as
// its Deployment wants.
func waitRouted(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, progress func(string)) error {
	api := kindOf(h.Target).(routeKind).api
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		done, msg, err := routed(ctx, cs, api, h, to)
		if err != nil {
			return err
		}
		if msg != last && progress != nil {
			progress(msg)
			last = msg
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w of %s to %s (last: %s)", ErrTimeout, h.Target.Ref(), to.Colour, last)
		case <-tick.C:
		}
	}
}

func routed(ctx context.Context, cs kubernetes.Interface, api routeAPI, h *History, to *Revision) (bool, string, error) {
	r, err := api.get(ctx, cs, h.Target)
	if err != nil {
		return false, "", err
	}
	var on, off int64
	for _, g := range r.Groups {
		for _, b := range g.Backends {
			if b.Service == to.Colour {
				on += b.Weight
			} else {
				off += b.Weight
			}
		}
	}
	if on == 0 || off > 0 {
		return false, fmt.Sprintf("weight: %d on %s, %d on other colours", on, to.Colour, off), nil
	}
	if r.Accepted != nil {
		if ok, msg := r.Accepted(); !ok {
			return false, "weights switched; " + msg, nil
		}
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(h.Target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + to.Colour})
	if err != nil {
		return false, "", fmt.Errorf("list endpointslices of service/%s: %w", to.Colour, err)
	}
	ready := 0
	for _, s := range slices.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready++
			}
		}
	}
	want := 1
	if to.deployment != nil && to.deployment.Spec.Replicas != nil {
		want = int(*to.deployment.Spec.Replicas)
	}
	msg := fmt.Sprintf("all weight on %s; service/%s has %d of %d ready endpoints", to.Colour, to.Colour, ready, want)
	return ready >= want && ready > 0, msg, nil
}

// settle: the traffic has moved when the route's weights are all on the
// standby.
func (routeKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	if err := WaitSwitched(ctx, s.cs, s.h, s.to, s.say); err != nil {
		return "", err
	}
	out.revision = int64(len(s.h.Revisions))
	return fmt.Sprintf("%s: all traffic on %s", s.h.Target.Ref(), s.to.Colour), nil
}

func (routeKind) traits() traits { return traits{} }

// prepare: the standby must be able to take the traffic before the
// weights move.
func (routeKind) prepare(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, _ DryRun) error {
	return CheckStandby(ctx, cs, h, to)
}
