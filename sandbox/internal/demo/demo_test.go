package demo

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

func pod(name, image string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "payments", Labels: map[string]string{"app": "ts"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "ts", Image: image}}},
		Status:     corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func TestServiceFollowsReadyPods(t *testing.T) {
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "ts", Namespace: "payments"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ts"}}}}
	objs := []runtime.Object{dep, pod("a", "reg/ts:v1.1.5", true), pod("b", "reg/ts:v1.1.5", true), pod("c", "reg/ts:v1.2.0", false)}
	cs := fake.NewClientset(objs...)
	s := New(cs, Options{Namespace: "payments", Deployment: "ts", Broken: []string{"v1.2.0"}, ErrorRate: 1, ExtraLatency: time.Millisecond, BaseLatency: time.Millisecond})
	ctx := context.Background()
	if err := s.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Versions(), ","); got != "v1.1.5,v1.1.5" {
		t.Fatalf("versions %s, want the two ready v1.1.5 pods", got)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func() int {
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; i < 20; i++ {
		if c := get(); c != 200 {
			t.Fatalf("healthy version answered %d", c)
		}
	}
	// The broken version becomes the only Ready one.
	for _, name := range []string{"a", "b", "c"} {
		_ = cs.CoreV1().Pods("payments").Delete(ctx, name, metav1.DeleteOptions{})
	}
	_, _ = cs.CoreV1().Pods("payments").Create(ctx, pod("d", "reg/ts:v1.2.0", true), metav1.CreateOptions{})
	if err := s.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if c := get(); c != 500 {
			t.Fatalf("broken version (error rate 1) answered %d", c)
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`http_requests_total{code="200",version="v1.1.5"} 20`,
		`http_requests_total{code="500",version="v1.2.0"} 10`,
		`http_request_duration_seconds_bucket{version="v1.2.0",le=`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// No ready pods: 503, never a silent 200.
	_ = cs.CoreV1().Pods("payments").Delete(ctx, "d", metav1.DeleteOptions{})
	_ = s.Refresh(ctx)
	if c := get(); c != 503 {
		t.Errorf("no ready pods answered %d, want 503", c)
	}
}
