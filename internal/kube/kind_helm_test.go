package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/kube/kubetest"
	"github.com/rollback-dev/rollback/internal/progress"
)

// A Helm release through its interface, with a fake of it: the rollback
// is Helm's (a new revision "Rollback to 1"), revision 2 is marked bad and
// the rollback's own revision 3 good; a second run has nowhere to go.
func TestHelmRollbackOnAFake(t *testing.T) {
	ctx := context.Background()
	cluster := kubetest.Deployment("shop", "app-web")
	hf := kubetest.HelmRelease(cluster, "shop", "app", "deployed", time.Now().Add(-time.Hour))
	tgt := kube.Target{Namespace: "shop", Name: "app", Kind: kube.KindHelm}
	cs := kube.WithAdapters(cluster, nil, hf)
	res, err := kube.Rollback(ctx, cs, tgt, kube.RollbackOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	revs := hf.Releases["app"]
	if len(revs) != 3 || revs[2].Description != "Rollback to 1" || revs[2].Status != "deployed" || revs[1].Status != "superseded" {
		t.Fatalf("history after: %+v", revs)
	}
	if revs[1].Marks[kube.HealthAnnotation] != "bad" || revs[2].Marks[kube.HealthAnnotation] != "good" {
		t.Errorf("marks: 2 %v, 3 %v", revs[1].Marks, revs[2].Marks)
	}
	if res.Revision != 3 || res.MarkedGood != kube.HelmObject("app", 3) {
		t.Errorf("result %+v", res)
	}
	kubetest.RolledBack(t, cluster, "shop", "app-web")
	if _, err := kube.Rollback(ctx, cs, tgt, kube.RollbackOptions{Timeout: 5 * time.Second}); !errors.Is(err, kube.ErrNoTarget) {
		t.Errorf("second run: %v, want no target (revision 2 bad, 3 is 1)", err)
	}
}

// A release stuck in pending-upgrade: young, it may still be running, so
// the rollback is refused and nothing changes; old, it is marked failed
// and the rollback goes on, saying so.
func TestHelmPendingOnAFake(t *testing.T) {
	ctx := context.Background()
	young := kubetest.HelmRelease(kubetest.Deployment("shop", "app-web"), "shop", "app", "pending-upgrade", time.Now().Add(-time.Minute))
	_, err := kube.Rollback(ctx, kube.WithAdapters(fake.NewClientset(), nil, young), helmApp, kube.RollbackOptions{Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "may still run") || len(young.Releases["app"]) != 2 || len(young.Rollbacks) != 0 {
		t.Errorf("young pending: %v; history %+v, rollbacks %v", err, young.Releases["app"], young.Rollbacks)
	}
	cluster := kubetest.Deployment("shop", "app-web")
	old := kubetest.HelmRelease(cluster, "shop", "app", "pending-upgrade", time.Now().Add(-time.Hour))
	var said []string
	_, err = kube.Rollback(ctx, kube.WithAdapters(cluster, nil, old), helmApp,
		kube.RollbackOptions{Timeout: 5 * time.Second, Events: func(ev progress.Event) { said = append(said, ev.Message) }})
	revs := old.Releases["app"]
	if err != nil || revs[1].Status != "failed" || len(revs) != 3 || revs[2].Description != "Rollback to 1" {
		t.Fatalf("old pending: %v; history %+v", err, revs)
	}
	if !strings.Contains(strings.Join(said, "\n"), "marked failed; rolled back to revision 1") {
		t.Errorf("the run does not say it repaired the release:\n%s", strings.Join(said, "\n"))
	}
}

// Helm's rollback that fails after recording (its --wait timed out) is
// the run's failure, never "rolled back".
func TestHelmRollbackFailsAfterRecording(t *testing.T) {
	cluster := kubetest.Deployment("shop", "app-web")
	hf := kubetest.HelmRelease(cluster, "shop", "app", "deployed", time.Now().Add(-time.Hour))
	hf.Fail = errors.New("timed out waiting for the condition")
	_, err := kube.Rollback(context.Background(), kube.WithAdapters(fake.NewClientset(), nil, hf), helmApp, kube.RollbackOptions{Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "timed out waiting") {
		t.Errorf("got %v", err)
	}
	if revs := hf.Releases["app"]; revs[len(revs)-1].Marks[kube.HealthAnnotation] == "good" {
		t.Error("a failed rollback's revision was marked good")
	}
}

var helmApp = kube.Target{Namespace: "shop", Name: "app", Kind: kube.KindHelm}

// Settling is called once, after the undo is applied and before the wait:
// a wide rollback frees its slot there.
func TestSettlingComesAfterTheUndo(t *testing.T) {
	ctx := context.Background()
	cluster := kubetest.Deployment("shop", "web")
	calls, appliedFirst := 0, false
	_, err := kube.Rollback(ctx, cluster, kube.Target{Namespace: "shop", Name: "web"}, kube.RollbackOptions{Timeout: 5 * time.Second,
		Settling: func() {
			calls++
			d, _ := cluster.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
			appliedFirst = strings.HasSuffix(d.Spec.Template.Spec.Containers[0].Image, ":v1")
		}})
	if err != nil || calls != 1 || !appliedFirst {
		t.Errorf("err %v, %d call(s), undo applied before: %v", err, calls, appliedFirst)
	}
}
