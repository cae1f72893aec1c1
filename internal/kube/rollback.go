package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"rollback/internal/progress"
)

// ErrImageMismatch means the rollout finished but the running image is not
// the target revision's.
var ErrImageMismatch = errors.New("running image does not match the target revision")

// RollbackOptions configure Rollback.
type RollbackOptions struct {
	ToRevision int64
	DryRun     DryRun
	Timeout    time.Duration
	// Events receives progress; may be nil.
	Events progress.Func
	Now    func() time.Time

	// ToReplicaSet and FromReplicaSet pin the target and the abandoned
	// revision by ReplicaSet (stable across renumbering), so a resumed run
	// finishes the rollback it started instead of choosing anew.
	ToReplicaSet, FromReplicaSet string
	// Resume: when the Deployment already matches the target (the undo
	// happened before an interruption), still wait, verify and mark.
	Resume bool
}

// ErrAborted means the user declined the confirmation (asked by the CLI
// before anything changes).
var ErrAborted = errors.New("aborted: not confirmed")

// Result is what a rollback did.
type Result struct {
	Plan         *Plan         `json:"plan"`
	DryRun       DryRun        `json:"dryRun"`
	RolledOut    bool          `json:"rolledOut"`
	Images       []string      `json:"images,omitempty"`
	ReadyPods    int           `json:"readyPods"`
	Revision     int64         `json:"revision,omitempty"`
	MarkedBad    string        `json:"markedBad,omitempty"`
	MarkedGood   string        `json:"markedGood,omitempty"`
	Duration     time.Duration `json:"-"`
	DurationSecs float64       `json:"durationSeconds"`
}

// Rollback plans and performs an undo of the Deployment, waits until it
// has rolled out, checks that the running image is the target's, and marks
// the abandoned revision bad and the restored one good.
func Rollback(ctx context.Context, cs kubernetes.Interface, t Target, o RollbackOptions) (*Result, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	if o.DryRun == "" {
		o.DryRun = DryRunNone
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	start := now()
	emit := func(step string, ph progress.Phase, msg string, err error) { o.Events.Emit(now(), step, ph, msg, err) }
	res := &Result{DryRun: o.DryRun}
	finish := func(err error) (*Result, error) {
		res.Duration = now().Sub(start)
		res.DurationSecs = res.Duration.Seconds()
		return res, err
	}
	step := func(name string, fn func() (string, error)) error { return o.Events.Run(now, name, fn) }

	var h *History
	if err := step("plan", func() (string, error) {
		var err error
		if h, err = GetHistory(ctx, cs, t); err != nil {
			return "", err
		}
		to := o.ToRevision
		if o.ToReplicaSet != "" {
			r := h.FindReplicaSet(o.ToReplicaSet)
			if r == nil {
				return "", fmt.Errorf("%w: replicaset %s is no longer in the history of deployment/%s", ErrRevisionNotFound, o.ToReplicaSet, t.Name)
			}
			to = r.Number
		}
		if res.Plan, err = PlanUndo(h, to); err != nil {
			return "", err
		}
		if o.FromReplicaSet != "" {
			if r := h.FindReplicaSet(o.FromReplicaSet); r != nil {
				res.Plan.From = r
			}
		}
		return res.Plan.Summary() + "; " + res.Plan.Reason, nil
	}); err != nil {
		return finish(err)
	}
	p := res.Plan
	if p.NoOp && !o.Resume {
		emit("undo", progress.Done, fmt.Sprintf("skipped rollback (current template already matches revision %d)", p.To.Number), nil)
		return finish(nil)
	}
	// The abandoned revision is marked bad before anything changes, so no
	// interruption from here on can leave a state in which a second run
	// picks it as its target (it would roll forward to the broken version).
	if o.DryRun == DryRunNone && p.From != nil && p.From.ReplicaSet != p.To.ReplicaSet && p.From.Health != Bad {
		if err := step("mark-bad", func() (string, error) {
			reason := fmt.Sprintf("abandoned: rollback to revision %d started at %s", p.To.Number, now().UTC().Format(time.RFC3339))
			if err := Mark(ctx, cs, t.Namespace, p.From.ReplicaSet, Bad, reason, now()); err != nil {
				return "", err
			}
			res.MarkedBad = p.From.ReplicaSet
			return fmt.Sprintf("revision %d (%s) marked bad before the undo", p.From.Number, p.From.ReplicaSet), nil
		}); err != nil {
			return finish(err)
		}
	}
	if err := step("undo", func() (string, error) {
		if p.NoOp {
			return fmt.Sprintf("already at revision %d (resumed)", p.To.Number), nil
		}
		if _, err := Undo(ctx, cs, h, p, o.DryRun); err != nil {
			return "", err
		}
		switch o.DryRun {
		case DryRunClient:
			return "dry run (client): nothing sent", nil
		case DryRunServer:
			return "dry run (server): accepted by the API server, nothing stored", nil
		}
		return fmt.Sprintf("rolled back to revision %d", p.To.Number), nil
	}); err != nil || o.DryRun != DryRunNone {
		return finish(err)
	}

	if err := step("rollout", func() (string, error) {
		wctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		d, err := WaitRolledOut(wctx, cs, t, func(msg string) { emit("rollout", progress.Progress, msg, nil) })
		if err != nil {
			return "", err
		}
		res.RolledOut = true
		if v, ok := d.Annotations[RevisionAnnotation]; ok {
			fmt.Sscanf(v, "%d", &res.Revision)
		}
		return fmt.Sprintf("deployment %q successfully rolled out", d.Name), nil
	}); err != nil {
		return finish(err)
	}

	if err := step("verify-image", func() (string, error) {
		return verifyImages(ctx, cs, t, p, res)
	}); err != nil {
		return finish(err)
	}

	if err := step("mark", func() (string, error) {
		var parts []string
		if p.From != nil && p.From.ReplicaSet != p.To.ReplicaSet {
			reason := fmt.Sprintf("rolled back to revision %d at %s", p.To.Number, now().UTC().Format(time.RFC3339))
			if err := Mark(ctx, cs, t.Namespace, p.From.ReplicaSet, Bad, reason, now()); err != nil {
				return "", err
			}
			res.MarkedBad = p.From.ReplicaSet
			parts = append(parts, fmt.Sprintf("revision %d (%s) marked bad", p.From.Number, p.From.ReplicaSet))
		}
		if err := Mark(ctx, cs, t.Namespace, p.To.ReplicaSet, Good, "restored by rollback and verified running", now()); err != nil {
			return "", err
		}
		res.MarkedGood = p.To.ReplicaSet
		parts = append(parts, fmt.Sprintf("revision %d (%s) marked good", res.Revision, p.To.ReplicaSet))
		return strings.Join(parts, "; "), nil
	}); err != nil {
		return finish(err)
	}
	return finish(nil)
}

// verifyImages checks the Deployment's template and its Ready pods run the
// target revision's images (the runbook's "verify the running image").
func verifyImages(ctx context.Context, cs kubernetes.Interface, t Target, p *Plan, res *Result) (string, error) {
	d, err := cs.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	want := strings.Join(p.To.Images, ",")
	got := make([]string, 0, len(d.Spec.Template.Spec.Containers))
	for _, c := range d.Spec.Template.Spec.Containers {
		got = append(got, c.Image)
	}
	res.Images = got
	if strings.Join(got, ",") != want {
		return "", fmt.Errorf("%w: deployment/%s runs %s, want %s", ErrImageMismatch, t.Name, strings.Join(got, ","), want)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return "", err
	}
	pods, err := cs.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "", err
	}
	for _, pod := range pods.Items {
		if pod.DeletionTimestamp != nil || !PodReady(&pod) {
			continue
		}
		var imgs []string
		for _, c := range pod.Spec.Containers {
			imgs = append(imgs, c.Image)
		}
		if strings.Join(imgs, ",") != want {
			return "", fmt.Errorf("%w: ready pod %s runs %s, want %s", ErrImageMismatch, pod.Name, strings.Join(imgs, ","), want)
		}
		res.ReadyPods++
	}
	return fmt.Sprintf("running image %s on %d ready pods", want, res.ReadyPods), nil
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
