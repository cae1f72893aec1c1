package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Flagger: a Canary (flagger.app/v1beta1) points at a target Deployment
// NAME whose template is the version under test; Flagger keeps the
// serving version in NAME-primary and copies NAME's template there when an
// analysis passes. The history is the target's ReplicaSets; what serves is
// the primary.
//
// The rollback:
//   - during an analysis (Progressing, Waiting, WaitingPromotion) it fails
//     the analysis at once: it scales the canary to zero (what Flagger's
//     own rollback does, so its pods leave the traffic now) and gives the
//     canary's status the threshold's failed checks, so Flagger rolls back
//     at its next check instead of after threshold × interval, and the
//     primary (the last promoted version) keeps all traffic;
//   - then (and after a bad promotion, straight away) it puts the target
//     revision's template back on NAME with spec.skipAnalysis set, so
//     Flagger promotes it to the primary without a new slow analysis, and
//     restores skipAnalysis when the primary runs it.

// KindCanary is a Flagger Canary.
const KindCanary Kind = "canary"

// SkipAnalysisAnnotation on the Canary keeps its skipAnalysis from before
// the rollback set it, so a resumed run restores the user's value.
const SkipAnalysisAnnotation = annotationPrefix + "skip-analysis-was"

// FlaggerCanary is a Canary as rollback reads it.
type FlaggerCanary struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		TargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"targetRef"`
		SkipAnalysis bool `json:"skipAnalysis,omitempty"`
		Analysis     *struct {
			Interval  string `json:"interval,omitempty"`
			Threshold int    `json:"threshold,omitempty"`
		} `json:"analysis,omitempty"`
	} `json:"spec"`
	Status struct {
		Phase            string `json:"phase,omitempty"`
		FailedChecks     int    `json:"failedChecks,omitempty"`
		CanaryWeight     int    `json:"canaryWeight,omitempty"`
		Iterations       int    `json:"iterations,omitempty"`
		LastAppliedSpec  string `json:"lastAppliedSpec,omitempty"`
		LastPromotedSpec string `json:"lastPromotedSpec,omitempty"`
	} `json:"status"`
}

// Analysing: an analysis is under way (Flagger's rollback webhooks run in
// these phases too).
func (c *FlaggerCanary) Analysing() bool {
	switch c.Status.Phase {
	case "Progressing", "Waiting", "WaitingPromotion":
		return true
	}
	return false
}

// threshold is Flagger's failed-check limit (1 when unset).
func (c *FlaggerCanary) threshold() int {
	if c.Spec.Analysis != nil && c.Spec.Analysis.Threshold > 0 {
		return c.Spec.Analysis.Threshold
	}
	return 1
}

// interval is the analysis interval (Flagger's default 1m).
func (c *FlaggerCanary) interval() time.Duration {
	if c.Spec.Analysis != nil {
		if d, err := time.ParseDuration(c.Spec.Analysis.Interval); err == nil && d > 0 {
			return d
		}
	}
	return time.Minute
}

// FlaggerState is a Canary with its primary Deployment.
type FlaggerState struct {
	Canary  *FlaggerCanary
	Primary *appsv1.Deployment
	// target is the Canary's target Deployment, planned from template.
	target   Target
	template corev1.PodTemplateSpec
}

func canaryPath(ns, name string) string {
	return "/apis/flagger.app/v1beta1/namespaces/" + ns + "/canaries/" + name
}

// GetCanary reads a Flagger Canary.
func GetCanary(ctx context.Context, cs kubernetes.Interface, t Target) (*FlaggerCanary, error) {
	return getCustom[FlaggerCanary](ctx, cs, canaryPath(t.Namespace, t.Name), t, "the Flagger CRDs (canaries.flagger.app)")
}

type canaryKind struct{}

func (canaryKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	c, err := GetCanary(ctx, cs, t)
	if err != nil {
		return nil, err
	}
	ref := c.Spec.TargetRef
	if ref.Kind != "Deployment" {
		return nil, fmt.Errorf("%s targets a %s; rollback handles Canaries of Deployments", t, ref.Kind)
	}
	tt := Target{Namespace: t.Namespace, Name: ref.Name, Kind: KindDeployment}
	h, err := getDeploymentHistory(ctx, cs, tt)
	if err != nil {
		return nil, fmt.Errorf("%s's target: %w", t, err)
	}
	primary, err := cs.AppsV1().Deployments(t.Namespace).Get(ctx, ref.Name+"-primary", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s's primary (deployment/%s-primary; has Flagger initialised the canary?): %w", t, ref.Name, err)
	}
	// What serves is the primary: its template, pods and replicas; the
	// revisions are the target's.
	h.Target, h.Flagger = t, &FlaggerState{Canary: c, Primary: primary, target: tt, template: h.Template}
	h.Deployment, h.Template, h.Selector, h.Paused = primary, primary.Spec.Template, primary.Spec.Selector, false
	return h, nil
}

// primaryOn reports whether the primary's template runs the revision's
// images.
func (f *FlaggerState) primaryOn(r *Revision) bool {
	return strings.Join(images(&f.Primary.Spec.Template), ",") == strings.Join(r.Images, ",")
}

// undoPatch puts the revision's template back on the target Deployment,
// guarded by the target's resourceVersion.
func (canaryKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	b, err := deploymentUndoPatch(to, map[string]any{"op": "test", "path": "/metadata/resourceVersion", "value": h.ResourceVersion})
	return types.JSONPatchType, b, err
}

func (canaryKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error {
	c, err := GetCanary(ctx, cs, t)
	if err != nil {
		return err
	}
	_, err = cs.AppsV1().Deployments(t.Namespace).Patch(ctx, c.Spec.TargetRef.Name, pt, data, o)
	return err
}

func (canaryKind) status(runtime.Object) (string, bool, error)             { return "", true, nil }
func (canaryKind) listWatch(kubernetes.Interface, Target) *cache.ListWatch { return nil }

func (canaryKind) markPatch(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	return deploymentKind{}.markPatch(ctx, cs, ns, object, data)
}

// failAnalysis fails an analysis in progress at once and waits (up to
// twice the analysis interval) until Flagger has rolled it back: the
// primary keeps all traffic. It reports what it did ("" when no analysis
// was in progress).
func failAnalysis(ctx context.Context, cs kubernetes.Interface, h *History, dry DryRun) (string, error) {
	c := h.Flagger.Canary
	if !c.Analysing() || dry == DryRunClient {
		return "", nil
	}
	o := metav1.PatchOptions{FieldManager: "rollback"}
	if dry == DryRunServer {
		o.DryRun = []string{metav1.DryRunAll}
	}
	n := c.threshold()
	patch := fmt.Sprintf(`{"status":{"failedChecks":%d}}`, n)
	if err := patchResource(ctx, cs, canaryPath(h.Target.Namespace, h.Target.Name)+"/status", types.MergePatchType, []byte(patch), o); err != nil {
		return "", fmt.Errorf("fail the analysis of %s: %w", h.Target.Ref(), err)
	}
	if dry != DryRunNone {
		return "analysis would be failed", nil
	}
	// Flagger's own rollback scales the canary to zero; doing it now takes
	// the canary's pods out of the traffic at once instead of at Flagger's
	// next check.
	if _, err := cs.AppsV1().Deployments(h.Target.Namespace).Patch(ctx, c.Spec.TargetRef.Name, types.MergePatchType,
		[]byte(`{"spec":{"replicas":0}}`), o); err != nil {
		return "", fmt.Errorf("scale the canary %s to zero: %w", c.Spec.TargetRef.Name, err)
	}
	start := time.Now()
	wait := 2*c.interval() + 30*time.Second
	for {
		cur, err := GetCanary(ctx, cs, h.Target)
		if err != nil {
			return "", err
		}
		if cur.Status.Phase == "Failed" {
			h.Flagger.Canary = cur
			return fmt.Sprintf("analysis failed at once (canary scaled to zero, %d failed checks set): Flagger rolled back to the primary in %s", n, time.Since(start).Round(100*time.Millisecond)), nil
		}
		if !cur.Analysing() {
			return "", fmt.Errorf("%s left the analysis as %s, not Failed", h.Target.Ref(), cur.Status.Phase)
		}
		if cur.Status.FailedChecks < n {
			// A check of Flagger's own rewrote the status: set it again.
			if err := patchResource(ctx, cs, canaryPath(h.Target.Namespace, h.Target.Name)+"/status", types.MergePatchType, []byte(patch), o); err != nil {
				return "", err
			}
		}
		if time.Since(start) > wait {
			return "", fmt.Errorf("%w: Flagger did not fail the analysis of %s within %s (phase %s); is it running?", ErrTimeout, h.Target.Ref(), wait, cur.Status.Phase)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// skipAnalysis sets the Canary's spec.skipAnalysis (on) and keeps the
// previous value in an annotation, or restores it (off).
func skipAnalysis(ctx context.Context, cs kubernetes.Interface, t Target, on bool, dry DryRun) error {
	c, err := GetCanary(ctx, cs, t)
	if err != nil {
		return err
	}
	was, kept := c.Metadata.Annotations[SkipAnalysisAnnotation]
	var ops []map[string]any
	switch {
	case on && !kept:
		ops = annotationOps(c.Metadata.Annotations, map[string]string{SkipAnalysisAnnotation: fmt.Sprint(c.Spec.SkipAnalysis)})
		ops = append(ops, map[string]any{"op": "add", "path": "/spec/skipAnalysis", "value": true})
	case on:
		ops = []map[string]any{{"op": "add", "path": "/spec/skipAnalysis", "value": true}}
	case kept:
		ops = []map[string]any{
			{"op": "add", "path": "/spec/skipAnalysis", "value": was == "true"},
			{"op": "remove", "path": "/metadata/annotations/" + jsonPointer(SkipAnalysisAnnotation)},
		}
	default:
		return nil
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	o := metav1.PatchOptions{FieldManager: "rollback"}
	if dry == DryRunServer {
		o.DryRun = []string{metav1.DryRunAll}
	}
	if dry == DryRunClient {
		return nil
	}
	return patchResource(ctx, cs, canaryPath(t.Namespace, t.Name), types.JSONPatchType, b, o)
}

// waitPromoted waits until Flagger has promoted the target revision: the
// Canary Succeeded on the target's current spec and the primary rolled out
// on the revision's images. Then it restores skipAnalysis.
func waitPromoted(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, progress func(string)) (string, error) {
	last := ""
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := GetCanary(ctx, cs, h.Target)
		if err != nil {
			return "", err
		}
		primary, err := cs.AppsV1().Deployments(h.Target.Namespace).Get(ctx, c.Spec.TargetRef.Name+"-primary", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		rolled, done, _ := RolloutStatus(primary)
		on := strings.Join(images(&primary.Spec.Template), ",") == strings.Join(to.Images, ",")
		msg := fmt.Sprintf("canary %s: phase %s; primary %s", h.Target.Name, orDash(c.Status.Phase), rolled)
		// Settled: Succeeded after promoting it, or (when the target is
		// the last promoted spec, which Flagger takes for a manual
		// rollback and never analyses) Failed or Initialized with the
		// primary already on it.
		settled := c.Status.Phase == "Succeeded" || c.Status.Phase == "Failed" || c.Status.Phase == "Initialized"
		if settled && on && done {
			if progress != nil {
				progress(msg)
			}
			if err := skipAnalysis(ctx, cs, h.Target, false, DryRunNone); err != nil {
				return "", fmt.Errorf("restore skipAnalysis of %s: %w", h.Target.Ref(), err)
			}
			if c.Status.Phase == "Succeeded" {
				return fmt.Sprintf("Flagger promoted revision %d to %s-primary without an analysis (skipAnalysis restored)", to.Number, c.Spec.TargetRef.Name), nil
			}
			return fmt.Sprintf("%s-primary serves revision %d, the last promoted one (Flagger %s; skipAnalysis restored)", c.Spec.TargetRef.Name, to.Number, c.Status.Phase), nil
		}
		if progress != nil && msg != last {
			progress(msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w of %s to revision %d (last: %s)", ErrTimeout, h.Target.Ref(), to.Number, last)
		case <-tick.C:
		}
	}
}

// prepareCanary fails an analysis in progress and sets skipAnalysis, so
// the template patch that follows is promoted without an analysis. The
// target's resourceVersion is read again (Flagger's rollback scales it),
// its template still the planned one.
func prepareCanary(ctx context.Context, cs kubernetes.Interface, h *History, dry DryRun) error {
	msg, err := failAnalysis(ctx, cs, h, dry)
	if err != nil {
		return err
	}
	h.Prepared = msg
	if err := skipAnalysis(ctx, cs, h.Target, true, dry); err != nil {
		return fmt.Errorf("set skipAnalysis on %s: %w", h.Target.Ref(), err)
	}
	d, err := cs.AppsV1().Deployments(h.Target.Namespace).Get(ctx, h.Flagger.target.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !EqualIgnoreHash(&d.Spec.Template, &h.Flagger.template) {
		return fmt.Errorf("%w: deployment/%s (the target of %s) was modified after the plan was made; run the command again", ErrConflict, d.Name, h.Target.Ref())
	}
	h.ResourceVersion = d.ResourceVersion
	return nil
}

func (canaryKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	how, err := waitPromoted(ctx, s.cs, s.h, s.to, s.say)
	if err != nil {
		return "", err
	}
	out.revision = s.to.Number
	return fmt.Sprintf("%s: %s", s.h.Target.Ref(), how), nil
}

// traits: the primary's config is Flagger's to copy.
func (canaryKind) traits() traits { return traits{} }

// prepare: fail an analysis in progress at once, and have the restored
// template promoted without a new analysis.
func (canaryKind) prepare(ctx context.Context, cs kubernetes.Interface, h *History, _ *Revision, dry DryRun) error {
	return prepareCanary(ctx, cs, h, dry)
}
