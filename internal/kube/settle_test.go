package kube

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func crashLooping(p *corev1.Pod) *corev1.Pod {
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "a", RestartCount: 7,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}
	return p
}

// A StatefulSet's pods stuck on the broken revision (kubernetes#67250):
// the rollback replaces them itself, lowest ordinal first, the next only
// once the one before is Ready on the target revision; the controller
// (here a stand-in that recreates a deleted pod on the target revision,
// Ready 300 ms later) does the rest.
func TestSettlePodsReplacesStuckPodsInOrdinalOrder(t *testing.T) {
	sts := statefulSet("v1", appsv1.RollingUpdateStatefulSetStrategyType)
	sts.Spec.Replicas = ptr.To[int32](4)
	cs := fake.NewClientset(sts, pod("a-0", "a-aaa", "v1", true), pod("a-1", "a-aaa", "v1", true),
		crashLooping(pod("a-3", "a-bbb", "v2", false)), crashLooping(pod("a-2", "a-bbb", "v2", false)))
	var mu sync.Mutex
	var order []string
	var readyAtDelete []bool
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		name := a.(k8stesting.DeleteAction).GetName()
		mu.Lock()
		defer mu.Unlock()
		order = append(order, name)
		prev, err := cs.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), "ns", "a-2")
		readyAtDelete = append(readyAtDelete, err == nil && PodReady(prev.(*corev1.Pod)) && prev.(*corev1.Pod).Labels[controllerRevisionHash] == "a-aaa")
		_ = cs.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), "ns", name)
		_ = cs.Tracker().Add(pod(name, "a-aaa", "v1", false))
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = cs.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), pod(name, "a-aaa", "v1", true), "ns")
		}()
		return true, nil, nil
	})
	h := &History{Target: Target{Namespace: "ns", Name: "a", Kind: KindStatefulSet}, StatefulSet: sts, Selector: sts.Spec.Selector}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var said []string
	n, err := settlePods(ctx, cs, h, &Revision{Number: 3, podHash: "a-aaa"}, settleStuck, func(s string) { said = append(said, s) })
	if err != nil || n != 2 {
		t.Fatalf("replaced %d, %v", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, ",") != "a-2,a-3" || len(readyAtDelete) != 2 || !readyAtDelete[1] {
		t.Errorf("deleted %v (a-2 Ready on the target when a-3 was deleted: %v); want a-2 then a-3, one at a time", order, readyAtDelete)
	}
	if len(said) != 2 || !strings.Contains(said[0], "replacing pod a-2, stuck on revision a-bbb (CrashLoopBackOff, 7 restarts), with revision 3") {
		t.Errorf("said %q", said)
	}
}

// Ready pods on another revision are the controller's to replace: in
// settleStuck mode the rollback waits for them and deletes nothing.
func TestSettlePodsLeavesReadyPodsToTheController(t *testing.T) {
	sts := statefulSet("v1", appsv1.RollingUpdateStatefulSetStrategyType)
	cs := fake.NewClientset(sts, pod("a-0", "a-aaa", "v1", true), pod("a-1", "a-bbb", "v2", true))
	h := &History{Target: Target{Namespace: "ns", Name: "a", Kind: KindStatefulSet}, StatefulSet: sts, Selector: sts.Spec.Selector}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	n, err := settlePods(ctx, cs, h, &Revision{Number: 3, podHash: "a-aaa"}, settleStuck, func(string) {})
	if n != 0 || !errors.Is(err, ErrTimeout) {
		t.Errorf("replaced %d, %v; want none and a timeout", n, err)
	}
	if _, err := cs.CoreV1().Pods("ns").Get(context.Background(), "a-1", metav1.GetOptions{}); err != nil {
		t.Errorf("a-1 was deleted: %v", err)
	}
}

func TestPodTrouble(t *testing.T) {
	for want, p := range map[string]*corev1.Pod{
		"CrashLoopBackOff, 7 restarts":   crashLooping(pod("a", "h", "i", false)),
		"ImagePullBackOff":               {Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "a", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}}}},
		"container a running, not Ready": {Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "a", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}},
		"Pending":                        {Status: corev1.PodStatus{Phase: corev1.PodPending}},
	} {
		if got := PodTrouble(p); got != want {
			t.Errorf("PodTrouble = %q, want %q", got, want)
		}
	}
}

// What the forced rollback must never delete: a pod of another workload
// that shares the labels, a finished (Succeeded) pod, anything while the
// controller has not yet observed the undo, and the next stuck pod while
// one is missing (deleted, not yet recreated).
func TestSettlePodsReplacesOnlyWhatIsStuckAndOurs(t *testing.T) {
	foreign := crashLooping(pod("a-9", "a-bbb", "v2", false))
	foreign.OwnerReferences[0].UID = "other-uid"
	done := pod("a-8", "a-bbb", "v2", false)
	done.Status.Phase = corev1.PodSucceeded
	for name, tc := range map[string]struct {
		mutate func(*appsv1.StatefulSet)
		pods   []runtime.Object
	}{
		"another workload's pod": {pods: []runtime.Object{pod("a-0", "a-aaa", "v1", true), pod("a-1", "a-aaa", "v1", true), foreign}},
		"a finished pod":         {pods: []runtime.Object{pod("a-0", "a-aaa", "v1", true), pod("a-1", "a-aaa", "v1", true), done}},
		"the undo not observed yet": {mutate: func(s *appsv1.StatefulSet) { s.Generation, s.Status.ObservedGeneration = 3, 2 },
			pods: []runtime.Object{pod("a-0", "a-aaa", "v1", true), crashLooping(pod("a-1", "a-bbb", "v2", false))}},
		"a pod missing": {mutate: func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptr.To[int32](3) },
			pods: []runtime.Object{pod("a-0", "a-aaa", "v1", true), crashLooping(pod("a-2", "a-bbb", "v2", false))}},
	} {
		t.Run(name, func(t *testing.T) {
			sts := statefulSet("v1", appsv1.RollingUpdateStatefulSetStrategyType)
			if tc.mutate != nil {
				tc.mutate(sts)
			}
			cs := fake.NewClientset(append([]runtime.Object{sts}, tc.pods...)...)
			deleted := 0
			cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { deleted++; return false, nil, nil })
			h := &History{Target: Target{Namespace: "ns", Name: "a", Kind: KindStatefulSet}, StatefulSet: sts, Selector: sts.Spec.Selector}
			ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
			defer cancel()
			n, _ := settlePods(ctx, cs, h, &Revision{Number: 3, podHash: "a-aaa"}, settleStuck, func(string) {})
			if n != 0 || deleted != 0 {
				t.Errorf("replaced %d, %d delete(s)", n, deleted)
			}
		})
	}
}

// A release that also scaled up: the controller holds back the higher
// ordinal until the stuck one is Ready, so a missing pod above the stuck
// one does not stop its replacement (it would wait forever).
func TestSettlePodsReplacesStuckBelowAMissingOrdinal(t *testing.T) {
	sts := statefulSet("v1", appsv1.RollingUpdateStatefulSetStrategyType)
	sts.Spec.Replicas = ptr.To[int32](4)
	cs := fake.NewClientset(sts, pod("a-0", "a-aaa", "v1", true), pod("a-1", "a-aaa", "v1", true), crashLooping(pod("a-2", "a-bbb", "v2", false)))
	h := &History{Target: Target{Namespace: "ns", Name: "a", Kind: KindStatefulSet}, StatefulSet: sts, Selector: sts.Spec.Selector}
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	n, _ := settlePods(ctx, cs, h, &Revision{Number: 3, podHash: "a-aaa"}, settleStuck, func(string) {})
	if n != 1 {
		t.Errorf("replaced %d, want a-2 replaced though a-3 does not exist yet", n)
	}
}
