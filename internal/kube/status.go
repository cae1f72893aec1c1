package kube

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// Errors a rollout wait ends with.
var (
	ErrTimeout          = errors.New("timed out waiting for the rollout")
	ErrProgressDeadline = errors.New("deployment exceeded its progress deadline")
	ErrDeleted          = errors.New("deployment was deleted")
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

// WaitRolledOut watches the Deployment (no polling) until RolloutStatus says
// it is complete or failed, or ctx ends. progress gets every new message.
func WaitRolledOut(ctx context.Context, cs kubernetes.Interface, t Target, progress func(string)) (*appsv1.Deployment, error) {
	fs := fields.OneTermEqualSelector("metadata.name", t.Name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fs
			return cs.AppsV1().Deployments(t.Namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fs
			return cs.AppsV1().Deployments(t.Namespace).Watch(ctx, o)
		},
	}
	var last *appsv1.Deployment
	lastMsg := ""
	_, err := watchtools.UntilWithSync(ctx, lw, &appsv1.Deployment{}, nil, func(e watch.Event) (bool, error) {
		switch e.Type {
		case watch.Deleted:
			return false, fmt.Errorf("%w: deployment/%s", ErrDeleted, t.Name)
		case watch.Added, watch.Modified:
			d, ok := e.Object.(*appsv1.Deployment)
			if !ok {
				return false, nil
			}
			last = d
			msg, done, err := RolloutStatus(d)
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
			return last, err
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return last, fmt.Errorf("interrupted while waiting for deployment/%s to roll out: %w", t.Name, context.Canceled)
		}
		if ctx.Err() != nil || errors.Is(err, watchtools.ErrWatchClosed) || timedOut(err) {
			detail := lastMsg
			if detail == "" {
				detail = "no status seen"
			}
			return last, fmt.Errorf("%w of deployment/%s (last status: %s)", ErrTimeout, t.Name, detail)
		}
		return last, fmt.Errorf("watch deployment/%s: %w", t.Name, err)
	}
	return last, nil
}

func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || wait.Interrupted(err)
}
