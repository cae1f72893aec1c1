package kube

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
)

// After a rollout a Deployment's history is read by name (no ReplicaSet
// LIST, which reads the whole namespace); when the rollout made a
// ReplicaSet the earlier read did not know, it is read in full.
func TestRereadHistory(t *testing.T) {
	ctx := context.Background()
	d := dep("v1")
	r1, r2 := rs(d, 1, "v1", ""), rs(d, 2, "v2", "")
	cs := fake.NewClientset(d, &r1, &r2)
	hs, err := DeploymentHistories(ctx, cs, "ns", labels.Everything())
	if err != nil || hs["ns/deployment/a"] == nil || len(hs["ns/deployment/a"].Revisions) != 2 {
		t.Fatalf("histories %v %v", hs, err)
	}
	before := hs["ns/deployment/a"]
	cs.ClearActions()
	h, err := rereadHistory(ctx, cs, before)
	if err != nil || h.Current() == nil || h.Current().Number != 1 {
		t.Fatalf("reread: %+v %v", h, err)
	}
	for _, a := range cs.Actions() {
		if a.GetVerb() == "list" {
			t.Errorf("reread listed %s", a.GetResource().Resource)
		}
	}
	// A new revision (v3) the earlier read never saw: read in full.
	r3 := rs(d, 3, "v3", "")
	if _, err := cs.AppsV1().ReplicaSets("ns").Create(ctx, &r3, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d3 := dep("v3")
	if _, err := cs.AppsV1().Deployments("ns").Update(ctx, d3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err = rereadHistory(ctx, cs, before)
	if err != nil || h.Current() == nil || h.Current().Number != 3 || len(h.Revisions) != 3 {
		t.Fatalf("after a new revision: %+v %v", h, err)
	}
}
