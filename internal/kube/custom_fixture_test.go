package kube_test

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/kube/kubetest"
)

var rollouts = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

// A Rollout paused mid-canary (v2 at its first step over the stable v1),
// as the controller leaves it.
const midCanary = `apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop, uid: ro-uid, generation: 2, resourceVersion: "9"}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "r/web:v2"}]}
  strategy: {canary: {steps: [{setWeight: 20}, {pause: {}}]}}
status: {observedGeneration: "2", currentPodHash: h2, stableRS: h1, phase: Paused}
`

func argoRS(name, hash, rev, img string) *appsv1.ReplicaSet {
	tpl := kubetest.Template("web", img)
	tpl.Labels["rollouts-pod-template-hash"] = hash // as Argo's controller sets it
	return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
		Labels:          map[string]string{"app": "web", "rollouts-pod-template-hash": hash},
		Annotations:     map[string]string{"rollout.argoproj.io/revision": rev},
		OwnerReferences: []metav1.OwnerReference{{UID: "ro-uid", Controller: ptr.To(true), Kind: "Rollout", Name: "web"}}},
		Spec: appsv1.ReplicaSetSpec{Template: tpl}}
}

// Mid-canary, the plan is the stable ReplicaSet and the undo is Argo's
// abort (status.abort) then the stable template back, without Argo's hash
// label, guarded by the generation — read and patched through the dynamic
// client, on fixtures.
func TestArgoRolloutUndoOnFixtures(t *testing.T) {
	ctx := context.Background()
	typed := fake.NewClientset(argoRS("web-h1", "h1", "1", "r/web:v1"), argoRS("web-h2", "h2", "2", "r/web:v2"))
	cs, dyn := kubetest.Clients(t, typed, midCanary)
	tgt := kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindRollout}
	h, err := kube.GetHistory(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kube.PlanUndo(h, 0)
	if err != nil || p.To.Object != "web-h1" || p.From.Object != "web-h2" {
		t.Fatalf("plan %+v, %v; want web-h2 -> web-h1", p, err)
	}
	if err := kube.Undo(ctx, cs, h, p, kube.DryRunNone); err != nil {
		t.Fatal(err)
	}
	var patches []string
	for _, a := range dyn.Actions() {
		if pa, ok := a.(k8stesting.PatchAction); ok {
			patches = append(patches, pa.GetSubresource()+" "+string(pa.GetPatch()))
		}
	}
	if len(patches) != 2 || !strings.HasPrefix(patches[0], `status {"status":{"abort":true}}`) ||
		!strings.Contains(patches[1], `"op":"test","path":"/metadata/generation","value":2`) {
		t.Errorf("patches %q: want the abort, then the template guarded by the generation", patches)
	}
	ro, err := dyn.Resource(rollouts).Namespace("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	img, _, _ := unstructured.NestedSlice(ro.Object, "spec", "template", "spec", "containers")
	labels, _, _ := unstructured.NestedStringMap(ro.Object, "spec", "template", "metadata", "labels")
	abort, _, _ := unstructured.NestedBool(ro.Object, "status", "abort")
	if len(img) != 1 || img[0].(map[string]any)["image"] != "r/web:v1" || labels["rollouts-pod-template-hash"] != "" || !abort {
		t.Errorf("after the undo: containers %v, labels %v, abort %v", img, labels, abort)
	}
}

// A 403 reading a Rollout through the dynamic client is the refusal with
// the rule to grant, never "not installed" or "not found".
func TestArgoRolloutForbiddenOnFixtures(t *testing.T) {
	cs, dyn := kubetest.Clients(t, fake.NewClientset(), midCanary)
	dyn.PrependReactor("get", "rollouts", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "argoproj.io", Resource: "rollouts"}, "web", nil)
	})
	_, err := kube.GetHistory(context.Background(), cs, kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindRollout})
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "grant get and patch on rollouts.argoproj.io in namespace shop") {
		t.Errorf("got %v", err)
	}
}

// A Rollout that is not there is "not found" with what to check; Argo's
// CRDs missing is said as such.
func TestArgoRolloutMissingOnFixtures(t *testing.T) {
	cs, dyn := kubetest.Clients(t, fake.NewClientset())
	_, err := kube.GetHistory(context.Background(), cs, kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindRollout})
	if err == nil || !strings.Contains(err.Error(), "check the name") {
		t.Errorf("missing Rollout: %v", err)
	}
	dyn.PrependReactor("get", "rollouts", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "argoproj.io", Resource: "rollouts"}, "")
	})
	_, err = kube.GetHistory(context.Background(), cs, kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindRollout})
	if err == nil || !strings.Contains(err.Error(), "are not installed") {
		t.Errorf("missing CRDs: %v", err)
	}
}

var canaries = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}

// A Flagger Canary mid-analysis: the undo fails the analysis at once (the
// threshold's failed checks in its status, the canary scaled to zero)
// instead of waiting for Flagger's own checks, then sets skipAnalysis and
// puts v1 back on the target. A stand-in Flagger runs during it: it moves
// the Canary to Failed only a few reads after the failed checks land, and
// its own check first rewrites failedChecks lower once.
func TestFlaggerFailsTheAnalysisOnFixtures(t *testing.T) {
	ctx := context.Background()
	typed := kubetest.Deployment("shop", "web") // the target: v2 over v1
	primary := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web-primary", Namespace: "shop"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web-primary"}},
			Template: kubetest.Template("web-primary", "r/web:v1")}}
	if err := typed.Tracker().Add(primary); err != nil {
		t.Fatal(err)
	}
	cs, dyn := kubetest.Clients(t, typed, `apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web, namespace: shop, resourceVersion: "7"}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  analysis: {interval: 2s, threshold: 3}
status: {phase: Progressing, failedChecks: 0, canaryWeight: 10}
`)
	reads, rewrote := 0, false
	dyn.PrependReactor("get", "canaries", func(k8stesting.Action) (bool, runtime.Object, error) {
		o, err := dyn.Tracker().Get(canaries, "shop", "web")
		if err != nil {
			return false, nil, nil
		}
		u := o.(*unstructured.Unstructured).DeepCopy()
		failed, _, _ := unstructured.NestedInt64(u.Object, "status", "failedChecks")
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		switch {
		case failed >= 3 && !rewrote:
			rewrote = true // Flagger's own check writes its count over ours
			_ = unstructured.SetNestedField(u.Object, int64(1), "status", "failedChecks")
			_ = dyn.Tracker().Update(canaries, u, "shop")
		case failed >= 3 && phase == "Progressing":
			if reads++; reads >= 3 {
				_ = unstructured.SetNestedField(u.Object, "Failed", "status", "phase")
				_ = dyn.Tracker().Update(canaries, u, "shop")
			}
		}
		return false, nil, nil
	})
	tgt := kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindCanary}
	h, err := kube.GetHistory(ctx, cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kube.PlanUndo(h, 0)
	if err != nil || p.To.Object != "web-1" {
		t.Fatalf("plan %+v, %v", p, err)
	}
	if err := kube.Undo(ctx, cs, h, p, kube.DryRunNone); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.Prepared, "analysis failed at once (canary scaled to zero, 3 failed checks set)") || !rewrote {
		t.Errorf("prepared %q (Flagger's rewrite seen: %v)", h.Prepared, rewrote)
	}
	c, _ := dyn.Resource(canaries).Namespace("shop").Get(ctx, "web", metav1.GetOptions{})
	skip, _, _ := unstructured.NestedBool(c.Object, "spec", "skipAnalysis")
	if !skip || c.GetAnnotations()[kube.SkipAnalysisAnnotation] != "false" {
		t.Errorf("skipAnalysis %v, kept %q", skip, c.GetAnnotations()[kube.SkipAnalysisAnnotation])
	}
	d, _ := typed.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
	if *d.Spec.Replicas != 0 || d.Spec.Template.Spec.Containers[0].Image != "r/web:v1" {
		t.Errorf("target: %d replicas on %s; want scaled to zero, v1 back", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image)
	}
}
