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
	// Resume: when the workload already matches the target (the undo
	// happened before an interruption), still wait, verify and mark.
	Resume bool
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
		if h, err = GetHistory(ctx, cs, t); err != nil {
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
		if h.Helm != nil && h.Helm.Repaired != "" {
			return fmt.Sprintf("%s; rolled back to revision %d", h.Helm.Repaired, p.To.Number), nil
		}
		if h.Flagger != nil && h.Flagger.Failed != "" {
			return fmt.Sprintf("%s; rolled back to revision %d", h.Flagger.Failed, p.To.Number), nil
		}
		return fmt.Sprintf("rolled back to revision %d", p.To.Number), nil
	}); err != nil || o.DryRun != DryRunNone {
		return finish(err)
	}

	goodObject := p.To.Object // marked good once verified
	var after *History        // read once the workload rolled out
	if err := step(StepRollout, func() (string, error) {
		wctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		say := func(msg string) { emit(StepRollout, progress.Progress, msg, nil) }
		replaced := ""
		if h.onDelete() {
			// updateStrategy OnDelete: the controller changes no pod by
			// itself; the rollback replaces them, one at a time.
			n, err := settlePods(wctx, cs, h, p.To, settleOnDelete, say)
			if err != nil {
				return "", err
			}
			replaced = fmt.Sprintf("; %d pod(s) replaced (updateStrategy OnDelete)", n)
		}
		if h.Helm != nil {
			// Helm's rollback waited for its resources (--wait).
			n, msg, err := waitHelm(wctx, h, p.To)
			if err != nil {
				return "", err
			}
			// Helm's --wait counts ready pods of the new ReplicaSet; the
			// old ones may still serve. kubectl's conditions wait them out.
			if wt := h.Helm.Workload; wt != nil {
				if err := WaitRolledOut(wctx, cs, *wt, say); err != nil {
					return "", err
				}
			}
			res.RolledOut, res.Revision = true, n
			goodObject = HelmObject(t.Name, n) // the rollback's own revision
			return msg, nil
		}
		if h.Flagger != nil {
			how, err := waitPromoted(wctx, cs, h, p.To, say)
			if err != nil {
				return "", err
			}
			res.RolledOut, res.Revision = true, p.To.Number
			return fmt.Sprintf("%s: %s", t.Ref(), how), nil
		}
		if h.Rollout != nil {
			how, err := waitRolloutHealthy(wctx, cs, h, p.To, say)
			if err != nil {
				return "", err
			}
			res.RolledOut, res.Revision = true, p.To.Number
			return fmt.Sprintf("%s is Healthy on revision %d (%s)", t.Ref(), p.To.Number, how), nil
		}
		if h.LB != nil {
			n, err := waitForwarded(wctx, h, p.To, say)
			if err != nil {
				return "", err
			}
			res.RolledOut, res.ReadyPods, res.Revision = true, n, int64(len(h.Revisions))
			return fmt.Sprintf("%s: the listener forwards to %s, %d healthy target(s)", t.Ref(), p.To.Colour, n), nil
		}
		if h.BlueGreen() {
			// Blue/green: the traffic has moved when the Service's
			// EndpointSlices hold only the standby's pods, or the route's
			// weights are all on it.
			if err := WaitSwitched(wctx, cs, h, p.To, say); err != nil {
				return "", err
			}
			res.RolledOut = true
			res.Revision = int64(len(h.Revisions))
			if h.Route != nil {
				return fmt.Sprintf("%s: all traffic on %s", t.Ref(), p.To.Colour), nil
			}
			return fmt.Sprintf("%s: every endpoint on %s", t.Ref(), p.To.Colour), nil
		}
		if h.StatefulSet != nil && !h.onDelete() {
			// A StatefulSet's controller never replaces a pod stuck on
			// the broken revision (kubernetes#67250): it waits for it to
			// become Ready first. The rollback replaces them.
			n, err := settlePods(wctx, cs, h, p.To, settleStuck, say)
			if err != nil {
				return "", err
			}
			if n > 0 {
				replaced = fmt.Sprintf("; %d pod(s) stuck on the broken revision replaced (the StatefulSet controller waits for them to become Ready: kubernetes#67250)", n)
			}
		}
		if err := WaitRolledOut(wctx, cs, t, say); err != nil {
			return "", err
		}
		if h.DaemonSet != nil && !h.onDelete() {
			if _, err := settlePods(wctx, cs, h, p.To, settleWait, say); err != nil {
				return "", err
			}
		}
		res.RolledOut = true
		var err error
		after, err = GetHistory(ctx, cs, t)
		if err != nil {
			return "", err
		}
		if cur := after.Current(); cur != nil {
			res.Revision = cur.Number
		}
		return fmt.Sprintf("%s successfully rolled out%s", t.Ref(), replaced), nil
	}); err != nil {
		return finish(err)
	}

	if err := step(StepVerifyImage, func() (string, error) {
		if h.LB != nil {
			return fmt.Sprintf("no images at a load balancer: target group %s serves with %d healthy target(s)", p.To.Colour, res.ReadyPods), nil
		}
		return verifyImages(ctx, cs, t, p, res, after)
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
		plain := (h.Deployment != nil || h.StatefulSet != nil || h.DaemonSet != nil) && h.Helm == nil && h.Flagger == nil && h.Rollout == nil
		if p.From != nil && p.From.Object != p.To.Object && (!plain || res.MarkedBad != p.From.Object) {
			reason := fmt.Sprintf("rolled back to revision %d at %s", p.To.Number, now().UTC().Format(time.RFC3339))
			if err := Mark(ctx, cs, t, p.From.Object, Bad, reason, now()); err != nil {
				return "", err
			}
			res.MarkedBad = p.From.Object
		}
		if res.MarkedBad != "" {
			parts = append(parts, fmt.Sprintf("revision %d (%s) marked bad", p.From.Number, p.From.Object))
		}
		if err := Mark(ctx, cs, t, goodObject, Good, "restored by rollback and verified running", now()); err != nil {
			return "", err
		}
		res.MarkedGood = goodObject
		parts = append(parts, fmt.Sprintf("revision %d (%s) marked good", res.Revision, goodObject))
		return strings.Join(parts, "; "), nil
	}); err != nil {
		return finish(err)
	}
	return finish(nil)
}

// configured: the kind's revisions are pod templates whose ConfigMaps and
// Secrets rollback keeps (not blue/green colours, each with its own, nor
// Helm, which renders its own, nor a load balancer).
func (h *History) configured() bool {
	return (h.Deployment != nil || h.StatefulSet != nil || h.DaemonSet != nil || h.Rollout != nil) && h.Flagger == nil && h.Helm == nil
}

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
