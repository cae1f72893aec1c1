package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/kube/kubetest"
	"github.com/rollback-dev/rollback/internal/store"
	"github.com/rollback-dev/rollback/internal/verify"
)

// cluster is a fake cluster whose Deployment shop/web runs v2 over v1,
// the pods on v2, the broken version (see kubetest.Deployment).
func cluster() *fake.Clientset { return kubetest.Deployment("shop", "web") }

// template is the fake cluster's pod template running img.
func template(img string) corev1.PodTemplateSpec { return kubetest.Template("web", img) }

func newEngine(t *testing.T) (*Engine, *Workload) {
	t.Helper()
	s, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	dir := t.TempDir()
	e := &Engine{Store: s, Getenv: func(string) string { return "" }, StateDir: func(string) (string, error) { return dir, nil }}
	w := &Workload{Target: kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindDeployment}, Client: cluster()}
	return e, w
}

// A detector's breach runs the whole runbook as any run: an incident
// decided by the detector, the undo, verification, the block, closed.
func TestOnBreachRunsTheRunbook(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	out, err := e.OnBreach(ctx, w, Breach{Detector: "sequential", Reason: "canary 12% 5xx against 0.1%"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	inc, err := e.Store.GetIncident(ctx, out.Incident)
	if err != nil {
		t.Fatal(err)
	}
	if inc.Status != store.StatusClosed || inc.BadVersion != "v2" || inc.GoodVersion != "v1" || !strings.Contains(inc.Rationale, "canary 12% 5xx") {
		t.Errorf("incident %+v", inc)
	}
	evs, _ := e.Store.Events(ctx, inc.ID)
	for _, it := range incident.Checklist(inc, evs) {
		if it.Status == incident.Pending || it.Status == incident.Failed || it.Status == incident.Running {
			t.Errorf("item %q is %s: %s", it.Text, it.Status, it.Evidence)
		}
	}
	if b, err := e.Store.GetBlock(ctx, w.Key(), "v2"); err != nil || b == nil {
		t.Errorf("v2 not blocked: %v", err)
	}
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		t.Fatal(err)
	}
	if r := h.FindObject("web-2"); r == nil || r.Health != kube.Bad {
		t.Errorf("the abandoned revision is not marked bad: %+v", r)
	}
	kubetest.RolledBack(t, w.Client.(*fake.Clientset), "shop", "web")
}

// A breach while another run holds the service is not acted on twice: it
// is refused (ErrBusy) and, when an incident is open, journaled there.
func TestOnBreachWhileAnotherRunHoldsTheService(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	if _, err := e.Store.AcquireLease(ctx, w.LeaseKey(), "other-host:1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := e.OnBreach(ctx, w, Breach{Detector: "threshold"}, time.Minute); !errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want ErrBusy", err)
	}
	if incs, _ := e.Store.ListIncidents(ctx, w.Key()); len(incs) != 0 {
		t.Fatalf("a second incident was opened: %+v", incs)
	}
	if err := e.Store.ReleaseLease(ctx, w.LeaseKey(), "other-host:1"); err != nil {
		t.Fatal(err)
	}
	open := &store.Incident{Service: w.Key(), OpenedAt: time.Now()}
	if err := e.Store.CreateIncident(ctx, open); err != nil {
		t.Fatal(err)
	}
	out, err := e.OnBreach(ctx, w, Breach{Detector: "threshold", Reason: "3 failed checks"}, time.Minute)
	if !errors.Is(err, ErrBusy) || out == nil || out.Incident != open.ID {
		t.Fatalf("got %+v, %v; want ErrBusy on %s", out, err, open.ID)
	}
	evs, _ := e.Store.Events(ctx, open.ID)
	if len(evs) != 1 || !strings.Contains(evs[0].Message, "not acted on twice: 3 failed checks") {
		t.Errorf("the breach was not journaled on the open incident: %+v", evs)
	}
	if h, _ := kube.GetHistory(ctx, w.Client, w.Target); h.Current().Number != 2 {
		t.Errorf("the workload was changed while an incident was open")
	}
}

// The outline, progress titles and the run's plan come from Steps.
func TestStepsDefinedOnce(t *testing.T) {
	e, w := newEngine(t)
	e.Config = &config.Config{Services: map[string]*config.Service{"web": {Verify: &config.Verify{ErrorRateQuery: "q", LatencyQuery: "p", LatencyFactor: 1.5}}}}
	out := e.Outline("web")
	p := e.plan(&store.Incident{}, &Target{Service: "web"}, w, &kube.Result{})
	if len(out) != len(Steps) || len(p.Steps) != len(Steps) {
		t.Fatalf("outline %d, plan %d, steps %d", len(out), len(p.Steps), len(Steps))
	}
	for i, s := range Steps {
		if out[i].Step != s.Name || p.Steps[i].Name != s.Name || p.Steps[i].Title != s.Title || Title(s.Name) != s.Title || p.Steps[i].Budget != s.Budget {
			t.Errorf("step %d: outline %+v, plan %s/%s", i, out[i], p.Steps[i].Name, p.Steps[i].Title)
		}
	}
	for _, o := range out {
		if o.Step == incident.StepMetrics && !strings.Contains(o.Applies, "1.5x the pre-release baseline") {
			t.Errorf("metrics applies: %q", o.Applies)
		}
		if o.Step == incident.StepFlagOff && !strings.HasPrefix(o.Applies, "skipped") {
			t.Errorf("flag applies: %q", o.Applies)
		}
	}
}

// prometheus answers the latency query with baseline before the release
// (queries at times before 2001) and current after, the error rate with 0.
func prometheus(t *testing.T, baseline, current float64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		at, _ := strconv.ParseFloat(r.Form.Get("time"), 64)
		v := 0.0
		if r.Form.Get("query") == "p99" {
			v = current
			if at < 1e9 {
				v = baseline
			}
		}
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[%f,"%g"]}]}}`, at, v)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// The run's metric step is the same verification as 'rollback verify',
// latency factor included: p99 is judged against its pre-release baseline.
func TestRunVerifiesLatencyAgainstBaseline(t *testing.T) {
	for _, tc := range []struct {
		name    string
		current float64
		pass    bool
	}{{"within 2x the baseline", 0.15, true}, {"over 2x the baseline", 0.35, false}} {
		t.Run(tc.name, func(t *testing.T) {
			e, w := newEngine(t)
			w.Service = "web"
			e.Config = &config.Config{Services: map[string]*config.Service{"web": {Verify: &config.Verify{
				Prometheus: prometheus(t, 0.1, tc.current), ErrorRateQuery: "errors", LatencyQuery: "p99", LatencyFactor: 2, Within: 200 * time.Millisecond}}}}
			out, err := e.Run(context.Background(), RunRequest{Workload: w, Timeout: time.Minute})
			if tc.pass != (err == nil) {
				t.Fatalf("run: %v", err)
			}
			evs, _ := e.Store.Events(context.Background(), out.Incident)
			var metricsEv string
			for _, ev := range evs {
				if ev.Step == incident.StepMetrics && (ev.Phase == store.PhaseDone || ev.Phase == store.PhaseFailed) {
					metricsEv = ev.Evidence + ev.Message
				}
			}
			if !strings.Contains(metricsEv, "p99-latency") || tc.pass != strings.Contains(metricsEv, "p99-latency: 150ms") {
				t.Errorf("metrics step: %q", metricsEv)
			}
			if !tc.pass && !errors.Is(err, verify.ErrFailed) {
				t.Errorf("got %v, want a verification failure", err)
			}
		})
	}
}

// The engine runs the runbook's table: every step of incident.Runbook
// (but the decision, recorded on the incident) has a body, no body is
// without a step, and the plan keeps the table's order.
func TestStepsAreTheRunbooksTable(t *testing.T) {
	for _, d := range incident.Runbook {
		if b, ok := bodies[d.Name]; d.OnIncident == ok || (ok && b.Run == nil) {
			t.Errorf("step %s: on the incident %v, body %v", d.Name, d.OnIncident, ok)
		}
	}
	for name := range bodies {
		if _, ok := incident.Lookup(name); !ok {
			t.Errorf("body %s runs no step of the runbook", name)
		}
	}
	i := 0
	for _, d := range incident.Runbook {
		if d.OnIncident {
			continue
		}
		if i >= len(Steps) || Steps[i].Name != d.Name || Steps[i].Budget != d.Budget || Steps[i].Title != d.Title {
			t.Fatalf("Steps[%d] is not the table's %s", i, d.Name)
		}
		i++
	}
}
