package kube

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// settle says what settlePods may do beyond waiting.
type settle int

const (
	// settleWait only waits: the controller replaces the pods.
	settleWait settle = iota
	// settleOnDelete replaces every pod on another revision (updateStrategy
	// OnDelete: the controller changes no pod by itself): the stuck ones
	// as settleStuck does, then the Ready ones highest ordinal first as a
	// StatefulSet's controller would, each once all are Ready.
	settleOnDelete
	// settleStuck replaces the pods on another revision that are not
	// Ready (crash-looping, never Ready, an image that cannot be pulled),
	// lowest ordinal first, each once the one before is Ready on the
	// target: a StatefulSet's controller waits for such a pod to become
	// Ready before it replaces anything, so after the undo it never would
	// (kubernetes#67250, "forced rollback"). Ready pods on another
	// revision are left to the controller.
	settleStuck
)

// settlePods waits until the pods of a StatefulSet or DaemonSet are on
// the target revision (a StatefulSet's below its partition excepted), as
// many as desired and all Ready: a controller's status can call a
// partitioned roll out complete before the pod above the partition is
// replaced. By mode it replaces pods itself, one at a time, saying each;
// it returns how many it replaced.
func settlePods(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, mode settle, say func(string)) (int, error) {
	partition := -1
	if s := h.StatefulSet; s != nil && mode != settleOnDelete && s.Spec.UpdateStrategy.RollingUpdate != nil && s.Spec.UpdateStrategy.RollingUpdate.Partition != nil {
		partition = int(*s.Spec.UpdateStrategy.RollingUpdate.Partition)
	}
	n := 0
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var stale, stuck []corev1.Pod
	for {
		// Desired is read anew: a DaemonSet's follows its nodes.
		cur, err := GetHistory(ctx, cs, h.Target)
		if err != nil {
			return n, err
		}
		pods, err := ListPods(ctx, cs, cur)
		if err != nil {
			return n, err
		}
		// The revision the pods must be on: the controller's own update
		// revision once it has observed the undo (it may have made a new
		// ControllerRevision equal to the target's); nothing is replaced
		// before it has, or a pod it recreates from the old spec would be
		// replaced again.
		want, observed, owner := to.podHash, true, types.UID("")
		switch {
		case cur.StatefulSet != nil:
			st := cur.StatefulSet
			observed, owner = st.Status.ObservedGeneration >= st.Generation, st.UID
			if observed && st.Status.UpdateRevision != "" {
				want = st.Status.UpdateRevision
			}
		case cur.DaemonSet != nil:
			observed, owner = cur.DaemonSet.Status.ObservedGeneration >= cur.DaemonSet.Generation, cur.DaemonSet.UID
		}
		terminating, starting, live := false, false, 0
		stale, stuck = stale[:0], stuck[:0]
		for _, pod := range pods {
			if ref := metav1.GetControllerOf(&pod); owner != "" && (ref == nil || ref.UID != owner) {
				continue // another workload's pod that shares the labels
			}
			if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			ready := PodReady(&pod)
			other := pod.Labels[controllerRevisionHash] != want && (h.StatefulSet == nil || podOrdinal(pod.Name) >= partition)
			switch {
			case pod.DeletionTimestamp != nil:
				terminating = true
				continue
			case other && ready:
				stale = append(stale, pod)
			case other:
				stuck = append(stuck, pod)
			case !ready:
				starting = true
			}
			live++
		}
		// One at a time: nothing is replaced while a pod terminates,
		// starts, or is missing (deleted, not yet recreated).
		quiet := observed && !terminating && !starting
		settled := quiet && live >= int(cur.Desired())
		if len(stuck) > 0 {
			sort.Slice(stuck, func(i, j int) bool { return podOrdinal(stuck[i].Name) < podOrdinal(stuck[j].Name) })
		}
		var victim *corev1.Pod
		switch {
		case settled && len(stale)+len(stuck) == 0:
			return n, nil
		case mode != settleWait && quiet && len(stuck) > 0 && (settled || h.StatefulSet != nil && ordinalsBelow(pods, podOrdinal(stuck[0].Name))):
			// A StatefulSet's stuck pod goes once every lower ordinal is
			// there: its controller may be holding back a higher one (a
			// release that also scaled up) until this one is Ready.
			// Stuck pods first, under OnDelete too: they serve nothing,
			// and while one is not Ready nothing else moves.
			victim = &stuck[0]
			say(fmt.Sprintf("replacing pod %s, stuck on revision %s (%s), with revision %d: its controller waits for it to become Ready",
				victim.Name, victim.Labels[controllerRevisionHash], PodTrouble(victim), to.Number))
		case mode == settleOnDelete && settled && len(stale) > 0:
			sort.Slice(stale, func(i, j int) bool { return podOrdinal(stale[i].Name) > podOrdinal(stale[j].Name) })
			victim = &stale[0]
			say(fmt.Sprintf("replacing pod %s with revision %d (updateStrategy OnDelete)", victim.Name, to.Number))
		}
		if victim != nil {
			// Preconditioned on the UID read: a pod the controller has
			// replaced meanwhile is not deleted again.
			err := cs.CoreV1().Pods(h.Target.Namespace).Delete(ctx, victim.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &victim.UID}})
			switch {
			case err == nil:
				n++
			case !apierrors.IsNotFound(err) && !apierrors.IsConflict(err):
				return n, fmt.Errorf("replace pod %s: %w", victim.Name, err)
			}
		}
		select {
		case <-ctx.Done():
			return n, fmt.Errorf("%w of %s: %d pod(s) replaced, %d still on another revision (%d not Ready), %d of %d live",
				ErrTimeout, h.Target.Ref(), n, len(stale)+len(stuck), len(stuck), live, cur.Desired())
		case <-tick.C:
		}
	}
}

// ordinalsBelow reports whether a live pod holds every ordinal below k.
func ordinalsBelow(pods []corev1.Pod, k int) bool {
	have := map[int]bool{}
	for i := range pods {
		if pods[i].DeletionTimestamp == nil {
			have[podOrdinal(pods[i].Name)] = true
		}
	}
	for o := 0; o < k; o++ {
		if !have[o] {
			return false
		}
	}
	return true
}

// PodTrouble says why a pod is not Ready, as kubectl get pods' STATUS
// column would: the first container's waiting reason (CrashLoopBackOff,
// ImagePullBackOff, ...) with its restarts, "not Ready" when it runs.
func PodTrouble(p *corev1.Pod) string {
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && w.Reason != "" {
			if c.RestartCount > 0 {
				return fmt.Sprintf("%s, %d restarts", w.Reason, c.RestartCount)
			}
			return w.Reason
		}
		if !c.Ready {
			return fmt.Sprintf("container %s running, not Ready", c.Name)
		}
	}
	if p.Status.Phase != "" && p.Status.Phase != corev1.PodRunning {
		return string(p.Status.Phase)
	}
	return "not Ready"
}

// podOrdinal is a StatefulSet pod's ordinal (NAME-N), or -1.
func podOrdinal(name string) int {
	i := strings.LastIndexByte(name, '-')
	n, err := strconv.Atoi(name[i+1:])
	if i < 0 || err != nil {
		return -1
	}
	return n
}

// settling is what a kind's settle works from: the history read before
// the undo and the revision undone to.
type settling struct {
	cs  kubernetes.Interface
	h   *History
	to  *Revision
	say func(string)
}

// settled is what a kind's settle learnt: the revision now running, the
// object to mark good (the target's, or a rollback's own new revision),
// ready pods or healthy targets counted, and the history read after a
// rollout of pods (for verifying the images; nil: read it again).
type settled struct {
	revision  int64
	good      string
	readyPods int
	history   *History
}

// traits are what changes the procedure around a kind's own steps.
type traits struct {
	// restoresConfig: its revisions are pod templates whose ConfigMaps
	// and Secrets rollback keeps and restores (not blue/green colours,
	// each with its own, nor Helm, which renders its own).
	restoresConfig bool
	// keepsBadMark: the abandoned revision's bad mark, set before the
	// undo, survives it (a plain workload's ReplicaSet or
	// ControllerRevision): not patched twice, which counts when hundreds
	// roll back at once. Others rewrite what holds it, so it is set again.
	keepsBadMark bool
	// noImages: what it serves is no pod template of its own (a load
	// balancer's target groups): no running image to verify.
	noImages bool
}

// plainWorkload is what the plain kinds (Deployment, StatefulSet,
// DaemonSet) share: nothing to prepare before the undo, and the same traits.
type plainWorkload struct{}

func (plainWorkload) prepare(context.Context, kubernetes.Interface, *History, *Revision, DryRun) error {
	return nil
}

func (plainWorkload) traits() traits { return traits{restoresConfig: true, keepsBadMark: true} }

// typedStatus is a kind's rollout status of its own object type (not
// done for any other object).
func typedStatus[T runtime.Object](obj runtime.Object, status func(T) (string, bool, error)) (string, bool, error) {
	o, ok := obj.(T)
	if !ok {
		return "", false, nil
	}
	return status(o)
}

// settlePlain is a plain workload's settle: pods replaced first as mode
// says, kubectl's rollout status, then, with podsAfter, every pod waited
// for on the target revision and Ready (a DaemonSet's status can say
// complete before).
func settlePlain(ctx context.Context, s *settling, out *settled, mode settle, podsAfter bool) (string, error) {
	t := s.h.Target
	replaced := ""
	if mode != settleWait {
		n, err := settlePods(ctx, s.cs, s.h, s.to, mode, s.say)
		if err != nil {
			return "", err
		}
		switch {
		case mode == settleOnDelete:
			replaced = fmt.Sprintf("; %d pod(s) replaced (updateStrategy OnDelete)", n)
		case n > 0:
			replaced = fmt.Sprintf("; %d pod(s) stuck on the broken revision replaced (the StatefulSet controller waits for them to become Ready: kubernetes#67250)", n)
		}
	}
	if err := WaitRolledOut(ctx, s.cs, t, s.say); err != nil {
		return "", err
	}
	if podsAfter {
		if _, err := settlePods(ctx, s.cs, s.h, s.to, settleWait, s.say); err != nil {
			return "", err
		}
	}
	h, err := rereadHistory(ctx, s.cs, s.h)
	if err != nil {
		return "", err
	}
	out.history = h
	if cur := h.Current(); cur != nil {
		out.revision = cur.Number
	}
	return fmt.Sprintf("%s successfully rolled out%s", t.Ref(), replaced), nil
}
