package kube

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
)

// The controller drops status.promoteFull once (a status write of its own
// from a copy older than the promotion) and stays paused at its step:
// the wait sees the flag gone while the Rollout still steps, promotes it
// again, and the Rollout comes out Healthy on the target.
func TestRolloutPromotedAgainWhenTheControllerDropsIt(t *testing.T) {
	gvr := schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}
	ro := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"name": "web", "namespace": "shop", "generation": int64(3)},
		"spec":     map[string]any{"replicas": int64(2)},
		"status": map[string]any{"observedGeneration": "3", "currentPodHash": "h3", "stableRS": "h2", "phase": "Paused",
			"message": "CanaryPauseStep"},
	}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "RolloutList"}, ro)
	cs := Clients{Interface: fake.NewClientset(), Dyn: dyn}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var mu sync.Mutex
	promotions := 0
	go func() { // the controller
		for ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			u, err := dyn.Resource(gvr).Namespace("shop").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				continue
			}
			if full, _, _ := unstructured.NestedBool(u.Object, "status", "promoteFull"); !full {
				continue
			}
			mu.Lock()
			promotions++
			first := promotions == 1
			mu.Unlock()
			if first { // its stale status write: the flag is gone, still paused
				unstructured.RemoveNestedField(u.Object, "status", "promoteFull")
			} else {
				_ = unstructured.SetNestedField(u.Object, "h3", "status", "stableRS")
				_ = unstructured.SetNestedField(u.Object, "Healthy", "status", "phase")
				unstructured.RemoveNestedField(u.Object, "status", "promoteFull")
			}
			_, _ = dyn.Resource(gvr).Namespace("shop").UpdateStatus(ctx, u, metav1.UpdateOptions{})
		}
	}()

	tgt := Target{Namespace: "shop", Name: "web", Kind: KindRollout}
	current, err := GetRollout(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	h := &History{Target: tgt, Rollout: current}
	var said []string
	how, err := waitRolloutHealthy(ctx, cs, h, &Revision{Number: 3, podHash: "h3"}, func(s string) { said = append(said, s) })
	if err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(said, "\n"))
	}
	mu.Lock()
	defer mu.Unlock()
	if promotions != 2 || !strings.Contains(how, "fully promoted") || !strings.Contains(strings.Join(said, "\n"), "promoted fully again") {
		t.Errorf("promotions seen %d, result %q, progress:\n%s", promotions, how, strings.Join(said, "\n"))
	}
}
