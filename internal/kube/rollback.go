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

	"github.com/rollback-dev/rollback/internal/progress"
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

	// ToObject and FromObject pin the target and the abandoned revision by
	// the object holding it (ReplicaSet or ControllerRevision, stable
	// across renumbering), so a resumed run finishes the rollback it
	// started instead of choosing anew.
	ToObject, FromObject string
	// History, when not nil, is the workload's history read beforehand
	// (a wide rollback reads all of a namespace's with one LIST): the plan
	// step uses it instead of reading it again. The undo's generation
	// guard still refuses a workload that changed since.
	History *History
	// Resume: when the workload already matches the target (the undo
	// happened before an interruption), still wait, verify and mark.
	Resume bool
	// Settling, if set, is called once the undo is applied and the wait
	// for it to take effect begins (a caller bounding its API work, as a
	// wide rollback does, frees a slot: waiting costs the API server
	// little).
	Settling func()
}

// ErrAborted means the user declined the confirmation (asked by the CLI
// before anything changes).
var ErrAborted = errors.New("aborted: not confirmed")

// Result is what a rollback did.
type Result struct {
	Plan       *Plan    `json:"plan"`
	DryRun     DryRun   `json:"dryRun"`
	RolledOut  bool     `json:"rolledOut"`
	Images     []string `json:"images,omitempty"`
	ReadyPods  int      `json:"readyPods"`
	Revision   int64    `json:"revision,omitempty"`
	MarkedBad  string   `json:"markedBad,omitempty"`
	MarkedGood string   `json:"markedGood,omitempty"`
	// Started is when the rollback began (pod checks count restarts since).
	Started      time.Time     `json:"started"`
	Duration     time.Duration `json:"-"`
	DurationSecs float64       `json:"durationSeconds"`
}

// Rollback plans and performs an undo of the workload, waits until it
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
	res := &Result{DryRun: o.DryRun, Started: start}
	finish := func(err error) (*Result, error) {
		res.Duration = now().Sub(start)
		res.DurationSecs = res.Duration.Seconds()
		return res, err
	}
	step := func(name string, fn func() (string, error)) error { return o.Events.Run(now, name, fn) }

	var h *History
	if err := step(StepPlan, func() (string, error) {
		var err error
		if o.History != nil && o.History.Target == t {
			h = o.History
		} else if h, err = GetHistory(ctx, cs, t); err != nil {
			return "", err
		}
		to := o.ToRevision
		if o.ToObject != "" {
			r := h.FindObject(o.ToObject)
			if r == nil {
				return "", fmt.Errorf("%w: %s is no longer in the history of %s", ErrRevisionNotFound, o.ToObject, t.Ref())
			}
			to = r.Number
		}
		if res.Plan, err = PlanUndo(h, to); err != nil {
			return "", err
		}
		if o.FromObject != "" {
			if r := h.FindObject(o.FromObject); r != nil {
				res.Plan.From = r
			}
		}
		return res.Plan.Summary() + "; " + res.Plan.Reason, nil
	}); err != nil {
		return finish(err)
	}
	p := res.Plan
	if p.NoOp && !o.Resume {
		emit(StepUndo, progress.Done, fmt.Sprintf("skipped rollback (current template already matches revision %d)", p.To.Number), nil)
		return finish(nil)
	}
	// The abandoned revision is marked bad before anything changes, so no
	// interruption from here on can leave a state in which a second run
	// picks it as its target (it would roll forward to the broken version).
	if o.DryRun == DryRunNone && p.From != nil && p.From.Object != p.To.Object && p.From.Health != Bad {
		if err := step(StepMarkBad, func() (string, error) {
			reason := fmt.Sprintf("abandoned: rollback to revision %d started at %s", p.To.Number, now().UTC().Format(time.RFC3339))
			if err := Mark(ctx, cs, t, p.From.Object, Bad, reason, now()); err != nil {
				return "", err
			}
			res.MarkedBad = p.From.Object
			return fmt.Sprintf("revision %d (%s) marked bad before the undo", p.From.Number, p.From.Object), nil
		}); err != nil {
			return finish(err)
		}
	}
	// Config is not part of the revision: the target's ConfigMaps and
	// Secrets are restored before the undo restarts the pods.
	if o.DryRun == DryRunNone && h.configured() && p.From != nil && p.From.Object != p.To.Object {
		if err := step(StepConfig, func() (string, error) {
			lines, err := RestoreConfig(ctx, cs, t.Namespace, p.From, p.To)
			if err != nil {
				return "", err
			}
			if len(lines) == 0 {
				return "the revision mounts no ConfigMap or Secret", nil
			}
			return strings.Join(lines, "; "), nil
		}); err != nil {
			return finish(err)
		}
	}
	if err := step(StepUndo, func() (string, error) {
		if p.NoOp {
			return fmt.Sprintf("already at revision %d (resumed)", p.To.Number), nil
		}
		if err := Undo(ctx, cs, h, p, o.DryRun); err != nil {
			return "", err
		}
		switch o.DryRun {
		case DryRunClient:
			return "dry run (client): nothing sent", nil
		case DryRunServer:
			return "dry run (server): accepted by the API server, nothing stored", nil
		}
		if h.Prepared != "" {
			return fmt.Sprintf("%s; rolled back to revision %d", h.Prepared, p.To.Number), nil
		}
		return fmt.Sprintf("rolled back to revision %d", p.To.Number), nil
	}); err != nil || o.DryRun != DryRunNone {
		return finish(err)
	}

	var after *settled
	if o.Settling != nil {
		o.Settling()
	}
	if err := step(StepRollout, func() (string, error) {
		wctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		after = &settled{good: p.To.Object}
		msg, err := kindOf(t).settle(wctx, &settling{cs: cs, h: h, to: p.To, say: func(msg string) { emit(StepRollout, progress.Progress, msg, nil) }}, after)
		if err != nil {
			return "", err
		}
		res.RolledOut, res.Revision = true, after.revision
		if after.readyPods > 0 {
			res.ReadyPods = after.readyPods
		}
		return msg, nil
	}); err != nil {
		return finish(err)
	}
	tr := kindOf(t).traits()

	if err := step(StepVerifyImage, func() (string, error) {
		if tr.noImages {
			return fmt.Sprintf("no images at a load balancer: target group %s serves with %d healthy target(s)", p.To.Colour, res.ReadyPods), nil
		}
		return verifyImages(ctx, cs, t, p, res, after.history)
	}); err != nil {
		return finish(err)
	}

	if err := step(StepMark, func() (string, error) {
		var parts []string
		// A plain workload's revision marked bad before the undo by this
		// run keeps its mark: not patched twice (each patch of a
		// ReplicaSet is work for the controllers too, which counts when
		// hundreds roll back at once). Helm rewrites its release Secrets
		// in the rollback, so there the mark is set again.
		if p.From != nil && p.From.Object != p.To.Object && (!tr.keepsBadMark || res.MarkedBad != p.From.Object) {
			reason := fmt.Sprintf("rolled back to revision %d at %s", p.To.Number, now().UTC().Format(time.RFC3339))
			if err := Mark(ctx, cs, t, p.From.Object, Bad, reason, now()); err != nil {
				return "", err
			}
			res.MarkedBad = p.From.Object
		}
		if res.MarkedBad != "" {
			parts = append(parts, fmt.Sprintf("revision %d (%s) marked bad", p.From.Number, p.From.Object))
		}
		if err := Mark(ctx, cs, t, after.good, Good, "restored by rollback and verified running", now()); err != nil {
			return "", err
		}
		res.MarkedGood = after.good
		parts = append(parts, fmt.Sprintf("revision %d (%s) marked good", res.Revision, after.good))
		return strings.Join(parts, "; "), nil
	}); err != nil {
		return finish(err)
	}
	return finish(nil)
}

// configured: the kind's revisions are pod templates whose ConfigMaps and
// Secrets rollback keeps.
func (h *History) configured() bool { return kindOf(h.Target).traits().restoresConfig }

// verifyImages checks the workload's template and its Ready pods run the
// target revision's images (the runbook's "verify the running image").
// verifyImages checks the running template and ready pods against the
// target; h is the history read after the rollout (nil: read it now).
func verifyImages(ctx context.Context, cs kubernetes.Interface, t Target, p *Plan, res *Result, h *History) (string, error) {
	if h == nil {
		var err error
		if h, err = GetHistory(ctx, cs, t); err != nil {
			return "", err
		}
	}
	want := strings.Join(p.To.Images, ",")
	res.Images = images(&h.Template)
	if got := strings.Join(res.Images, ","); got != want {
		return "", fmt.Errorf("%w: %s runs %s, want %s", ErrImageMismatch, t.Ref(), got, want)
	}
	pods, err := ListPods(ctx, cs, h)
	if err != nil {
		return "", err
	}
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil || !PodReady(&pod) {
			continue
		}
		if imgs := strings.Join(images(&corev1.PodTemplateSpec{Spec: pod.Spec}), ","); imgs != want {
			return "", fmt.Errorf("%w: ready pod %s runs %s, want %s", ErrImageMismatch, pod.Name, imgs, want)
		}
		res.ReadyPods++
	}
	return fmt.Sprintf("running image %s on %d ready pods", want, res.ReadyPods), nil
}

// ListPods lists the workload's pods (by its selector).
func ListPods(ctx context.Context, cs kubernetes.Interface, h *History) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(h.Selector)
	if err != nil {
		return nil, fmt.Errorf("%s has an invalid selector: %w", h.Target, err)
	}
	pods, err := cs.CoreV1().Pods(h.Target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", h.Target, err)
	}
	return pods.Items, nil
}

// Desired is how many pods the workload wants: its replicas, or for a
// DaemonSet the nodes it is scheduled to.
func (h *History) Desired() int32 {
	switch {
	case h.Deployment != nil && h.Deployment.Spec.Replicas != nil:
		return *h.Deployment.Spec.Replicas
	case h.StatefulSet != nil && h.StatefulSet.Spec.Replicas != nil:
		return *h.StatefulSet.Spec.Replicas
	case h.DaemonSet != nil:
		return h.DaemonSet.Status.DesiredNumberScheduled
	case h.BlueGreen():
		if c := h.Current(); c != nil && c.deployment != nil && c.deployment.Spec.Replicas != nil {
			return *c.deployment.Spec.Replicas
		}
	}
	return 1
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
