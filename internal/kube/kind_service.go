package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Blue/green: a Service fronts two (or more) colour Deployments that share
// the Service's labels but one, the colour label. Rolling back switches the
// Service's selector to a standby colour, after checking that the
// standby's pods are Ready and run its template; the abandoned colour
// keeps running, marked bad, for inspection. In the history each colour is
// a "revision": the active one is current, the others are numbered by when
// they were last active (from the switches recorded on the Service), so
// PlanUndo's rules apply unchanged: the most recently active standby not
// marked bad is the target, and a colour marked bad is never switched to.

// ColorLabels are the labels tried, in order, as the colour label when the
// service does not name one.
var ColorLabels = []string{"color", "colour", "version", "slot"}

// SwitchesAnnotation on the Service records its switches, newest last.
const SwitchesAnnotation = annotationPrefix + "switches"

// ErrStandbyNotReady: the colour to switch to cannot take the traffic.
var ErrStandbyNotReady = errors.New("standby colour is not ready to take the traffic")

// ErrNotBlueGreen: the Service's selector has no colour label with a
// second colour to switch to.
var ErrNotBlueGreen = errors.New("not a blue/green service")

// Switch is one recorded switch of a Service's colour.
type Switch struct {
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

type serviceKind struct{}

// colorLabel is the Service's colour label: the configured one (the
// Target's ColorLabel), else the first of ColorLabels its selector has.
func colorLabel(t Target, svc *corev1.Service) (string, error) {
	if t.ColorLabel != "" {
		if _, ok := svc.Spec.Selector[t.ColorLabel]; !ok {
			return "", fmt.Errorf("%w: service/%s's selector has no %q label (selector %v)", ErrNotBlueGreen, svc.Name, t.ColorLabel, svc.Spec.Selector)
		}
		return t.ColorLabel, nil
	}
	for _, l := range ColorLabels {
		if _, ok := svc.Spec.Selector[l]; ok {
			return l, nil
		}
	}
	return "", fmt.Errorf("%w: service/%s's selector %v has none of the colour labels %v; name it (kubernetes.colorLabel in rollback.yaml)", ErrNotBlueGreen, svc.Name, svc.Spec.Selector, ColorLabels)
}

// switchesOf reads the switches recorded in an object's annotations.
func switchesOf(ann map[string]string) []Switch {
	var out []Switch
	_ = json.Unmarshal([]byte(ann[SwitchesAnnotation]), &out)
	return out
}

func (serviceKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	svc, err := cs.CoreV1().Services(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return nil, notFound(t, err)
	}
	label, err := colorLabel(t, svc)
	if err != nil {
		return nil, err
	}
	t.ColorLabel = label
	active := svc.Spec.Selector[label]
	rest := map[string]string{}
	for k, v := range svc.Spec.Selector {
		if k != label {
			rest[k] = v
		}
	}
	// The colours are the Deployments whose pod template carries the
	// selector's other labels (the Deployments' own labels may differ).
	deps, err := cs.AppsV1().Deployments(t.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list the colours of %s: %w", t, err)
	}
	h := &History{Target: t, Service: svc, ResourceVersion: svc.ResourceVersion,
		Selector: &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}}
	colours := map[string]bool{}
	for i := range deps.Items {
		d := &deps.Items[i]
		colour := d.Spec.Template.Labels[label]
		if colour == "" || colours[colour] || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(withLabel(d.Spec.Template.Labels, label, active))) {
			continue
		}
		colours[colour] = true
		r := colourRevision(d, colour, colour == active)
		r.selector = labels.SelectorFromSet(withLabel(svc.Spec.Selector, label, colour))
		if r.Current {
			h.Template = d.Spec.Template
		}
		h.Revisions = append(h.Revisions, r)
	}
	numberColours(h, switchesOf(svc.Annotations))
	if len(h.Revisions) < 2 {
		return nil, fmt.Errorf("%w: service/%s selects %s=%s, and no other colour of it runs (Deployments with the selector's other labels %v and another %s)",
			ErrNotBlueGreen, t.Name, label, active, rest, label)
	}
	return h, nil
}

func withLabel(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for a, b := range m {
		out[a] = b
	}
	out[k] = v
	return out
}

// undoPatch switches the selector's colour, guarded by the Service's
// resourceVersion, and records the switch.
func (serviceKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	from := h.Service.Spec.Selector[h.Target.ColorLabel]
	sw, err := switchesJSON(h.Service.Annotations, from, to.Colour)
	if err != nil {
		return "", nil, err
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": h.ResourceVersion, "annotations": map[string]string{SwitchesAnnotation: sw}},
		"spec":     map[string]any{"selector": map[string]string{h.Target.ColorLabel: to.Colour}},
	})
	return types.MergePatchType, patch, err
}

func (serviceKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	_, err := cs.CoreV1().Services(t.Namespace).Patch(ctx, t.Name, pt, data, o)
	return err
}

// status is unused for a Service: its rollout is its EndpointSlices (see
// WaitSwitched).
func (serviceKind) status(runtime.Object) (string, bool, error) { return "", true, nil }

func (serviceKind) listWatch(cs kubernetes.Interface, t Target) *cache.ListWatch {
	c := cs.DiscoveryV1().EndpointSlices(t.Namespace)
	sel := discoveryv1.LabelServiceName + "=" + t.Name
	return listWatch(func(o *metav1.ListOptions) { o.LabelSelector = sel }, c.List, c.Watch)
}

func (serviceKind) markPatch(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	_, err := cs.AppsV1().Deployments(ns).Patch(ctx, object, types.MergePatchType, data, metav1.PatchOptions{FieldManager: "rollback"})
	return err
}

// colourPods are the pods of one colour.
func colourPods(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision) ([]corev1.Pod, error) {
	if to.selector == nil {
		return nil, fmt.Errorf("%s: %s is not a colour", h.Target.Ref(), to.Object)
	}
	pods, err := cs.CoreV1().Pods(h.Target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: to.selector.String()})
	if err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// CheckStandby: the colour to switch to has as many Ready pods as its
// Deployment wants, all running its template's images.
func CheckStandby(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision) error {
	if h.LB != nil {
		return checkLBStandby(ctx, h, to)
	}
	pods, err := colourPods(ctx, cs, h, to)
	if err != nil {
		return err
	}
	want := strings.Join(to.Images, ",")
	ready := 0
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if got := strings.Join(images(&corev1.PodTemplateSpec{Spec: p.Spec}), ","); got != want {
			return fmt.Errorf("%w: %s pod %s runs %s, want %s", ErrStandbyNotReady, to.Colour, p.Name, got, want)
		}
		if PodReady(&p) {
			ready++
		}
	}
	desired := int32(1)
	if to.deployment != nil && to.deployment.Spec.Replicas != nil {
		desired = *to.deployment.Spec.Replicas
	}
	if ready == 0 || int32(ready) < desired {
		return fmt.Errorf("%w: %s (deployment/%s) has %d Ready pod(s), wants %d; scale it up first ('kubectl scale deployment/%s --replicas=%d -n %s')",
			ErrStandbyNotReady, to.Colour, to.Object, ready, desired, to.Object, desired, h.Target.Namespace)
	}
	return nil
}

// WaitSwitched waits until the traffic is on the colour to: a Service's
// EndpointSlices hold only its pods (at least one), a route's weights are
// all on it and its Service has its ready endpoints.
func WaitSwitched(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, progress func(string)) error {
	if h.Route != nil {
		return waitRouted(ctx, cs, h, to, progress)
	}
	colour := to.Colour
	pods, err := colourPods(ctx, cs, h, to)
	if err != nil {
		return err
	}
	ofColour := map[string]bool{}
	for _, p := range pods {
		ofColour[p.Name] = true
	}
	slices := map[string]*discoveryv1.EndpointSlice{}
	lastMsg := ""
	check := func() (bool, string) {
		on, off := 0, 0
		for _, s := range slices {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && ofColour[ep.TargetRef.Name] {
					on++
				} else {
					off++
				}
			}
		}
		return on > 0 && off == 0, fmt.Sprintf("endpoints: %d on %s, %d on other colours", on, colour, off)
	}
	lw := serviceKind{}.listWatch(cs, h.Target)
	_, err = watchUntil(ctx, lw, &discoveryv1.EndpointSlice{}, func(e watch.Event) (bool, error) {
		s, ok := e.Object.(*discoveryv1.EndpointSlice)
		if !ok {
			return false, nil
		}
		if e.Type == watch.Deleted {
			delete(slices, s.Name)
		} else {
			slices[s.Name] = s
		}
		done, msg := check()
		if msg != lastMsg && progress != nil {
			progress(msg)
			lastMsg = msg
		}
		return done, nil
	})
	if err != nil {
		return fmt.Errorf("%w of %s to %s (last: %s)", ErrTimeout, h.Target.Ref(), colour, lastMsg)
	}
	return nil
}

// settle: the traffic has moved when the Service's EndpointSlices hold
// only the standby's pods.
func (serviceKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	if err := WaitSwitched(ctx, s.cs, s.h, s.to, s.say); err != nil {
		return "", err
	}
	out.revision = int64(len(s.h.Revisions))
	return fmt.Sprintf("%s: every endpoint on %s", s.h.Target.Ref(), s.to.Colour), nil
}

func (serviceKind) traits() traits { return traits{} }

// prepare: the standby must be able to take the traffic before the
// selector moves.
func (serviceKind) prepare(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, _ DryRun) error {
	return CheckStandby(ctx, cs, h, to)
}
