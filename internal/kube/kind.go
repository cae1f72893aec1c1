package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/rollback-dev/rollback/internal/kinds"
)

// Kind is a workload kind kubectl rollout undo handles.
type Kind string

// The kinds.
const (
	KindDeployment  Kind = "deployment"
	KindStatefulSet Kind = "statefulset"
	KindDaemonSet   Kind = "daemonset"
	// KindService is a blue/green Service: its rollback switches the
	// selector's colour (see kind_service.go).
	KindService Kind = "service"
	// KindHTTPRoute is a Gateway API HTTPRoute whose rules weigh two
	// colour Services; KindIngress an AWS Load Balancer Controller
	// Ingress whose forward actions do (see kind_route.go).
	KindHTTPRoute Kind = "httproute"
	KindIngress   Kind = "ingress"
)

// ParseKind accepts kubectl's spellings of a kind: singular, plural, short
// name, and with the API group (deployment, deployments, deploy,
// deployments.apps; statefulset, sts; daemonset, ds), in any case; the
// spellings are the table of kinds' (internal/kinds).
func ParseKind(s string) (Kind, error) {
	if sp, ok := kinds.Lookup(s); ok {
		return Kind(sp.Name), nil
	}
	return "", fmt.Errorf("unsupported kind %q: rollback rolls back %s (KIND/NAME, e.g. statefulset/ledger, rollout/checkout, httproute/checkout)", s, strings.Join(kinds.Names(), ", "))
}

// controllerRevisionHash is the label the StatefulSet and DaemonSet
// controllers put on their pods and ControllerRevisions.
const controllerRevisionHash = appsv1.ControllerRevisionHashLabelKey

// kindOps is what differs between kinds (kubectl's polymorphichelpers):
// where the history lives, how an undo is applied, when a rollout is
// complete, and where marks are kept.
type kindOps interface {
	history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error)
	// undoPatch is the patch that applies revision to, guarded by the
	// resourceVersion the plan was made from.
	undoPatch(h *History, to *Revision) (types.PatchType, []byte, error)
	patch(ctx context.Context, cs kubernetes.Interface, t Target, pt types.PatchType, data []byte, o metav1.PatchOptions) error
	// status is kubectl rollout status' verdict on the object.
	status(obj runtime.Object) (msg string, done bool, err error)
	listWatch(cs kubernetes.Interface, t Target) *cache.ListWatch
	markPatch(ctx context.Context, cs kubernetes.Interface, namespace, object string, data []byte) error
	// prepare does what the kind needs before its undo patch (nothing,
	// for a plain workload).
	prepare(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, dry DryRun) error
	// settle waits, after the undo, until the rollback has taken effect
	// (the pods rolled out, the traffic moved, the release deployed),
	// replacing what the kind's controller would not, and says how.
	settle(ctx context.Context, s *settling, out *settled) (string, error)
	// traits are what changes the procedure around these steps.
	traits() traits
}

func kindOf(t Target) kindOps {
	switch t.Of() {
	case KindStatefulSet:
		return statefulSetKind{}
	case KindDaemonSet:
		return daemonSetKind{}
	case KindService:
		return serviceKind{}
	case KindHTTPRoute:
		return routeKind{httpRouteAPI{}}
	case KindIngress:
		return routeKind{albIngressAPI{}}
	case KindLoadBalancer:
		return lbKind{}
	case KindRollout:
		return rolloutKind{}
	case KindCanary:
		return canaryKind{}
	case KindHelm:
		return helmKind{}
	}
	return deploymentKind{}
}

// byName narrows a list or watch to the target's object.
func byName(t Target) func(*metav1.ListOptions) {
	fs := fields.OneTermEqualSelector("metadata.name", t.Name).String()
	return func(o *metav1.ListOptions) { o.FieldSelector = fs }
}

// listWatch lists and watches with client functions, narrowed by narrow.
func listWatch[L runtime.Object](narrow func(*metav1.ListOptions), list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			narrow(&o)
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			narrow(&o)
			return watchFn(ctx, o)
		},
	}
}

// --- StatefulSet and DaemonSet: revisions in ControllerRevisions -----------

// revisionHistory builds the history of a StatefulSet or DaemonSet from
// the ControllerRevisions it controls, as kubectl rollout history reads
// it: the revision number is the ControllerRevision's, its template the
// one in its data (a strategic merge patch of spec.template).
func revisionHistory(ctx context.Context, cs kubernetes.Interface, h *History, uid types.UID, sel *metav1.LabelSelector, podHash func(*appsv1.ControllerRevision) string) (*History, error) {
	t := h.Target
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("%s has an invalid selector: %w", t, err)
	}
	crs, err := cs.AppsV1().ControllerRevisions(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return nil, fmt.Errorf("list controllerrevisions of %s: %w", t, err)
	}
	pods, err := cs.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", t, err)
	}
	h.Selector = sel
	for i := range crs.Items {
		cr := &crs.Items[i]
		if ref := metav1.GetControllerOf(cr); ref == nil || ref.UID != uid {
			continue
		}
		tmpl, err := templateOf(cr)
		if err != nil {
			continue // not a revision kubectl could apply either
		}
		r := Revision{
			Number: cr.Revision, Object: cr.Name, Images: images(&tmpl),
			ChangeCause: cr.Annotations[ChangeCauseAnnotation], Created: cr.CreationTimestamp.Time,
			Health: Unknown, HealthReason: cr.Annotations[HealthReasonAnnotation],
			Current:  apiequality.Semantic.DeepEqual(&tmpl, &h.Template),
			template: tmpl, data: cr.Data.Raw, podHash: podHash(cr),
		}
		if hv, err := ParseHealth(cr.Annotations[HealthAnnotation]); err == nil {
			r.Health = hv
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Labels[controllerRevisionHash] == r.podHash {
				r.Replicas++
				if PodReady(&p) {
					r.Ready++
				}
			}
		}
		h.Revisions = append(h.Revisions, r)
	}
	h.order()
	return h, nil
}

// templateOf decodes the pod template a ControllerRevision holds.
func templateOf(cr *appsv1.ControllerRevision) (corev1.PodTemplateSpec, error) {
	var d struct {
		Spec struct {
			Template *corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &d); err != nil {
		return corev1.PodTemplateSpec{}, err
	}
	if d.Spec.Template == nil {
		return corev1.PodTemplateSpec{}, fmt.Errorf("controllerrevision %s holds no pod template", cr.Name)
	}
	return *d.Spec.Template, nil
}

// revisionUndoPatch is kubectl's undo of a StatefulSet or DaemonSet: the
// ControllerRevision's data applied as a strategic merge patch, plus the
// resourceVersion of the plan as a precondition (a workload changed in
// between is not overwritten).
func revisionUndoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	var m map[string]any
	if err := json.Unmarshal(to.data, &m); err != nil {
		return "", nil, fmt.Errorf("revision %d (%s): %w", to.Number, to.Object, err)
	}
	m["metadata"] = map[string]any{"resourceVersion": h.ResourceVersion}
	b, err := json.Marshal(m)
	return types.StrategicMergePatchType, b, err
}

func markControllerRevision(ctx context.Context, cs kubernetes.Interface, ns, object string, data []byte) error {
	_, err := cs.AppsV1().ControllerRevisions(ns).Patch(ctx, object, types.MergePatchType, data, metav1.PatchOptions{FieldManager: "rollback"})
	return err
}

// onDelete reports whether the workload's pods are replaced only when
// deleted (updateStrategy OnDelete): an undo then changes no pod by
// itself, so the rollback replaces them (see replaceOnDelete).
func (h *History) onDelete() bool {
	switch {
	case h.StatefulSet != nil:
		return h.StatefulSet.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType
	case h.DaemonSet != nil:
		return h.DaemonSet.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType
	}
	return false
}

// watchUntil lists and watches until cond is true or ctx ends.
func watchUntil(ctx context.Context, lw *cache.ListWatch, obj runtime.Object, cond func(watch.Event) (bool, error)) (*watch.Event, error) {
	return watchtools.UntilWithSync(ctx, lw, obj, nil, cond)
}

// APIVersionKind is the kind's object as an Event's involvedObject names
// it ("" for a Helm release or a load balancer, which are no object).
func (k Kind) APIVersionKind() (apiVersion, kind string) {
	if k == "" {
		k = KindDeployment
	}
	sp := kinds.Of(string(k))
	return sp.APIVersion, sp.APIKind
}

// Access is a verb on a resource, as a SubjectAccessReview asks it.
type Access struct {
	Verb, Group, Resource, Namespace, Name string
}

func (a Access) String() string {
	r := a.Resource
	if a.Group != "" {
		r += "." + a.Group
	}
	return a.Verb + " " + r + " " + a.Namespace + "/" + a.Name
}

// UndoAccess is what a caller must be allowed to do on the target for the
// service to roll it back on the caller's behalf: read it and change it.
// A Helm release is its release Secrets; a load balancer (no cluster
// object) is the virtual resource services.rollback.dev named by the
// configured service, verb rollback, which RBAC can grant like any other.
func (t Target) UndoAccess() []Access {
	var group, resource string
	switch t.Of() {
	case KindDeployment:
		group, resource = "apps", "deployments"
	case KindStatefulSet:
		group, resource = "apps", "statefulsets"
	case KindDaemonSet:
		group, resource = "apps", "daemonsets"
	case KindService:
		group, resource = "", "services"
	case KindHTTPRoute:
		group, resource = "gateway.networking.k8s.io", "httproutes"
	case KindIngress:
		group, resource = "networking.k8s.io", "ingresses"
	case KindRollout:
		group, resource = "argoproj.io", "rollouts"
	case KindCanary:
		group, resource = "flagger.app", "canaries"
	case KindHelm:
		return []Access{{Verb: "list", Resource: "secrets", Namespace: t.Namespace}, {Verb: "update", Resource: "secrets", Namespace: t.Namespace}}
	default:
		return []Access{{Verb: "rollback", Group: "rollback.dev", Resource: "services", Namespace: t.Namespace, Name: t.Name}}
	}
	return []Access{{Verb: "get", Group: group, Resource: resource, Namespace: t.Namespace, Name: t.Name},
		{Verb: "patch", Group: group, Resource: resource, Namespace: t.Namespace, Name: t.Name}}
}
