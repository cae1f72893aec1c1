package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func colourDeployment(colour, img string, created time.Time) *appsv1.Deployment {
	l := map[string]string{"app": "web", "color": colour}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + colour, Namespace: "ns", CreationTimestamp: metav1.NewTime(created)},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: img}}}}},
	}
}

func colourPod(name, colour, img string, ready bool) *corev1.Pod {
	p := pod(name, "", img, ready)
	p.Labels = map[string]string{"app": "web", "color": colour}
	return p
}

func blueGreen(blueReady bool) *fake.Clientset {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", ResourceVersion: "9"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "color": "green"}}}
	other := colourDeployment("red", "r/other:v9", t0) // another app's colour
	other.Spec.Template.Labels["app"] = "other"
	return fake.NewClientset(svc, colourDeployment("blue", "r/web:v1", t0), colourDeployment("green", "r/web:v2", t0.Add(time.Hour)), other,
		colourPod("web-blue-1", "blue", "r/web:v1", blueReady), colourPod("web-blue-2", "blue", "r/web:v1", true),
		colourPod("web-green-1", "green", "r/web:v2", true))
}

// A blue/green Service's history is its colours; the rollback switches the
// selector to the standby only when its pods can take the traffic, and
// records the switch.
func TestBlueGreenPlanAndSwitch(t *testing.T) {
	ctx := context.Background()
	tgt := Target{Namespace: "ns", Name: "web", Kind: KindService}
	cs := blueGreen(false)
	h, err := GetHistory(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Revisions) != 2 || h.Current().Colour != "green" || h.Target.ColorLabel != "color" {
		t.Fatalf("colours %+v", h.Revisions)
	}
	p, err := PlanUndo(h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.To.Colour != "blue" || p.Summary() != "service/web: green (r/web:v2) -> blue (r/web:v1)" {
		t.Fatalf("plan %s", p.Summary())
	}
	// One blue pod is not Ready: the switch is refused, nothing changes.
	if err := Undo(ctx, cs, h, p, DryRunNone); !errors.Is(err, ErrStandbyNotReady) || !strings.Contains(err.Error(), "1 Ready pod(s), wants 2") {
		t.Fatalf("got %v, want ErrStandbyNotReady", err)
	}
	if svc, _ := cs.CoreV1().Services("ns").Get(ctx, "web", metav1.GetOptions{}); svc.Spec.Selector["color"] != "green" {
		t.Fatal("the selector moved to a standby that is not ready")
	}
	cs = blueGreen(true)
	h, _ = GetHistory(ctx, cs, tgt)
	p, _ = PlanUndo(h, 0)
	if err := Undo(ctx, cs, h, p, DryRunNone); err != nil {
		t.Fatal(err)
	}
	svc, _ := cs.CoreV1().Services("ns").Get(ctx, "web", metav1.GetOptions{})
	if svc.Spec.Selector["color"] != "blue" || svc.Spec.Selector["app"] != "web" || !strings.Contains(svc.Annotations[SwitchesAnnotation], `"from":"green","to":"blue"`) {
		t.Fatalf("service after the switch: %v %v", svc.Spec.Selector, svc.Annotations)
	}
	// Green marked bad: a second rollback has nowhere to go.
	if err := Mark(ctx, cs, tgt, "web-green", Bad, "broken", time.Now()); err != nil {
		t.Fatal(err)
	}
	h, _ = GetHistory(ctx, cs, tgt)
	if h.Current().Colour != "blue" || h.FindObject("web-green").Health != Bad {
		t.Fatalf("after the switch: %+v", h.Revisions)
	}
	if _, err := PlanUndo(h, 0); !errors.Is(err, ErrNoTarget) {
		t.Errorf("a second rollback: %v, want ErrNoTarget (green is bad)", err)
	}
}

func TestBlueGreenNeedsTwoColours(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
	if _, err := GetHistory(context.Background(), fake.NewClientset(svc), Target{Namespace: "ns", Name: "web", Kind: KindService}); !errors.Is(err, ErrNotBlueGreen) {
		t.Errorf("no colour label: %v", err)
	}
	svc.Spec.Selector["color"] = "green"
	cs := fake.NewClientset(svc, colourDeployment("green", "r/web:v2", time.Now()))
	if _, err := GetHistory(context.Background(), cs, Target{Namespace: "ns", Name: "web", Kind: KindService}); !errors.Is(err, ErrNotBlueGreen) {
		t.Errorf("one colour: %v", err)
	}
}

// The switch is done when the Service's EndpointSlices hold only the
// standby's pods.
func TestWaitSwitched(t *testing.T) {
	ctx := context.Background()
	slice := func(pods ...string) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}}
		for _, p := range pods {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: p}})
		}
		return s
	}
	for _, tc := range []struct {
		name string
		pods []string
		done bool
	}{{"only blue", []string{"web-blue-1", "web-blue-2"}, true}, {"green still there", []string{"web-blue-1", "web-green-1"}, false}, {"none", nil, false}} {
		cs := blueGreen(true)
		if _, err := cs.DiscoveryV1().EndpointSlices("ns").Create(ctx, slice(tc.pods...), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		h, err := GetHistory(ctx, cs, Target{Namespace: "ns", Name: "web", Kind: KindService})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		var blue *Revision
		for i := range h.Revisions {
			if h.Revisions[i].Colour == "blue" {
				blue = &h.Revisions[i]
			}
		}
		err = WaitSwitched(wctx, cs, h, blue, nil)
		cancel()
		if (err == nil) != tc.done {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
