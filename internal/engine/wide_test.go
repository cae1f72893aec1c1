package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/store"
)

// A wide rollback undoes every matching workload under one incident, each
// journaled; a second run finds nothing open and the selector's workloads
// already rolled back.
func TestWide(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	cs := w.Client
	dep, _ := cs.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
	dep.Labels = map[string]string{"release": "r7"}
	if _, err := cs.AppsV1().Deployments("shop").Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: "shop", Labels: map[string]string{"release": "r6"}}}
	if _, err := cs.AppsV1().Deployments("shop").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var started string
	out, err := e.Wide(ctx, WideRequest{Namespace: "shop", Selector: "release=r7", Client: cs, Started: func(id string) { started = id }})
	if err != nil {
		t.Fatal(err)
	}
	if started != out.Incident || len(out.Items) != 1 || out.Items[0].Workload != "shop/deployment/web" || out.Items[0].State != "done" || out.Items[0].Good != "v1" {
		t.Fatalf("got %+v (started %s)", out, started)
	}
	inc, _ := e.Store.GetIncident(ctx, out.Incident)
	if inc.Status != store.StatusClosed || inc.Service != "shop/selector:release=r7" {
		t.Errorf("incident %+v", inc)
	}
	evs, _ := e.Store.Events(ctx, out.Incident)
	keys := map[string]bool{}
	for _, ev := range evs {
		keys[ev.Key] = true
	}
	if !keys["wide-target:shop/deployment/web"] || !keys["wide-done:shop/deployment/web"] {
		t.Errorf("journal keys %v", keys)
	}
	// The runbook's own steps: the same checklist, its per-service items
	// n/a with the reason, the incident closed and its review scheduled.
	for _, it := range incident.Checklist(inc, evs) {
		want := incident.Skipped
		switch it.Step {
		case incident.StepDecision, incident.StepDeclare, incident.StepKube, incident.StepReview:
			want = incident.Done
		case incident.StepClose:
			want = incident.Unnotified // no notifier for a selector
		}
		if it.Status != want || (want == incident.Skipped && !strings.Contains(it.Evidence, "per service")) {
			t.Errorf("wide checklist %s: %s (%s), want %s", it.Step, it.Status, it.Evidence, want)
		}
	}
	if _, err := e.Wide(ctx, WideRequest{Namespace: "shop", Selector: "release=nothing", Client: cs}); !errors.Is(err, ErrNothingMatched) {
		t.Errorf("no match: %v", err)
	}
	if _, err := e.Wide(ctx, WideRequest{Namespace: "shop", Selector: "release in (", Client: cs}); err == nil {
		t.Error("a bad selector was accepted")
	}
}

// The schedule's dry run is the rollback sent with dryRun=All (that the
// API server then changes nothing is TestDryRunChangesNothing's, on the
// sandbox: the fake applies dry-run patches) and is recorded.
func TestDrillDryRun(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	d, err := e.DrillDryRun(ctx, w)
	if err != nil || !d.OK || d.Kind != "dry-run" || d.Subject != "v2" || !strings.Contains(d.Detail, "server dry run") {
		t.Fatalf("got %+v %v", d, err)
	}
	dryRun := false
	for _, a := range w.Client.(*fake.Clientset).Actions() {
		if p, ok := a.(k8stesting.PatchActionImpl); ok {
			dryRun = dryRun || len(p.PatchOptions.DryRun) == 1 && p.PatchOptions.DryRun[0] == "All"
		}
	}
	if !dryRun {
		t.Error("no patch was sent with dryRun=All")
	}
	got, _ := e.Store.ListDrills(ctx, "")
	if len(got) != 1 || !got[0].OK {
		t.Errorf("recorded %+v", got)
	}
}
