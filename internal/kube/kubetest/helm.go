package kubetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollback-dev/rollback/internal/kube"
)

// Helm is an in-memory kube.HelmReleases, as Helm's SDK behaves: a
// rollback is a new revision ("Rollback to N", deployed, the others
// superseded); a release stuck pending for longer than the grace is
// marked failed by Repair; marks live on the revisions. Fail, when set,
// fails the next Rollback after recording it, as an upgrade that timed
// out in --wait does.
type Helm struct {
	mu       sync.Mutex
	Releases map[string][]kube.HelmRevision
	Now      func() time.Time
	Fail     error
	cluster  *fake.Clientset
	ns       string
	// Rollbacks records each Rollback call: "RELEASE to N (dry)".
	Rollbacks []string
}

// HelmRelease is a fake with release name at v1 (revision 1, superseded)
// then v2 (revision 2, deployed, or lastStatus), whose workload is the
// Deployment NAME-web of the cluster Helm applies to (Deployment(ns,
// NAME+"-web") makes one that runs v2 over v1).
func HelmRelease(cluster *fake.Clientset, ns, name, lastStatus string, lastAt time.Time) *Helm {
	web := name + "-web"
	img := func(v string) []string { return []string{"r/" + web + ":" + v} }
	return &Helm{Now: time.Now, cluster: cluster, ns: ns, Releases: map[string][]kube.HelmRevision{name: {
		{Number: 1, Status: "superseded", Chart: name + "-0.1.0", Description: "Install complete", Images: img("v1"), Manifest: "m1", Updated: lastAt.Add(-time.Hour), Workload: "deployment/" + web},
		{Number: 2, Status: lastStatus, Chart: name + "-0.1.0", Description: "Upgrade complete", Images: img("v2"), Manifest: "m2", Updated: lastAt, Workload: "deployment/" + web},
	}}}
}

// apply is Helm applying a revision's manifest: its workload's template
// runs the revision's image.
func (h *Helm) apply(r *kube.HelmRevision) error {
	kind, name, _ := strings.Cut(r.Workload, "/")
	if h.cluster == nil || kind != "deployment" {
		return nil
	}
	o, err := h.cluster.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("deployments"), h.ns, name)
	if err != nil {
		return err
	}
	d := o.(*appsv1.Deployment).DeepCopy()
	d.Spec.Template.Spec.Containers[0].Image = r.Images[0]
	return h.cluster.Tracker().Update(appsv1.SchemeGroupVersion.WithResource("deployments"), d, h.ns)
}

func (h *Helm) History(_ context.Context, release string) ([]kube.HelmRevision, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]kube.HelmRevision(nil), h.Releases[release]...), nil
}

func (h *Helm) Rollback(_ context.Context, release string, revision int64, dry bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.Rollbacks = append(h.Rollbacks, fmt.Sprintf("%s to %d (dry %v)", release, revision, dry))
	revs := h.Releases[release]
	if strings.HasPrefix(revs[len(revs)-1].Status, "pending-") {
		return fmt.Errorf("another operation (install/upgrade/rollback) is in progress")
	}
	var to *kube.HelmRevision
	for i := range revs {
		if revs[i].Number == revision {
			to = &revs[i]
		}
	}
	if to == nil {
		return fmt.Errorf("release: not found: revision %d", revision)
	}
	if dry {
		return nil
	}
	for i := range revs {
		if revs[i].Status == "deployed" {
			revs[i].Status = "superseded"
		}
	}
	n := revs[len(revs)-1].Number + 1
	status := "deployed"
	if h.Fail != nil {
		status = "failed"
	}
	if err := h.apply(to); err != nil {
		return err
	}
	revs = append(revs, kube.HelmRevision{Number: n, Status: status, Chart: to.Chart, Images: to.Images, Manifest: to.Manifest,
		Description: fmt.Sprintf("Rollback to %d", revision), Updated: h.Now(), Workload: to.Workload})
	h.Releases[release] = revs
	if err := h.Fail; err != nil {
		h.Fail = nil
		return err
	}
	return nil
}

func (h *Helm) Repair(_ context.Context, release string, grace time.Duration) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	revs := h.Releases[release]
	last := &revs[len(revs)-1]
	if !strings.HasPrefix(last.Status, "pending-") {
		return "", nil
	}
	if age := h.Now().Sub(last.Updated); age < grace {
		return "", fmt.Errorf("helm release %s is %s since %s ago: an operation may still run; wait %s or repair it by hand", release, last.Status, age.Round(time.Second), (grace - age).Round(time.Second))
	}
	was := last.Status
	last.Status = "failed"
	return fmt.Sprintf("revision %d was %s for %s: marked failed", last.Number, was, h.Now().Sub(last.Updated).Round(time.Second)), nil
}

func (h *Helm) Mark(_ context.Context, release string, revision int64, marks map[string]*string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	revs := h.Releases[release]
	for i := range revs {
		if revs[i].Number != revision {
			continue
		}
		if revs[i].Marks == nil {
			revs[i].Marks = map[string]string{}
		}
		for k, v := range marks {
			if v == nil {
				delete(revs[i].Marks, k)
			} else {
				revs[i].Marks[k] = *v
			}
		}
		return nil
	}
	return fmt.Errorf("release %s has no revision %d", release, revision)
}
