package engine

import (
	"k8s.io/client-go/kubernetes/fake"

	"context"
	"strings"
	"testing"

	"github.com/rollback-dev/rollback/internal/kube/kubetest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/store"
)

// configured makes the fake cluster's workload the configured service
// "web", which has no database (so the flowchart can say roll back).
func configured(e *Engine, w *Workload) {
	e.Config = &config.Config{Services: map[string]*config.Service{"web": {Kubernetes: config.Kubernetes{Namespace: "shop", Name: "web", Kind: "Deployment"}}}}
	w.Service = "web"
}

func alert(key string, auto bool) Trigger {
	return Trigger{Source: "alertmanager", Key: key, What: "alert HighErrorRate firing", Severity: decide.P1, Auto: auto}
}

// A P1 alert for a service that opted in runs the runbook once; the same
// alert group's repeated notifications change nothing, even after the
// incident closed, and a new alert group on the restored version only
// proposes (never rolls back further on its own).
func TestTriggerAutoRunsOnceAndDeduplicates(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	configured(e, w)
	res, err := e.HandleTrigger(ctx, w, alert("{}:{alertname=\"HighErrorRate\"}", true))
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != TriggerRan || res.Incident == "" {
		t.Fatalf("got %+v, want a run", res)
	}
	inc, _ := e.Store.GetIncident(ctx, res.Incident)
	if inc.Status != store.StatusClosed || inc.GoodVersion != "v1" || !strings.Contains(inc.Rationale, "alert HighErrorRate firing") {
		t.Errorf("incident %+v", inc)
	}
	kubetest.RolledBack(t, w.Client.(*fake.Clientset), "shop", "web")
	again, err := e.HandleTrigger(ctx, w, alert("{}:{alertname=\"HighErrorRate\"}", true))
	if err != nil || again.Action != TriggerDuplicate || again.Incident != res.Incident {
		t.Fatalf("repeat: got %+v %v, want a duplicate of %s", again, err, res.Incident)
	}
	incs, _ := e.Store.ListIncidents(ctx, "")
	if len(incs) != 1 {
		t.Errorf("incidents after the repeat: %d, want 1", len(incs))
	}
}

// Without auto the trigger proposes; approving runs the rollback as the
// approver's decision and closes the proposal.
func TestTriggerProposesAndApprovalRuns(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	configured(e, w)
	res, err := e.HandleTrigger(ctx, w, alert("g1", false))
	if err != nil || res.Action != TriggerProposed {
		t.Fatalf("got %+v %v, want a proposal", res, err)
	}
	prop, _ := e.Store.GetIncident(ctx, res.Incident)
	if prop.Status != store.StatusProposed || prop.BadVersion != "v2" || prop.GoodVersion != "v1" {
		t.Errorf("proposal %+v", prop)
	}
	if d, _ := e.HandleTrigger(ctx, w, alert("g2", false)); d.Action != TriggerDuplicate || d.Incident != prop.ID {
		t.Errorf("a second alert while proposed: %+v", d)
	}
	out, err := e.Approve(ctx, prop.ID, "slack:@alice", w, nil)
	if err != nil {
		t.Fatal(err)
	}
	inc, _ := e.Store.GetIncident(ctx, out.Incident)
	if inc.Status != store.StatusClosed || !strings.Contains(inc.Rationale, "approved by slack:@alice") || !strings.Contains(inc.Rationale, prop.ID) {
		t.Errorf("run incident %+v", inc)
	}
	kubetest.RolledBack(t, w.Client.(*fake.Clientset), "shop", "web")
	prop, _ = e.Store.GetIncident(ctx, prop.ID)
	if prop.Status != store.StatusClosed {
		t.Errorf("proposal after approval: %s", prop.Status)
	}
	if _, err := e.Approve(ctx, prop.ID, "bob", w, nil); err == nil {
		t.Error("a closed proposal was approved again")
	}
}

func TestDecline(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	res, _ := e.HandleTrigger(ctx, w, alert("g1", false))
	if err := e.Decline(ctx, res.Incident, "bob", "a hotfix is 5 minutes out"); err != nil {
		t.Fatal(err)
	}
	inc, _ := e.Store.GetIncident(ctx, res.Incident)
	evs, _ := e.Store.Events(ctx, res.Incident)
	if inc.Status != store.StatusDeclined || !strings.Contains(evs[len(evs)-1].Message, "hotfix") {
		t.Errorf("got %+v %+v", inc, evs)
	}
}

// Facts the flowchart cannot establish are never the comfortable answer:
// with the migration unknown, an opted-in service still only proposes.
func TestTriggerAutoProposesWhenTheFlowchartSaysNo(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	res, err := e.HandleTrigger(ctx, w, alert("g1", true))
	if err != nil || res.Action != TriggerProposed || !strings.Contains(res.Reason, string(decide.RollForwardOnlyOption)) {
		t.Fatalf("got %+v %v, want a proposal saying the flowchart's answer", res, err)
	}
}

// After a rollback, the bad version deployed again: the alert group that
// caused the rollback repeating is still a duplicate (Alertmanager repeats
// a firing group for hours), while a new alert group rolls back again.
func TestTriggerRepeatAfterCloseIsDuplicate(t *testing.T) {
	ctx := context.Background()
	e, w := newEngine(t)
	configured(e, w)
	first, err := e.HandleTrigger(ctx, w, alert("g1", true))
	if err != nil || first.Action != TriggerRan {
		t.Fatalf("first: %+v %v", first, err)
	}
	dep, _ := w.Client.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
	dep.Spec.Template = template("r/web:v2")
	if _, err := w.Client.AppsV1().Deployments("shop").Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	again, err := e.HandleTrigger(ctx, w, alert("g1", true))
	if err != nil || again.Action != TriggerDuplicate || again.Incident != first.Incident {
		t.Errorf("the same group again: %+v %v, want a duplicate of %s", again, err, first.Incident)
	}
	fresh, err := e.HandleTrigger(ctx, w, alert("g2", true))
	if err != nil || fresh.Action == TriggerDuplicate {
		t.Errorf("a new group: %+v %v, want it handled", fresh, err)
	}
}
