package kube

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	watchtools "k8s.io/client-go/tools/watch"
)

// Errors a rollout wait ends with.
var (
	ErrTimeout          = errors.New("timed out waiting for the rollout")
	ErrProgressDeadline = errors.New("deployment exceeded its progress deadline")
	ErrDeleted          = errors.New("workload was deleted")
)

// RolloutStatus is kubectl rollout status' verdict on a Deployment: a
// message, whether the rollout is complete, and an error when it failed.
func RolloutStatus(d *appsv1.Deployment) (string, bool, error) {
	if d.Generation > d.Status.ObservedGeneration {
		return "Waiting for deployment spec update to be observed...", false, nil
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return "", false, fmt.Errorf("%w: deployment %q: %s", ErrProgressDeadline, d.Name, c.Message)
		}
	}
	if d.Spec.Replicas != nil && d.Status.UpdatedReplicas < *d.Spec.Replicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...",
			d.Name, d.Status.UpdatedReplicas, *d.Spec.Replicas), false, nil
	}
	if d.Status.Replicas > d.Status.UpdatedReplicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...",
			d.Name, d.Status.Replicas-d.Status.UpdatedReplicas), false, nil
	}
	if d.Status.AvailableReplicas < d.Status.UpdatedReplicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...",
			d.Name, d.Status.AvailableReplicas, d.Status.UpdatedReplicas), false, nil
	}
	return fmt.Sprintf("deployment %q successfully rolled out", d.Name), true, nil
}

// WaitRolledOut watches the workload (no polling) until kubectl rollout
// status' verdict for its kind says it is complete or failed, or ctx ends.
// progress gets every new message.
func WaitRolledOut(ctx context.Context, cs kubernetes.Interface, t Target, progress func(string)) error {
	k := kindOf(t)
	var obj runtime.Object
	switch t.Of() {
	case KindStatefulSet:
		obj = &appsv1.StatefulSet{}
	case KindDaemonSet:
		obj = &appsv1.DaemonSet{}
	default:
		obj = &appsv1.Deployment{}
	}
	lastMsg := ""
	_, err := watchtools.UntilWithSync(ctx, k.listWatch(cs, t), obj, nil, func(e watch.Event) (bool, error) {
		switch e.Type {
		case watch.Deleted:
			return false, fmt.Errorf("%w: %s", ErrDeleted, t.Ref())
		case watch.Added, watch.Modified:
			msg, done, err := k.status(e.Object)
			if err != nil {
				return false, err
			}
			if !done && msg != lastMsg && progress != nil {
				progress(msg)
				lastMsg = msg
			}
			return done, nil
		}
		return false, nil
	})
	if err != nil {
		if errors.Is(err, ErrProgressDeadline) || errors.Is(err, ErrDeleted) {
			return err
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("interrupted while waiting for %s to roll out: %w", t.Ref(), context.Canceled)
		}
		if ctx.Err() != nil || errors.Is(err, watchtools.ErrWatchClosed) || timedOut(err) {
			detail := lastMsg
			if detail == "" {
				detail = "no status seen"
			}
			return fmt.Errorf("%w of %s (last status: %s)", ErrTimeout, t.Ref(), detail)
		}
		return fmt.Errorf("watch %s: %w", t.Ref(), err)
	}
	return nil
}

func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || wait.Interrupted(err)
}
