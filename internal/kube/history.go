// Package kube reads a workload's rollout history from the cluster, plans
// and performs an undo with kubectl's semantics, waits for the rollout with
// kubectl rollout status' conditions, and keeps last-known-good marks as
// annotations on the objects that hold the revisions, so every machine sees
// the same history. The kinds are those kubectl rollout undo handles:
// Deployments (revisions in ReplicaSets), StatefulSets and DaemonSets
// (revisions in ControllerRevisions); see kind.go.
package kube

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Annotations the Deployment controller and kubectl use.
const (
	RevisionAnnotation        = "deployment.kubernetes.io/revision"
	RevisionHistoryAnnotation = "deployment.kubernetes.io/revision-history"
	ChangeCauseAnnotation     = "kubernetes.io/change-cause"
	podTemplateHashLabel      = appsv1.DefaultDeploymentUniqueLabelKey
)

// Annotations rollback keeps on ReplicaSets.
const (
	annotationPrefix       = "rollback/"
	HealthAnnotation       = annotationPrefix + "health"
	HealthReasonAnnotation = annotationPrefix + "health-reason"
	HealthAtAnnotation     = annotationPrefix + "health-marked-at"
)

// Health is a revision's last-known-good mark.
type Health string

// The marks a revision can carry.
const (
	Good    Health = "good"
	Bad     Health = "bad"
	Unknown Health = "unknown"
)

// ParseHealth accepts good, bad or unknown.
func ParseHealth(s string) (Health, error) {
	switch h := Health(s); h {
	case Good, Bad, Unknown:
		return h, nil
	}
	return "", fmt.Errorf("unknown mark %q: expected good, bad or unknown", s)
}

// Target names one workload.
type Target struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Kind is the workload's kind; "" is a Deployment.
	Kind Kind `json:"kind,omitempty"`
	// ColorLabel is a blue/green Service's colour label ("" to find it
	// among ColorLabels).
	ColorLabel string `json:"colorLabel,omitempty"`
}

// Of is the target's kind ("" is a Deployment).
func (t Target) Of() Kind {
	if t.Kind == "" {
		return KindDeployment
	}
	return t.Kind
}

// Ref is KIND/NAME, as kubectl takes it.
func (t Target) Ref() string { return string(t.Of()) + "/" + t.Name }

func (t Target) String() string { return t.Namespace + "/" + t.Ref() }

// Revision is one entry of a workload's rollout history.
type Revision struct {
	Number int64 `json:"revision"`
	// Object holds the revision: a Deployment's ReplicaSet, a StatefulSet's
	// or DaemonSet's ControllerRevision. Marks are kept on it.
	Object string `json:"object"`
	// Colour is a blue/green colour's label value (Object is its
	// Deployment).
	Colour       string    `json:"color,omitempty"`
	Images       []string  `json:"images"`
	ChangeCause  string    `json:"changeCause,omitempty"`
	Created      time.Time `json:"created"`
	Replicas     int32     `json:"replicas"`
	Ready        int32     `json:"readyReplicas"`
	Health       Health    `json:"health"`
	HealthReason string    `json:"healthReason,omitempty"`
	Current      bool      `json:"current"`
	// Stable is an Argo Rollout's stable ReplicaSet.
	Stable bool `json:"stable,omitempty"`

	template    corev1.PodTemplateSpec
	annotations map[string]string  // the ReplicaSet's (kubectl's undo copies them)
	data        []byte             // the ControllerRevision's patch
	podHash     string             // controller-revision-hash of its pods
	deployment  *appsv1.Deployment // a blue/green colour's
	selector    labels.Selector    // a blue/green colour's pods
}

// History is a workload with its revisions, oldest first.
type History struct {
	Target Target
	// Exactly one of these is set, by Target's kind.
	Deployment  *appsv1.Deployment
	StatefulSet *appsv1.StatefulSet
	DaemonSet   *appsv1.DaemonSet
	Service     *corev1.Service // blue/green by selector
	Route       *Route          // blue/green by weights (HTTPRoute, Ingress)
	LB          *LBState        // blue/green at a load balancer's listener
	Rollout     *ArgoRollout    // an Argo Rollout
	Flagger     *FlaggerState   // a Flagger Canary (Deployment is its primary)
	Helm        *HelmState      // a Helm release (Deployment etc. its workload)

	Template        corev1.PodTemplateSpec // the workload's current template
	Selector        *metav1.LabelSelector
	Paused          bool
	ResourceVersion string
	Revisions       []Revision
	// Prepared says what the undo did first, for its kind (a stuck Helm
	// release repaired, Flagger's analysis failed at once), if anything.
	Prepared string
}

// BlueGreen reports whether the workload's rollback is a traffic switch
// between colours.
func (h *History) BlueGreen() bool { return h.Service != nil || h.Route != nil || h.LB != nil }

// Current returns the revision the Deployment's template matches, or nil.
func (h *History) Current() *Revision {
	for i := range h.Revisions {
		if h.Revisions[i].Current {
			return &h.Revisions[i]
		}
	}
	return nil
}

// Find returns the revision with number n, or nil.
func (h *History) Find(n int64) *Revision {
	for i := range h.Revisions {
		if h.Revisions[i].Number == n {
			return &h.Revisions[i]
		}
	}
	return nil
}

// FindObject returns the revision held by the named ReplicaSet or
// ControllerRevision, or nil.
func (h *History) FindObject(name string) *Revision {
	for i := range h.Revisions {
		if h.Revisions[i].Object == name {
			return &h.Revisions[i]
		}
	}
	return nil
}

// ErrNotFound wraps a missing workload.
var ErrNotFound = fmt.Errorf("not found")

// GetHistory reads the workload and the objects holding its revisions.
func GetHistory(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	return kindOf(t).history(ctx, cs, t)
}

func notFound(t Target, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s %q in namespace %q: %w; check the name and -n/--namespace (kubectl get %ss -n %s)",
			t.Of(), t.Name, t.Namespace, ErrNotFound, t.Of(), t.Namespace)
	}
	return fmt.Errorf("get %s: %w", t, err)
}

func getDeploymentHistory(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	dep, err := cs.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return nil, notFound(t, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s has an invalid selector: %w", t, err)
	}
	list, err := cs.AppsV1().ReplicaSets(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list replicasets of %s: %w", t, err)
	}
	return buildHistory(dep, list.Items), nil
}

// DeploymentHistories reads the histories of every Deployment in ns that
// sel matches with two LISTs (the Deployments, and all the namespace's
// ReplicaSets grouped by owner), keyed by Target.String(). Reading each
// Deployment's on its own costs a ReplicaSet LIST each, which the API
// server answers by reading the whole namespace's (N² over a wide
// rollback).
func DeploymentHistories(ctx context.Context, cs kubernetes.Interface, ns string, sel labels.Selector) (map[string]*History, error) {
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list replicasets: %w", err)
	}
	byOwner := map[types.UID][]appsv1.ReplicaSet{}
	for _, rs := range rss.Items {
		if ref := metav1.GetControllerOf(&rs); ref != nil {
			byOwner[ref.UID] = append(byOwner[ref.UID], rs)
		}
	}
	out := make(map[string]*History, len(deps.Items))
	for i := range deps.Items {
		dep := &deps.Items[i]
		if _, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector); err != nil {
			continue // its own read says why
		}
		h := buildHistory(dep, byOwner[dep.UID])
		out[h.Target.String()] = h
	}
	return out, nil
}

// rereadHistory reads a history again after a rollout. A Deployment's is
// read by name (the Deployment and each ReplicaSet the earlier read
// found: a GET each), not with a ReplicaSet LIST, which the API server
// answers by reading every ReplicaSet of the namespace; when none of
// them is the current revision (the rollout made a new one), it is read
// in full.
func rereadHistory(ctx context.Context, cs kubernetes.Interface, before *History) (*History, error) {
	t := before.Target
	if t.Kind != KindDeployment || len(before.Revisions) == 0 {
		return GetHistory(ctx, cs, t)
	}
	dep, err := cs.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return nil, notFound(t, err)
	}
	var rss []appsv1.ReplicaSet
	for _, r := range before.Revisions {
		rs, err := cs.AppsV1().ReplicaSets(t.Namespace).Get(ctx, r.Object, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue // cleaned up by revisionHistoryLimit
		case err != nil:
			return nil, fmt.Errorf("get replicaset %s of %s: %w", r.Object, t, err)
		}
		rss = append(rss, *rs)
	}
	if h := buildHistory(dep, rss); h.Current() != nil {
		return h, nil
	}
	return GetHistory(ctx, cs, t)
}

func buildHistory(dep *appsv1.Deployment, rss []appsv1.ReplicaSet) *History {
	h := &History{Target: Target{Namespace: dep.Namespace, Name: dep.Name, Kind: KindDeployment}, Deployment: dep,
		Template: dep.Spec.Template, Selector: dep.Spec.Selector, Paused: dep.Spec.Paused, ResourceVersion: dep.ResourceVersion}
	for i := range rss {
		rs := &rss[i]
		if ref := metav1.GetControllerOf(rs); ref == nil || ref.UID != dep.UID {
			continue
		}
		n, err := strconv.ParseInt(rs.Annotations[RevisionAnnotation], 10, 64)
		if err != nil {
			continue // not yet numbered by the controller
		}
		r := Revision{
			Number:       n,
			Object:       rs.Name,
			Images:       images(&rs.Spec.Template),
			ChangeCause:  rs.Annotations[ChangeCauseAnnotation],
			Created:      rs.CreationTimestamp.Time,
			Replicas:     rs.Status.Replicas,
			Ready:        rs.Status.ReadyReplicas,
			Health:       Unknown,
			HealthReason: rs.Annotations[HealthReasonAnnotation],
			Current:      EqualIgnoreHash(&rs.Spec.Template, &dep.Spec.Template),
			template:     rs.Spec.Template,
			annotations:  rs.Annotations,
			podHash:      rs.Labels[podTemplateHashLabel],
		}
		if hv, err := ParseHealth(rs.Annotations[HealthAnnotation]); err == nil {
			r.Health = hv
		}
		h.Revisions = append(h.Revisions, r)
	}
	h.order()
	return h
}

// order sorts the revisions oldest first and leaves one current.
func (h *History) order() {
	sort.Slice(h.Revisions, func(i, j int) bool { return h.Revisions[i].Number < h.Revisions[j].Number })
	// Only one revision is current: if several templates match (possible
	// after manual edits), the highest revision wins, as in the controller.
	seen := false
	for i := len(h.Revisions) - 1; i >= 0; i-- {
		if h.Revisions[i].Current {
			if seen {
				h.Revisions[i].Current = false
			}
			seen = true
		}
	}
}

func images(t *corev1.PodTemplateSpec) []string {
	out := make([]string, 0, len(t.Spec.Containers))
	for _, c := range t.Spec.Containers {
		out = append(out, c.Image)
	}
	return out
}

// EqualIgnoreHash reports whether two pod templates are equal apart from
// the pod-template-hash label, as the Deployment controller compares them.
func EqualIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a1, b1 := a.DeepCopy(), b.DeepCopy()
	delete(a1.Labels, podTemplateHashLabel)
	delete(b1.Labels, podTemplateHashLabel)
	return apiequality.Semantic.DeepEqual(a1, b1)
}

// Split is what a canary watch compares: the images under test and the
// images serving beside them. An Argo Rollout in progress splits between
// its current and stable ReplicaSets, a Flagger canary between its target
// and its primary; otherwise the current revision is the canary and the
// newest older one the baseline. Either may be nil.
func (h *History) Split() (canary, baseline []string) {
	cur := h.Current()
	if cur != nil {
		canary = cur.Images
	}
	switch {
	case h.Rollout != nil && h.Rollout.InProgress():
		for _, r := range h.Revisions {
			if r.Stable {
				return canary, r.Images
			}
		}
	case h.Flagger != nil:
		return canary, images(&h.Flagger.Primary.Spec.Template)
	}
	if cur == nil {
		return nil, nil
	}
	for i := len(h.Revisions) - 1; i >= 0; i-- {
		if r := h.Revisions[i]; r.Number < cur.Number && len(r.Images) > 0 {
			return canary, r.Images
		}
	}
	return canary, nil
}
