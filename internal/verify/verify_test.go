package verify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/metrics"
	"github.com/rollback-dev/rollback/internal/outbound/outboundtest"
)

func TestSmoke(t *testing.T) {
	var gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		if r.URL.Path == "/slow" {
			time.Sleep(50 * time.Millisecond)
		}
		if r.URL.Path == "/down" {
			w.WriteHeader(500)
		}
		w.Write([]byte(`{"version":"v1.1.5"}`))
	}))
	defer srv.Close()
	env := func(k string) string {
		if k == "INFLIGHT_API_KEY" {
			return "sekret"
		}
		return ""
	}
	c := srv.Client()
	ctx := context.Background()
	r := RunSmoke(ctx, c, config.Smoke{Name: "ok", URL: srv.URL + "/", Headers: map[string]string{"Authorization": "Bearer ${INFLIGHT_API_KEY}"}, ExpectBody: "v1.1.5"}, env)
	if !r.Passed || gotAuth != "Bearer sekret" {
		t.Errorf("ok: %+v, auth %q", r, gotAuth)
	}
	if strings.Contains(r.Measured+r.Message, "sekret") {
		t.Error("a secret was reported")
	}
	if r := RunSmoke(ctx, c, config.Smoke{Name: "down", URL: srv.URL + "/down"}, env); r.Passed || !strings.Contains(r.Message, "status 500, want 200") {
		t.Errorf("down: %+v", r)
	}
	if r := RunSmoke(ctx, c, config.Smoke{Name: "body", URL: srv.URL + "/", ExpectBody: "v1.2.0"}, env); r.Passed {
		t.Errorf("body: %+v", r)
	}
	if r := RunSmoke(ctx, c, config.Smoke{Name: "slow", URL: srv.URL + "/slow", MaxLatency: 10 * time.Millisecond}, env); r.Passed || !strings.Contains(r.Message, "latency") {
		t.Errorf("slow: %+v", r)
	}
	if r := RunSmoke(ctx, c, config.Smoke{Name: "gone", URL: "http://127.0.0.1:1/"}, env); r.Passed {
		t.Errorf("unreachable: %+v", r)
	}
}

// seq answers successive queries from a list; past its end, no data.
type seq struct{ vals []float64 }

func (s *seq) Query(context.Context, string, time.Time) (float64, error) {
	if len(s.vals) == 0 {
		return 0, metrics.ErrNoData
	}
	v := s.vals[0]
	s.vals = s.vals[1:]
	return v, nil
}

func (s *seq) QueryRange(context.Context, string, time.Time, time.Time, time.Duration) ([]metrics.Sample, error) {
	return nil, metrics.ErrNoData
}

func TestMetricRecoversWithinWindow(t *testing.T) {
	ctx := context.Background()
	th := Threshold{Name: "error-rate", Max: 0.001, Within: time.Second, Every: 10 * time.Millisecond}
	r, err := Metric(ctx, &seq{vals: []float64{0.05, 0.02, 0.0005}}, th, time.Now)
	if err != nil || !r.Passed {
		t.Errorf("recovering: %+v %v", r, err)
	}
	r, _ = Metric(ctx, &seq{vals: []float64{0.05, 0.05, 0.05}}, Threshold{Name: "e", Max: 0.001, Within: 50 * time.Millisecond, Every: 10 * time.Millisecond}, time.Now)
	if r.Passed || !strings.Contains(r.Message, "still, after") {
		t.Errorf("never recovers: %+v", r)
	}
	r, _ = Metric(ctx, &seq{}, Threshold{Name: "e", Max: 1, Within: 30 * time.Millisecond, Every: 10 * time.Millisecond}, time.Now)
	if r.Passed || r.Measured != "no data" {
		t.Errorf("no data must fail: %+v", r)
	}
}

func TestPods(t *testing.T) {
	lbl := map[string]string{"app": "a"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "r/a:v1"}}}}}}
	pod := func(name, img string, ready bool) *corev1.Pod {
		st := corev1.ConditionTrue
		if !ready {
			st = corev1.ConditionFalse
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: lbl},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: img}}},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}}
	}
	tgt := kube.Target{Namespace: "ns", Name: "a"}
	ctx := context.Background()
	now := time.Now()
	since := PodCheck{Since: now.Add(-time.Minute)}
	r, err := Pods(ctx, fake.NewClientset(d, pod("p1", "r/a:v1", true), pod("p2", "r/a:v1", true)), tgt, since, nil)
	if err != nil || !r.Passed {
		t.Errorf("healthy: %+v %v", r, err)
	}
	r, _ = Pods(ctx, fake.NewClientset(d, pod("p1", "r/a:v1", true), pod("p2", "r/a:v2", true)), tgt, since, nil)
	if r.Passed || !strings.Contains(r.Message, "p2 runs r/a:v2") {
		t.Errorf("wrong image: %+v", r)
	}
	r, _ = Pods(ctx, fake.NewClientset(d, pod("p1", "r/a:v1", true), pod("p2", "r/a:v1", false)), tgt, since, nil)
	if r.Passed || !strings.Contains(r.Message, "not every pod is Ready") {
		t.Errorf("not ready: %+v", r)
	}
	// A container that restarted during the rollout fails the check with
	// no wait; one that restarted before the rollback began does not.
	restarted := func(at time.Time) *corev1.Pod {
		p := pod("p1", "r/a:v1", true)
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "a", RestartCount: 3,
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(at)}}}}
		return p
	}
	start := time.Now()
	r, _ = Pods(ctx, fake.NewClientset(d, restarted(now.Add(-10*time.Second)), pod("p2", "r/a:v1", true)), tgt, since, nil)
	if r.Passed || !strings.Contains(r.Message, "restarting: p1/a (3 restarts)") {
		t.Errorf("restart during the rollout: %+v", r)
	}
	r, _ = Pods(ctx, fake.NewClientset(d, restarted(now.Add(-2*time.Minute)), pod("p2", "r/a:v1", true)), tgt, since, nil)
	if !r.Passed {
		t.Errorf("restart before the rollback counted: %+v", r)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the checks waited %s with no window", took)
	}
	// With a window, the part of it not yet passed is waited for.
	start = time.Now()
	r, _ = Pods(ctx, fake.NewClientset(d, pod("p1", "r/a:v1", true), pod("p2", "r/a:v1", true)), tgt, PodCheck{Since: start, Window: 300 * time.Millisecond}, nil)
	if took := time.Since(start); !r.Passed || took < 300*time.Millisecond {
		t.Errorf("window: %+v after %s", r, took)
	}
}

// An unreachable Prometheus (closed port) is retried until Within runs
// out, and the result says what was seen; a silent one (accepts, never
// answers) ends at Within too, never past it.
func TestMetricRetriesUnreachableAndSilentPrometheus(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	hung, stop := outboundtest.Hung()
	defer stop()
	for name, url := range map[string]string{"closed port": closed, "never answers": hung} {
		p, err := metrics.NewPrometheus(url)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		within := 600 * time.Millisecond
		r, err := Metric(ctx, p, Threshold{Name: "error-rate", Query: "up", Max: 1, Within: within, Every: 100 * time.Millisecond}, time.Now)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: got error %v, want a failed result", name, err)
		}
		if r.Passed || r.Measured != "unreachable" || !strings.Contains(r.Message, "still, after") {
			t.Errorf("%s: %+v", name, r)
		}
		if name == "closed port" && !strings.Contains(r.Message, "failed queries") {
			t.Errorf("%s: tried once only: %+v", name, r)
		}
		if took < within || took > within+2*time.Second {
			t.Errorf("%s: took %s, want about %s", name, took, within)
		}
	}
}

// The bound: no errors in 800 requests cannot show a rate under 0.1%
// (the demo's old verdict); in 3,000 it can; 3 in 1,000 is over.
func TestUpperBound(t *testing.T) {
	for _, tc := range []struct {
		e, n     float64
		under001 bool
	}{
		{0, 800, false}, {0, 3000, true}, {1, 10000, true}, {3, 1000, false}, {0, 0, false},
	} {
		if _, up := Bounds(tc.e, tc.n); (up <= 0.001) != tc.under001 {
			t.Errorf("%g of %g: upper bound %.5f", tc.e, tc.n, up)
		}
	}
	if lb, _ := Bounds(30, 1000); lb <= 0.01 || lb >= 0.03 {
		t.Errorf("lower bound of 3%%: %g", lb)
	}
}

// counts answers the requests query from one list and the errors query
// from another, and remembers the windows it was asked for.
type counts struct {
	requests, errs []float64
	windows        []string
}

func (c *counts) Query(_ context.Context, q string, _ time.Time) (float64, error) {
	list := &c.requests
	if strings.Contains(q, "5..") {
		list = &c.errs
	} else {
		c.windows = append(c.windows, q[strings.Index(q, "[")+1:strings.Index(q, "]")])
	}
	if len(*list) == 0 {
		return 0, metrics.ErrNoData
	}
	v := (*list)[0]
	if len(*list) > 1 {
		*list = (*list)[1:]
	}
	return v, nil
}

func (c *counts) QueryRange(context.Context, string, time.Time, time.Time, time.Duration) ([]metrics.Sample, error) {
	return nil, metrics.ErrNoData
}

// Plentiful traffic passes as soon as the bound allows; thin traffic
// waits out the window and says it cannot tell; a clear excess is said
// to be over. The evidence has the rate, the count and the bound.
func TestCountedRate(t *testing.T) {
	ctx := context.Background()
	th := Counts{Requests: `sum(increase(req[$window]))`, Errors: `sum(increase(req{code=~"5.."}[$window]))`, Max: 0.001, Within: time.Second, Every: 10 * time.Millisecond}
	c := &counts{requests: []float64{400, 1500, 3200}, errs: nil}
	r, err := CountedRate(ctx, c, th, time.Now)
	if err != nil || !r.Passed || !strings.Contains(r.Measured, "0 of 3200 requests") || !strings.Contains(r.Measured, "95% upper bound 0.08") {
		t.Errorf("plentiful: %+v %v", r, err)
	}
	if len(c.windows) != 3 || c.windows[0] != "1s" {
		t.Errorf("windows %v, want $window replaced by the time since the check began", c.windows)
	}
	th.Within = 60 * time.Millisecond
	r, _ = CountedRate(ctx, &counts{requests: []float64{800}}, th, time.Now)
	if r.Passed || !strings.Contains(r.Message, "not enough requests") || !strings.Contains(r.Measured, "0 of 800") {
		t.Errorf("thin: %+v", r)
	}
	r, _ = CountedRate(ctx, &counts{requests: []float64{1000}, errs: []float64{30}}, th, time.Now)
	if r.Passed || !strings.Contains(r.Message, "over 0.100% with 95% confidence") || !strings.Contains(r.Measured, "3.000%") {
		t.Errorf("over: %+v", r)
	}
	// p99 from a histogram: at most 1% of the requests slower than the
	// limit, with the same bound.
	p99 := Counts{Check: "p99-latency", What: "slow", Requests: th.Requests, Errors: th.Errors, Max: 0.01, Within: 60 * time.Millisecond, Every: 10 * time.Millisecond}
	r, _ = CountedRate(ctx, &counts{requests: []float64{10000}, errs: []float64{30}}, p99, time.Now)
	if !r.Passed || r.Check != "p99-latency" || !strings.Contains(r.Measured, "0.300% slow (30 of 10000") {
		t.Errorf("p99 within: %+v", r)
	}
	r, _ = CountedRate(ctx, &counts{requests: []float64{10000}, errs: []float64{200}}, p99, time.Now)
	if r.Passed || !strings.Contains(r.Message, "over 1.000% with 95% confidence") {
		t.Errorf("p99 over: %+v", r)
	}
}
