package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Helm: a release's revisions are its history (Secrets
// sh.helm.release.v1.NAME.vN); the rollback is Helm's own, through its Go
// SDK (internal/helm implements HelmReleases): a new revision copying the
// target, with --wait semantics, so Helm's history stays the truth for the
// next 'helm upgrade'. A release stuck in a pending-* state is repaired
// first (marked failed) when it is older than a grace period, never while
// another Helm operation may still be running. Marks are annotations on
// the revision's Secret.

// KindHelm is a Helm release.
const KindHelm Kind = "helm"

// ErrHelmPending: the release's latest revision is pending (install,
// upgrade, rollback) and may still be in progress.
var ErrHelmPending = errors.New("helm release has an operation in progress")

// Helm's ownership annotations on the objects of a release.
const (
	HelmReleaseAnnotation   = "meta.helm.sh/release-name"
	HelmNamespaceAnnotation = "meta.helm.sh/release-namespace"
)

// HelmReleases is a namespace's Helm releases.
type HelmReleases interface {
	History(ctx context.Context, release string) ([]HelmRevision, error)
	// Rollback rolls release back to revision (Helm's rollback, waiting
	// until its resources are ready; dry: validate only).
	Rollback(ctx context.Context, release string, revision int64, dry bool) error
	// Repair marks a release stuck in a pending-* state for longer than
	// grace failed, and says so ("" when nothing was pending).
	Repair(ctx context.Context, release string, grace time.Duration) (string, error)
	// Mark sets (nil: removes) annotations on a revision's Secret.
	Mark(ctx context.Context, release string, revision int64, marks map[string]*string) error
}

// HelmRevision is one revision of a release.
type HelmRevision struct {
	Number      int64
	Status      string // deployed, superseded, failed, pending-upgrade, ...
	Chart       string // NAME-VERSION
	AppVersion  string
	Description string
	Updated     time.Time
	Images      []string
	// Manifest is the rendered manifest's digest: revisions with the same
	// one are the same version.
	Manifest string
	Marks    map[string]string
	// Workload is the release's first Deployment, StatefulSet or
	// DaemonSet (KIND/NAME), whose pods verification checks.
	Workload string
}

// HelmObject names a revision's Secret, as Helm's secret driver does.
func HelmObject(release string, n int64) string {
	return fmt.Sprintf("sh.helm.release.v1.%s.v%d", release, n)
}

func helmRevisionOf(object string) (int64, bool) {
	i := strings.LastIndex(object, ".v")
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(object[i+2:], 10, 64)
	return n, err == nil
}

// HelmState is a release as rollback reads it.
type HelmState struct {
	Release string
	// Pending is the latest revision's pending-* status, if it is stuck.
	Pending string
	// Workload is the release's first workload (pod checks), if any.
	Workload *Target

	api HelmReleases // the releases the history was read through
}

type helmKind struct{}

// helmOf is the Helm adapter cs carries.
func helmOf(cs kubernetes.Interface, t Target) (HelmReleases, error) {
	_, hr := AdaptersOf(cs)
	if hr == nil {
		return nil, fmt.Errorf("%s: no Helm client (the release's namespace and kubeconfig are needed)", t.Ref())
	}
	return hr, nil
}

func (helmKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	hr, err := helmOf(cs, t)
	if err != nil {
		return nil, err
	}
	revs, err := hr.History(ctx, t.Name)
	if err != nil {
		return nil, err
	}
	if len(revs) == 0 {
		return nil, fmt.Errorf("helm release %q in namespace %q: %w; check the name and -n (helm list -n %s)", t.Name, t.Namespace, ErrNotFound, t.Namespace)
	}
	h := &History{Target: t, Helm: &HelmState{Release: t.Name, api: hr}}
	// The current revision is the deployed one, or the latest when it is
	// pending: an interrupted upgrade is what the cluster was changing to,
	// so it is the one abandoned.
	var cur *HelmRevision
	for i := range revs {
		r := &revs[i]
		if r.Status == "deployed" && (cur == nil || r.Number > cur.Number) {
			cur = r
		}
	}
	if last := &revs[len(revs)-1]; strings.HasPrefix(last.Status, "pending-") {
		h.Helm.Pending, cur = last.Status, last
	}
	for _, r := range revs {
		// A revision with the current one's manifest is the same version
		// (a rollback's copy): like a ReplicaSet kubectl reuses, only the
		// newest keeps the number.
		if cur != nil && r.Number != cur.Number && r.Manifest == cur.Manifest {
			continue
		}
		rev := Revision{Number: r.Number, Object: HelmObject(t.Name, r.Number), Images: r.Images, ChangeCause: r.Description,
			Created: r.Updated, Health: Unknown, HealthReason: r.Marks[HealthReasonAnnotation], Current: cur != nil && r.Number == cur.Number}
		if hv, err := ParseHealth(r.Marks[HealthAnnotation]); err == nil {
			rev.Health = hv
		}
		if r.Status == "failed" && rev.Health == Unknown {
			// Helm itself says this revision failed.
			rev.Health, rev.HealthReason = Bad, "helm status failed: "+r.Description
		}
		h.Revisions = append(h.Revisions, rev)
	}
	h.order()
	// What serves: the release's workload, for pod checks.
	if cur != nil && cur.Workload != "" {
		kind, name, _ := strings.Cut(cur.Workload, "/")
		wk, err := ParseKind(kind)
		if err == nil && (wk == KindDeployment || wk == KindStatefulSet || wk == KindDaemonSet) {
			wt := Target{Namespace: t.Namespace, Name: name, Kind: wk}
			if wh, err := GetHistory(ctx, cs, wt); err == nil {
				h.Deployment, h.StatefulSet, h.DaemonSet = wh.Deployment, wh.StatefulSet, wh.DaemonSet
				h.Template, h.Selector = wh.Template, wh.Selector
				h.Helm.Workload = &wt
			}
		}
	}
	return h, nil
}

type helmRollback struct {
	Revision int64 `json:"revision"`
}

func (helmKind) undoPatch(_ *History, to *Revision) (types.PatchType, []byte, error) {
	b, err := json.Marshal(helmRollback{Revision: to.Number})
	return "", b, err
}

func (helmKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, _ types.PatchType, data []byte, o metav1.PatchOptions) error {
	var r helmRollback
	if err := json.Unmarshal(data, &r); err != nil {
		return err
	}
	hr, err := helmOf(cs, t)
	if err != nil {
		return err
	}
	return hr.Rollback(ctx, t.Name, r.Revision, len(o.DryRun) > 0)
}

func (helmKind) status(runtime.Object) (string, bool, error)             { return "", true, nil }
func (helmKind) listWatch(kubernetes.Interface, Target) *cache.ListWatch { return nil }

func (helmKind) markPatch(ctx context.Context, cs kubernetes.Interface, _, object string, data []byte) error {
	_, hr := AdaptersOf(cs)
	if hr == nil {
		return fmt.Errorf("%s: no Helm client", object)
	}
	n, ok := helmRevisionOf(object)
	if !ok {
		return fmt.Errorf("%s is not a Helm release revision", object)
	}
	var p struct {
		Metadata struct {
			Annotations map[string]*string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	release := strings.TrimPrefix(object[:strings.LastIndex(object, ".v")], "sh.helm.release.v1.")
	return hr.Mark(ctx, release, n, p.Metadata.Annotations)
}

// helmGrace is how long a pending-* state may last before rollback takes
// it for a stuck operation (Helm's default --timeout is 5m).
const helmGrace = 10 * time.Minute

// repairHelm repairs a stuck pending-* state before the rollback.
func repairHelm(ctx context.Context, h *History, dry DryRun) error {
	if h.Helm.Pending == "" || dry != DryRunNone {
		return nil
	}
	msg, err := h.Helm.api.Repair(ctx, h.Target.Name, helmGrace)
	if err != nil {
		return err
	}
	h.Prepared = msg
	return nil
}

// waitHelm checks the rollback's new revision: deployed, with the
// target's manifest.
func waitHelm(ctx context.Context, h *History, to *Revision) (int64, string, error) {
	revs, err := h.Helm.api.History(ctx, h.Target.Name)
	if err != nil {
		return 0, "", err
	}
	var want string
	for _, r := range revs {
		if r.Number == to.Number {
			want = r.Manifest
		}
	}
	last := revs[len(revs)-1]
	if last.Status != "deployed" || (want != "" && last.Manifest != want) {
		return 0, "", fmt.Errorf("helm release %s: revision %d is %s (%s), not the deployed copy of revision %d", h.Target.Name, last.Number, last.Status, last.Description, to.Number)
	}
	return last.Number, fmt.Sprintf("helm release %s: revision %d deployed (%s), its resources ready", h.Target.Name, last.Number, last.Description), nil
}

// HelmOwner is the Helm release a Deployment, StatefulSet or DaemonSet
// belongs to, by Helm's annotations ("" when none).
func HelmOwner(ctx context.Context, cs kubernetes.Interface, t Target) (release, namespace string, err error) {
	m, err := ObjectMeta(ctx, cs, t)
	if err != nil || m == nil {
		return "", "", err
	}
	ann := m.GetAnnotations()
	release, namespace = ann[HelmReleaseAnnotation], ann[HelmNamespaceAnnotation]
	if namespace == "" {
		namespace = t.Namespace
	}
	return release, namespace, nil
}

// ObjectMeta is a Deployment's, StatefulSet's or DaemonSet's metadata (nil
// for other kinds).
func ObjectMeta(ctx context.Context, cs kubernetes.Interface, t Target) (metav1.Object, error) {
	var m metav1.Object
	var err error
	switch t.Of() {
	case KindDeployment:
		m, err = cs.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	case KindStatefulSet:
		m, err = cs.AppsV1().StatefulSets(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	case KindDaemonSet:
		m, err = cs.AppsV1().DaemonSets(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	default:
		return nil, nil
	}
	if err != nil {
		return nil, notFound(t, err)
	}
	return m, nil
}

// settle: Helm's rollback waited for its resources (--wait), counting the
// new ReplicaSet's ready pods; the old ones may still serve, so kubectl's
// conditions wait them out. The release's new revision is the one marked
// good.
func (helmKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	n, msg, err := waitHelm(ctx, s.h, s.to)
	if err != nil {
		return "", err
	}
	if wt := s.h.Helm.Workload; wt != nil {
		if err := WaitRolledOut(ctx, s.cs, *wt, s.say); err != nil {
			return "", err
		}
	}
	out.revision, out.good = n, HelmObject(s.h.Target.Name, n)
	return msg, nil
}

func (helmKind) traits() traits { return traits{} }

// prepare: a release stuck in pending-* blocks every Helm action.
func (helmKind) prepare(ctx context.Context, _ kubernetes.Interface, h *History, _ *Revision, dry DryRun) error {
	return repairHelm(ctx, h, dry)
}
