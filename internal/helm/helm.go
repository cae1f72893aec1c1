// Package helm rolls Helm releases back through Helm's own Go SDK
// (helm.sh/helm/v3/pkg/action) with the Secret storage driver, as the helm
// CLI does: history, rollback with --wait, repair of a release stuck in a
// pending-* state, and rollback's marks as annotations on a revision's
// Secret. It implements kube.HelmReleases.
package helm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/yaml"

	"github.com/rollback-dev/rollback/internal/kube"
)

// Releases is one namespace's Helm releases.
type Releases struct {
	cfg       *action.Configuration
	namespace string
	// Timeout bounds a rollback's wait for its resources (default 5m,
	// Helm's).
	Timeout time.Duration
	Now     func() time.Time
}

// New opens the namespace's releases with the kubeconfig's settings.
func New(getter genericclioptions.RESTClientGetter, namespace string) (*Releases, error) {
	cfg := &action.Configuration{}
	if err := cfg.Init(getter, namespace, "secret", func(string, ...any) {}); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return &Releases{cfg: cfg, namespace: namespace, Timeout: 5 * time.Minute, Now: time.Now}, nil
}

// run calls a Helm action (which takes no context) and returns when it
// does or ctx ends; Helm's own timeout bounds what keeps running then.
func run(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// History is the release's revisions, oldest first.
func (r *Releases) History(ctx context.Context, name string) ([]kube.HelmRevision, error) {
	var rels []*release.Release
	err := run(ctx, func() error {
		var err error
		rels, err = action.NewHistory(r.cfg).Run(name)
		return err
	})
	if errors.Is(err, driverNotFound) {
		return nil, nil // kube says "not found" with what to check
	}
	if err != nil && apierrors.IsForbidden(err) {
		// Helm finds revisions by listing Secrets: a grant only Helm
		// releases need (deploy/helm-role.yaml).
		return nil, fmt.Errorf("helm history %s: %w; apply deploy/helm-role.yaml in the release's namespace (role rollback-helm)", name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("helm history %s: %w", name, err)
	}
	sort.Slice(rels, func(i, j int) bool { return rels[i].Version < rels[j].Version })
	marks, err := r.marks(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]kube.HelmRevision, 0, len(rels))
	for _, rel := range rels {
		sum := sha256.Sum256([]byte(rel.Manifest))
		hr := kube.HelmRevision{Number: int64(rel.Version), Manifest: hex.EncodeToString(sum[:8]),
			Marks: marks[kube.HelmObject(name, int64(rel.Version))]}
		if rel.Info != nil {
			hr.Status, hr.Description, hr.Updated = string(rel.Info.Status), rel.Info.Description, rel.Info.LastDeployed.Time
		}
		if rel.Chart != nil && rel.Chart.Metadata != nil {
			hr.Chart, hr.AppVersion = rel.Chart.Metadata.Name+"-"+rel.Chart.Metadata.Version, rel.Chart.Metadata.AppVersion
		}
		hr.Workload, hr.Images = Workload(rel.Manifest)
		out = append(out, hr)
	}
	return out, nil
}

// driverNotFound is the storage driver's "release: not found".
var driverNotFound = driver.ErrReleaseNotFound

// marks reads rollback's annotations on the release's Secrets.
func (r *Releases) marks(ctx context.Context, name string) (map[string]map[string]string, error) {
	cs, err := r.cfg.KubernetesClientSet()
	if err != nil {
		return nil, err
	}
	list, err := cs.CoreV1().Secrets(r.namespace).List(ctx, metaList("owner=helm,name="+name))
	if err != nil {
		return nil, fmt.Errorf("list the release secrets of %s: %w", name, err)
	}
	out := map[string]map[string]string{}
	for _, s := range list.Items {
		m := map[string]string{}
		for k, v := range s.Annotations {
			if strings.HasPrefix(k, "rollback/") {
				m[k] = v
			}
		}
		out[s.Name] = m
	}
	return out, nil
}

// Workload is the first Deployment, StatefulSet or DaemonSet of a rendered
// manifest (KIND/NAME) and its containers' images.
func Workload(manifest string) (string, []string) {
	for _, doc := range strings.Split(manifest, "\n---") {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Image string `json:"image"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if yaml.Unmarshal([]byte(doc), &obj) != nil {
			continue
		}
		switch obj.Kind {
		case "Deployment", "StatefulSet", "DaemonSet":
			var imgs []string
			for _, c := range obj.Spec.Template.Spec.Containers {
				imgs = append(imgs, c.Image)
			}
			return strings.ToLower(obj.Kind) + "/" + obj.Metadata.Name, imgs
		}
	}
	return "", nil
}

// Rollback is 'helm rollback RELEASE REVISION --wait'.
func (r *Releases) Rollback(ctx context.Context, name string, revision int64, dry bool) error {
	rb := action.NewRollback(r.cfg)
	rb.Version, rb.Wait, rb.Timeout, rb.DryRun = int(revision), true, r.Timeout, dry
	if err := run(ctx, func() error { return rb.Run(name) }); err != nil {
		return fmt.Errorf("helm rollback %s %d: %w", name, revision, err)
	}
	return nil
}

// Repair marks the release's latest revision failed when it has been
// pending (pending-install, -upgrade, -rollback) for longer than grace:
// the operation that set it is gone (killed, timed out), and the state
// blocks every Helm action. A younger pending state may be an operation
// still running: it is refused, never overwritten.
func (r *Releases) Repair(ctx context.Context, name string, grace time.Duration) (string, error) {
	last, err := r.cfg.Releases.Last(name)
	if err != nil {
		return "", fmt.Errorf("helm release %s: %w", name, err)
	}
	if last.Info == nil || !last.Info.Status.IsPending() {
		return "", nil
	}
	since := last.Info.LastDeployed.Time
	if age := r.Now().Sub(since); age < grace {
		return "", fmt.Errorf("%w: revision %d of %s is %s since %s (%s ago) and may still be running; wait until it ends (Helm's --timeout), then run again",
			kube.ErrHelmPending, last.Version, name, last.Info.Status, since.UTC().Format(time.RFC3339), age.Round(time.Second))
	}
	was := last.Info.Status
	last.Info.Status = release.StatusFailed
	last.Info.Description = fmt.Sprintf("marked failed by rollback: stuck in %s since %s", was, since.UTC().Format(time.RFC3339))
	if err := run(ctx, func() error { return r.cfg.Releases.Update(last) }); err != nil {
		return "", fmt.Errorf("repair helm release %s: %w", name, err)
	}
	return fmt.Sprintf("helm release %s revision %d was stuck in %s since %s: marked failed", name, last.Version, was, since.UTC().Format(time.RFC3339)), nil
}

// Mark sets (nil: removes) annotations on a revision's Secret.
func (r *Releases) Mark(ctx context.Context, name string, revision int64, marks map[string]*string) error {
	cs, err := r.cfg.KubernetesClientSet()
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": marks}})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Secrets(r.namespace).Patch(ctx, kube.HelmObject(name, revision), types.MergePatchType, patch, patchOpts)
	return err
}

var _ kube.HelmReleases = (*Releases)(nil)

var patchOpts = metav1.PatchOptions{FieldManager: "rollback"}

func metaList(selector string) metav1.ListOptions { return metav1.ListOptions{LabelSelector: selector} }
