package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/kinds"
)

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{
		"deployment": KindDeployment, "deploy": KindDeployment, "Deployments.apps": KindDeployment,
		"statefulset": KindStatefulSet, "sts": KindStatefulSet, "statefulsets.apps": KindStatefulSet,
		"daemonset": KindDaemonSet, "DS": KindDaemonSet, "daemonsets": KindDaemonSet,
	} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "pod", "replicaset", "cronjob", "deployment.extensions", "sts.apps.v1"} {
		if _, err := ParseKind(in); err == nil {
			t.Errorf("ParseKind(%q): want an error", in)
		}
	}
}

// revisionData is what the StatefulSet and DaemonSet controllers store in
// a ControllerRevision: spec.template with "$patch": "replace".
func revisionData(t *testing.T, tpl corev1.PodTemplateSpec) []byte {
	b, err := json.Marshal(tpl)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["$patch"] = "replace"
	out, err := json.Marshal(map[string]any{"spec": map[string]any{"template": m}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func controllerRevision(t *testing.T, owner metav1.Object, kind, name, hash string, rev int64, img string, mark Health) *appsv1.ControllerRevision {
	cr := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "a", controllerRevisionHash: hash},
			Annotations:     map[string]string{},
			OwnerReferences: []metav1.OwnerReference{{UID: owner.GetUID(), Controller: ptr.To(true), Kind: kind, Name: owner.GetName()}}},
		Data:     runtime.RawExtension{Raw: revisionData(t, tmpl(img))},
		Revision: rev,
	}
	if mark != "" {
		cr.Annotations[HealthAnnotation] = string(mark)
	}
	return cr
}

// pod is a pod of the StatefulSet fixture (its controller reference is
// statefulSet()'s UID: settlePods ignores pods of other owners).
func pod(name, hash, img string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "a", controllerRevisionHash: hash},
			OwnerReferences: []metav1.OwnerReference{{UID: "sts-uid", Controller: ptr.To(true), Kind: "StatefulSet", Name: "a"}}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: img}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func statefulSet(img string, strategy appsv1.StatefulSetUpdateStrategyType) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: types.UID("sts-uid"), ResourceVersion: "7"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			Template: tmpl(img), UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: strategy}},
	}
}

// A StatefulSet's history is its ControllerRevisions; the undo is the
// target revision's data as a strategic merge patch, guarded by the
// resourceVersion; marks are kept on the ControllerRevisions.
func TestStatefulSetHistoryUndoAndMarks(t *testing.T) {
	ctx := context.Background()
	sts := statefulSet("v2", appsv1.RollingUpdateStatefulSetStrategyType)
	foreign := controllerRevision(t, &metav1.ObjectMeta{Name: "b", UID: "other"}, "StatefulSet", "b-ccc", "b-ccc", 9, "evil", Good)
	cs := fake.NewClientset(sts,
		controllerRevision(t, sts, "StatefulSet", "a-aaa", "a-aaa", 1, "v1", ""),
		controllerRevision(t, sts, "StatefulSet", "a-bbb", "a-bbb", 2, "v2", ""),
		foreign,
		pod("a-0", "a-bbb", "v2", true), pod("a-1", "a-bbb", "v2", false))
	tgt := Target{Namespace: "ns", Name: "a", Kind: KindStatefulSet}
	h, err := GetHistory(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Revisions) != 2 || h.Current() == nil || h.Current().Number != 2 || h.Current().Replicas != 2 || h.Current().Ready != 1 {
		t.Fatalf("history %+v", h.Revisions)
	}
	p, err := PlanUndo(h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.To.Object != "a-aaa" || p.From.Object != "a-bbb" || p.NoOp || !strings.HasPrefix(p.Summary(), "statefulset/a: revision 2 (v2) -> revision 1 (v1)") {
		t.Fatalf("plan %+v: %s", p, p.Summary())
	}
	pt, patch, err := kindOf(tgt).undoPatch(h, p.To)
	if err != nil {
		t.Fatal(err)
	}
	if pt != types.StrategicMergePatchType || !strings.Contains(string(patch), `"resourceVersion":"7"`) || !strings.Contains(string(patch), `"$patch":"replace"`) {
		t.Errorf("patch %s %s: want the revision's data with a resourceVersion precondition", pt, patch)
	}
	if err := Undo(ctx, cs, h, p, DryRunNone); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.AppsV1().StatefulSets("ns").Get(ctx, "a", metav1.GetOptions{})
	if img := got.Spec.Template.Spec.Containers[0].Image; img != "v1" {
		t.Errorf("after the undo the template runs %s, want v1", img)
	}
	if err := Mark(ctx, cs, tgt, "a-bbb", Bad, "broken", time.Now()); err != nil {
		t.Fatal(err)
	}
	h, err = GetHistory(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if r := h.FindObject("a-bbb"); r == nil || r.Health != Bad || r.HealthReason != "broken" {
		t.Errorf("mark not kept on the ControllerRevision: %+v", r)
	}
	if h.Current() == nil || h.Current().Number != 1 {
		t.Errorf("current after the undo: %+v", h.Current())
	}
	// The bad revision is never a target again.
	if _, err := PlanUndo(h, 2); !errors.Is(err, ErrTargetBad) {
		t.Errorf("plan to the bad revision: %v", err)
	}
}

func TestDaemonSetHistoryByHashLabel(t *testing.T) {
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "ds-uid", ResourceVersion: "3"},
		Spec:       appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}, Template: tmpl("v2")},
	}
	cs := fake.NewClientset(ds,
		controllerRevision(t, ds, "DaemonSet", "a-5f7c", "5f7c", 1, "v1", Good),
		controllerRevision(t, ds, "DaemonSet", "a-77d9", "77d9", 2, "v2", ""),
		pod("a-x1", "77d9", "v2", true))
	h, err := GetHistory(context.Background(), cs, Target{Namespace: "ns", Name: "a", Kind: KindDaemonSet})
	if err != nil {
		t.Fatal(err)
	}
	if cur := h.Current(); cur == nil || cur.Number != 2 || cur.Ready != 1 {
		t.Fatalf("current %+v (a DaemonSet's pods carry the revision's hash label, not its name)", cur)
	}
	if p, err := PlanUndo(h, 0); err != nil || p.To.Number != 1 || p.To.Health != Good {
		t.Fatalf("plan %+v, %v", p, err)
	}
}

func TestStatefulSetAndDaemonSetStatus(t *testing.T) {
	sts := func(mut func(*appsv1.StatefulSet)) *appsv1.StatefulSet {
		s := statefulSet("v1", appsv1.RollingUpdateStatefulSetStrategyType)
		s.Spec.Replicas = ptr.To[int32](3)
		s.Generation, s.Status.ObservedGeneration = 2, 2
		s.Status.ReadyReplicas, s.Status.UpdatedReplicas, s.Status.CurrentReplicas = 3, 3, 3
		s.Status.CurrentRevision, s.Status.UpdateRevision = "a-1", "a-1"
		mut(s)
		return s
	}
	for _, tt := range []struct {
		name string
		s    *appsv1.StatefulSet
		done bool
		msg  string
	}{
		{"complete", sts(func(*appsv1.StatefulSet) {}), true, "rolling update complete 3 pods at revision a-1"},
		{"not observed", sts(func(s *appsv1.StatefulSet) { s.Status.ObservedGeneration = 1 }), false, "spec update to be observed"},
		{"never observed", sts(func(s *appsv1.StatefulSet) { s.Generation, s.Status.ObservedGeneration = 0, 0 }), false, "spec update to be observed"},
		{"not ready", sts(func(s *appsv1.StatefulSet) { s.Status.ReadyReplicas = 1 }), false, "Waiting for 2 pods to be ready"},
		{"updating", sts(func(s *appsv1.StatefulSet) { s.Status.UpdateRevision, s.Status.UpdatedReplicas = "a-2", 1 }), false, "complete 1 pods at revision a-2"},
		{"partition pending", sts(func(s *appsv1.StatefulSet) {
			s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](1)}
			s.Status.UpdateRevision, s.Status.UpdatedReplicas = "a-2", 1
		}), false, "partitioned roll out to finish: 1 out of 2"},
		{"partition done", sts(func(s *appsv1.StatefulSet) {
			s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](1)}
			s.Status.UpdateRevision, s.Status.UpdatedReplicas = "a-2", 2
		}), true, "partitioned roll out complete: 2 new pods"},
		{"OnDelete waiting", sts(func(s *appsv1.StatefulSet) {
			s.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
			s.Status.UpdateRevision, s.Status.UpdatedReplicas = "a-2", 2
		}), false, "OnDelete pods to be replaced: 2 out of 3"},
	} {
		msg, done, err := StatefulSetStatus(tt.s)
		if err != nil || done != tt.done || !strings.Contains(msg, tt.msg) {
			t.Errorf("%s: got (%q, %v, %v), want (%q, %v)", tt.name, msg, done, err, tt.msg, tt.done)
		}
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "a", Generation: 2}}
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: 2, DesiredNumberScheduled: 2, UpdatedNumberScheduled: 1, NumberAvailable: 2}
	if msg, done, _ := DaemonSetStatus(ds); done || !strings.Contains(msg, "1 out of 2 new pods have been updated") {
		t.Errorf("daemonset updating: %q %v", msg, done)
	}
	ds.Status.UpdatedNumberScheduled, ds.Status.NumberAvailable = 2, 1
	if msg, done, _ := DaemonSetStatus(ds); done || !strings.Contains(msg, "1 of 2 updated pods are available") {
		t.Errorf("daemonset unavailable: %q %v", msg, done)
	}
	ds.Status.NumberAvailable = 2
	if msg, done, _ := DaemonSetStatus(ds); !done || msg != `daemon set "a" successfully rolled out` {
		t.Errorf("daemonset done: %q %v", msg, done)
	}
}

// With updateStrategy OnDelete the rollback replaces the pods itself,
// highest ordinal first, one at a time.
func TestSettlePodsReplacesOnDelete(t *testing.T) {
	sts := statefulSet("v1", appsv1.OnDeleteStatefulSetStrategyType)
	sts.Spec.Replicas = ptr.To[int32](1) // the fake recreates no pod
	cs := fake.NewClientset(sts, pod("a-0", "a-bbb", "v2", true), pod("a-1", "a-bbb", "v2", true), pod("a-2", "a-aaa", "v1", true), pod("a-10", "a-bbb", "v2", true))
	h := &History{Target: Target{Namespace: "ns", Name: "a", Kind: KindStatefulSet}, StatefulSet: sts, Selector: sts.Spec.Selector}
	var said []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := settlePods(ctx, cs, h, &Revision{Number: 3, podHash: "a-aaa"}, settleOnDelete, func(s string) { said = append(said, s) })
	if err != nil || n != 3 {
		t.Fatalf("replaced %d, %v", n, err)
	}
	want := []string{"a-10", "a-1", "a-0"}
	for i, w := range want {
		if !strings.Contains(said[i], "replacing pod "+w+" ") {
			t.Errorf("replacement %d: %q, want %s (highest ordinal first)", i, said[i], w)
		}
	}
	left, _ := cs.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
	if len(left.Items) != 1 || left.Items[0].Name != "a-2" {
		t.Errorf("pods left: %v", fmt.Sprint(left.Items))
	}
}

// Without replacing, settlePods waits for the pods above the partition:
// a partitioned roll out's status can say complete while the pod above
// the partition still runs the abandoned revision.
func TestSettlePodsWaitsAbovePartition(t *testing.T) {
	sts := statefulSet("v1", appsv1.RollingUpdateStatefulSetStrategyType)
	sts.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](1)}
	cs := fake.NewClientset(sts, pod("a-0", "a-aaa", "v1", true), pod("a-1", "a-bbb", "v2", true))
	h := &History{Target: Target{Namespace: "ns", Name: "a", Kind: KindStatefulSet}, StatefulSet: sts, Selector: sts.Spec.Selector}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { // the controller replaces a-1 a moment later
		time.Sleep(500 * time.Millisecond)
		_ = cs.CoreV1().Pods("ns").Delete(ctx, "a-1", metav1.DeleteOptions{})
		_, _ = cs.CoreV1().Pods("ns").Create(ctx, pod("a-1", "a-aaa", "v1", true), metav1.CreateOptions{})
	}()
	start := time.Now()
	n, err := settlePods(ctx, cs, h, &Revision{Number: 3, podHash: "a-aaa"}, settleWait, func(string) {})
	if err != nil || n != 0 || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("settled after %s: %d replaced, %v; want a wait for a-1, nothing deleted", time.Since(start), n, err)
	}
}

// Every kind of the table parses to itself, has its own implementation
// (none falls through to the Deployment's), and names its API object.
func TestTableOfKindsIsImplemented(t *testing.T) {
	for _, sp := range kinds.Table {
		k, err := ParseKind(sp.Name)
		if err != nil || string(k) != sp.Name {
			t.Errorf("ParseKind(%q) = %q, %v", sp.Name, k, err)
		}
		if _, isDeployment := kindOf(Target{Kind: k}).(deploymentKind); isDeployment != (k == KindDeployment) {
			t.Errorf("%s has no implementation of its own", k)
		}
		if v, kind := k.APIVersionKind(); v != sp.APIVersion || kind != sp.APIKind {
			t.Errorf("%s: APIVersionKind %s %s", k, v, kind)
		}
	}
}
