// Package kube reads a Deployment's rollout history from the cluster, plans
// and performs an undo with kubectl's semantics, waits for the rollout with
// kubectl rollout status' conditions, and keeps last-known-good marks as
// annotations on the ReplicaSets, so every machine sees the same history.
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

// Target names one Deployment.
type Target struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (t Target) String() string { return t.Namespace + "/deployment/" + t.Name }

// Revision is one entry of a Deployment's rollout history.
type Revision struct {
	Number       int64     `json:"revision"`
	ReplicaSet   string    `json:"replicaSet"`
	Images       []string  `json:"images"`
	ChangeCause  string    `json:"changeCause,omitempty"`
	Created      time.Time `json:"created"`
	Replicas     int32     `json:"replicas"`
	Ready        int32     `json:"readyReplicas"`
	Health       Health    `json:"health"`
	HealthReason string    `json:"healthReason,omitempty"`
	Current      bool      `json:"current"`

	template corev1.PodTemplateSpec
	rs       *appsv1.ReplicaSet
}

// History is a Deployment with its revisions, oldest first.
type History struct {
	Deployment *appsv1.Deployment
	Revisions  []Revision
}

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

// FindReplicaSet returns the revision of the named ReplicaSet, or nil.
func (h *History) FindReplicaSet(name string) *Revision {
	for i := range h.Revisions {
		if h.Revisions[i].ReplicaSet == name {
			return &h.Revisions[i]
		}
	}
	return nil
}

// ErrNotFound wraps a missing Deployment.
var ErrNotFound = fmt.Errorf("not found")

// GetHistory reads the Deployment and the ReplicaSets it controls.
func GetHistory(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	dep, err := cs.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("deployment %q in namespace %q: %w; check the name and -n/--namespace (kubectl get deployments -n %s)",
			t.Name, t.Namespace, ErrNotFound, t.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("get deployment %s: %w", t, err)
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

func buildHistory(dep *appsv1.Deployment, rss []appsv1.ReplicaSet) *History {
	h := &History{Deployment: dep}
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
			ReplicaSet:   rs.Name,
			Images:       images(&rs.Spec.Template),
			ChangeCause:  rs.Annotations[ChangeCauseAnnotation],
			Created:      rs.CreationTimestamp.Time,
			Replicas:     rs.Status.Replicas,
			Ready:        rs.Status.ReadyReplicas,
			Health:       Unknown,
			HealthReason: rs.Annotations[HealthReasonAnnotation],
			Current:      EqualIgnoreHash(&rs.Spec.Template, &dep.Spec.Template),
			template:     rs.Spec.Template,
			rs:           rs,
		}
		if hv, err := ParseHealth(rs.Annotations[HealthAnnotation]); err == nil {
			r.Health = hv
		}
		h.Revisions = append(h.Revisions, r)
	}
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
	return h
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
