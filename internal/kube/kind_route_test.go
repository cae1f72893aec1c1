package kube

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func colourService(colour string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-" + colour, Namespace: "ns"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "color": colour}}}
}

// An ALB Ingress whose forward action weighs web-green 100 and web-blue
// 0, written in the controller's older capitalised spelling, with a
// stickiness setting rollback must keep.
const albAction0 = `{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServiceName":"web-blue","ServicePort":"80","Weight":0},{"ServiceName":"web-green","ServicePort":80,"Weight":100}],"TargetGroupStickinessConfig":{"Enabled":true,"DurationSeconds":200}}}`

func albIngress(action string) *networkingv1.Ingress {
	return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", ResourceVersion: "4",
		Annotations: map[string]string{ALBActionPrefix + "blue-green": action, "alb.ingress.kubernetes.io/scheme": "internet-facing"}}}
}

func albCluster(action string) *fake.Clientset {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	return fake.NewClientset(albIngress(action), colourService("blue"), colourService("green"),
		colourDeployment("blue", "r/web:v1", t0), colourDeployment("green", "r/web:v2", t0.Add(time.Hour)),
		colourPod("web-blue-1", "blue", "r/web:v1", true), colourPod("web-blue-2", "blue", "r/web:v1", true),
		colourPod("web-green-1", "green", "r/web:v2", true))
}

// The ALB Ingress's colours are its action's target groups; the switch
// gives all the weight to the standby, keeps the action's other fields
// and spelling, and is recorded.
func TestALBIngressSwitch(t *testing.T) {
	ctx := context.Background()
	tgt := Target{Namespace: "ns", Name: "web", Kind: KindIngress}
	cs := albCluster(albAction0)
	h, err := GetHistory(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Revisions) != 2 || h.Current().Colour != "web-green" || h.Current().Object != "web-green" {
		t.Fatalf("colours %+v", h.Revisions)
	}
	p, err := PlanUndo(h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.To.Colour != "web-blue" {
		t.Fatalf("plan %s", p.Summary())
	}
	if err := Undo(ctx, cs, h, p, DryRunNone); err != nil {
		t.Fatal(err)
	}
	ing, _ := cs.NetworkingV1().Ingresses("ns").Get(ctx, "web", metav1.GetOptions{})
	var a map[string]any
	if err := json.Unmarshal([]byte(ing.Annotations[ALBActionPrefix+"blue-green"]), &a); err != nil {
		t.Fatal(err)
	}
	tgs := a["ForwardConfig"].(map[string]any)["TargetGroups"].([]any)
	if w := tgs[0].(map[string]any)["Weight"]; w != 100.0 {
		t.Errorf("web-blue weight %v, want 100", w)
	}
	if w := tgs[1].(map[string]any)["Weight"]; w != 0.0 {
		t.Errorf("web-green weight %v, want 0", w)
	}
	if a["ForwardConfig"].(map[string]any)["TargetGroupStickinessConfig"] == nil || ing.Annotations["alb.ingress.kubernetes.io/scheme"] != "internet-facing" {
		t.Errorf("other settings lost: %v", ing.Annotations)
	}
	if !strings.Contains(ing.Annotations[SwitchesAnnotation], `"from":"web-green","to":"web-blue"`) {
		t.Errorf("switch not recorded: %v", ing.Annotations)
	}
	h, _ = GetHistory(ctx, cs, tgt)
	if h.Current().Colour != "web-blue" {
		t.Errorf("after the switch the active colour is %s", h.Current().Colour)
	}
	// Green marked bad: nowhere to go back to.
	if err := Mark(ctx, cs, tgt, "web-green", Bad, "broken", time.Now()); err != nil {
		t.Fatal(err)
	}
	h, _ = GetHistory(ctx, cs, tgt)
	if _, err := PlanUndo(h, 0); !errors.Is(err, ErrNoTarget) {
		t.Errorf("second rollback: %v", err)
	}
}

// A standby that is not ready, an ARN target group and a route with one
// colour are refused before anything changes.
func TestALBIngressRefusals(t *testing.T) {
	ctx := context.Background()
	tgt := Target{Namespace: "ns", Name: "web", Kind: KindIngress}
	cs := albCluster(albAction0)
	_ = cs.CoreV1().Pods("ns").Delete(ctx, "web-blue-2", metav1.DeleteOptions{})
	h, err := GetHistory(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := PlanUndo(h, 0)
	if err := Undo(ctx, cs, h, p, DryRunNone); !errors.Is(err, ErrStandbyNotReady) {
		t.Errorf("standby with 1 of 2 pods: %v", err)
	}
	if ing, _ := cs.NetworkingV1().Ingresses("ns").Get(ctx, "web", metav1.GetOptions{}); ing.Annotations[ALBActionPrefix+"blue-green"] != albAction0 {
		t.Error("the action changed although the switch was refused")
	}
	for name, action := range map[string]string{
		"arn":        `{"type":"forward","forwardConfig":{"targetGroups":[{"targetGroupARN":"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/b/1","weight":0},{"serviceName":"web-green","servicePort":"80","weight":100}]}}`,
		"one colour": `{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"web-green","servicePort":"80"}]}}`,
		"not json":   `{"type":"forward",`,
		"no forward": `{"type":"fixed-response","fixedResponseConfig":{"statusCode":"503"}}`,
	} {
		if _, err := GetHistory(ctx, albCluster(action), tgt); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// Every group with the standby gets all its weight; a group that sends
// traffic elsewhere without a standby backend refuses the switch.
func TestSwitchWeights(t *testing.T) {
	r := &Route{Groups: []BackendGroup{
		{Name: "rule 0", Backends: []Backend{{Service: "a", Weight: 90}, {Service: "b", Weight: 10}}},
		{Name: "rule 1", Backends: []Backend{{Service: "a", Weight: 0}, {Service: "b", Weight: 0}}},
		{Name: "rule 2", Backends: []Backend{{Service: "static", Weight: 0}}},
	}}
	w, err := switchWeights(r, "b")
	if err != nil {
		t.Fatal(err)
	}
	if got := [][]int64{{0, 100}, {0, 1}, {0}}; !equal2(w, got) {
		t.Errorf("weights %v, want %v", w, got)
	}
	r.Groups = append(r.Groups, BackendGroup{Name: "rule 3", Backends: []Backend{{Service: "a", Weight: 1}}})
	if _, err := switchWeights(r, "b"); !errors.Is(err, ErrNotBlueGreen) || !strings.Contains(err.Error(), "rule 3") {
		t.Errorf("rule 3 without b: %v", err)
	}
}

func equal2(a, b [][]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}

// The HTTPRoute patch sets each rule's weights by the rule's index, tests
// the generation and creates the annotations when there are none.
func TestHTTPRouteSwitchPatch(t *testing.T) {
	r := &Route{ResourceVersion: "7", Generation: 7, Groups: []BackendGroup{
		{index: 1, Backends: []Backend{{Service: "a"}, {Service: "b"}}},
	}}
	_, b, err := httpRouteAPI{}.switchPatch(r, [][]int64{{0, 5}}, `[]`)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"test","path":"/metadata/generation","value":7},{"op":"add","path":"/spec/rules/1/backendRefs/0/weight","value":0},{"op":"add","path":"/spec/rules/1/backendRefs/1/weight","value":5},{"op":"add","path":"/metadata/annotations","value":{"rollback/switches":"[]"}}]`
	if string(b) != want {
		t.Errorf("patch\n%s\nwant\n%s", b, want)
	}
	r.Annotations = map[string]string{"x": "y"}
	_, b, _ = httpRouteAPI{}.switchPatch(r, [][]int64{{0, 5}}, `[]`)
	if !strings.Contains(string(b), `"path":"/metadata/annotations/rollback~1switches"`) {
		t.Errorf("annotation path not escaped: %s", b)
	}
}

// Whatever an ALB action annotation holds, reading and switching it never
// panics, and a switch it accepts keeps the annotation valid JSON.
func FuzzALBAction(f *testing.F) {
	f.Add(albAction0)
	f.Add(`{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"web-blue","weight":null},{"serviceName":"web-green","servicePort":{"x":1},"weight":-5}]}}`)
	f.Add(`{"Type":"FORWARD","ForwardConfig":{"TargetGroups":[{"ServiceName":"web-blue"},{"ServiceName":"web-blue","Weight":1e3}]}}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, action string) {
		ctx := context.Background()
		cs := albCluster(action)
		h, err := GetHistory(ctx, cs, Target{Namespace: "ns", Name: "web", Kind: KindIngress})
		if err != nil {
			return
		}
		p, err := PlanUndo(h, 0)
		if err != nil || p.NoOp {
			return
		}
		_, patch, err := kindOf(h.Target).undoPatch(h, p.To)
		if err != nil {
			return
		}
		var ops []map[string]any
		if err := json.Unmarshal(patch, &ops); err != nil {
			t.Fatalf("the patch is not JSON: %v\n%s", err, patch)
		}
		for _, op := range ops {
			if v, ok := op["value"].(string); ok && strings.HasPrefix(op["path"].(string), "/metadata/annotations/alb.ingress") && !json.Valid([]byte(v)) {
				t.Fatalf("the rewritten action is not JSON: %s", v)
			}
		}
	})
}
