package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/kube"
)

// blueGreen deploys transaction-service as blue (v1.1.5) and green
// (v1.2.0, blueReplicas may be 0), with the Service on green, and waits
// until green serves.
func blueGreen(t *testing.T, ns string, blueReplicas int32) {
	t.Helper()
	colours(t, ns, blueReplicas)
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app, "color": "green"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(endpointPods(t, ns), app+"-green-") {
		if time.Now().After(deadline) {
			t.Fatal("the Service's EndpointSlices never listed green's pods")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// colours deploys the blue (v1.1.5, blueReplicas) and green (v1.2.0, 2)
// Deployments, each with a Service of its own (NAME-blue, NAME-green),
// and waits for both to roll out.
func colours(t *testing.T, ns string, blueReplicas int32) {
	t.Helper()
	ctx := context.Background()
	for _, c := range []struct {
		colour, version string
		replicas        int32
	}{{"blue", "v1.1.5", blueReplicas}, {"green", "v1.2.0", 2}} {
		l := map[string]string{"app": app, "color": c.colour}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app + "-" + c.colour, Namespace: ns},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(c.replicas), Selector: &metav1.LabelSelector{MatchLabels: l},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: image(c.version), Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}}}}}
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		err := kube.WaitRolledOut(wctx, cs, kube.Target{Namespace: ns, Name: d.Name}, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: l, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// endpointPods are the pods the Service's EndpointSlices name.
func endpointPods(t *testing.T, ns string) string {
	return kubectl(t, "get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name="+app,
		"-o", "jsonpath={.items[*].endpoints[*].targetRef.name}")
}

// Blue/green: the rollback switches the Service back to blue only when
// blue can take the traffic, waits until the EndpointSlices hold only blue
// pods, leaves green running marked bad for inspection, and never
// switches back to it.
func TestBlueGreenSwitchBack(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	blueGreen(t, ns, 2)
	r := rollback(t, "run", "service/"+app, "-n", ns, "--yes", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"outcome": "rolled-back"`) {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := kubectl(t, "get", "service", app, "-n", ns, "-o", "jsonpath={.spec.selector.color}"); got != "blue" {
		t.Errorf("selector colour %q, want blue", got)
	}
	eps := strings.Fields(endpointPods(t, ns))
	if len(eps) != 2 {
		t.Errorf("endpoints %v, want blue's 2 pods", eps)
	}
	for _, p := range eps {
		if !strings.HasPrefix(p, app+"-blue-") {
			t.Errorf("endpoint %s is not a blue pod (all: %v)", p, eps)
		}
	}
	if got := kubectl(t, "get", "deployment", app+"-green", "-n", ns, "-o", "jsonpath={.status.readyReplicas}/{.metadata.annotations.rollback/health}"); got != "2/bad" {
		t.Errorf("green after the switch: %s, want 2/bad (kept running for inspection, marked bad)", got)
	}
	again := rollback(t, "run", "service/"+app, "-n", ns, "--yes")
	if again.code != cli.ExitRefused || !strings.Contains(again.stderr, "no revision to roll back to") {
		t.Errorf("second run: exit %d, want %d (green is bad)\n%s", again.code, cli.ExitRefused, again.stderr)
	}
	if got := kubectl(t, "get", "service", app, "-n", ns, "-o", "jsonpath={.spec.selector.color}"); got != "blue" {
		t.Errorf("the second run moved the selector to %q", got)
	}
	if g := rollback(t, "gate", "service/"+app, "-n", ns, "v1.2.0"); g.code != cli.ExitBlocked {
		t.Errorf("gate: exit %d, want %d", g.code, cli.ExitBlocked)
	}
}

// A standby that cannot take the traffic (blue scaled to 0) is refused
// before anything changes: no incident, the selector stays on green.
func TestBlueGreenStandbyNotReady(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	blueGreen(t, ns, 0)
	r := rollback(t, "run", "service/"+app, "-n", ns, "--yes")
	if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "standby colour is not ready") {
		t.Fatalf("run: exit %d, want %d\n%s", r.code, cli.ExitRefused, r.stderr)
	}
	if got := kubectl(t, "get", "service", app, "-n", ns, "-o", "jsonpath={.spec.selector.color}"); got != "green" {
		t.Errorf("selector moved to %q", got)
	}
	if strings.Contains(r.stderr, "INC-") {
		t.Errorf("an incident was opened for a refused switch:\n%s", r.stderr)
	}
}
