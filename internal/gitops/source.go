package gitops

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/kube"
)

// Source is where an owner reads Git: the repository, and for Flux the
// GitRepository object whose artifact says which commit it has.
type Source struct {
	Repo Repo `json:"repo"`
	// GitRepository is the Flux source object ("" for Argo CD).
	GitRepository string `json:"gitRepository,omitempty"` // NAMESPACE/NAME
	// SecretRef is the Secret holding the source's credentials
	// (NAMESPACE/NAME, "" for none).
	SecretRef string `json:"secretRef,omitempty"`
}

type fluxRef struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

type ownerSpec struct {
	Spec struct {
		// Flux Kustomization
		Path      string  `json:"path"`
		SourceRef fluxRef `json:"sourceRef"`
		// Flux HelmRelease
		Chart *struct {
			Spec struct {
				Chart             string   `json:"chart"`
				ReconcileStrategy string   `json:"reconcileStrategy"`
				SourceRef         fluxRef  `json:"sourceRef"`
				ValuesFiles       []string `json:"valuesFiles"`
			} `json:"spec"`
		} `json:"chart"`
		// Argo CD Application
		Source *struct {
			RepoURL        string `json:"repoURL"`
			TargetRevision string `json:"targetRevision"`
			Path           string `json:"path"`
		} `json:"source"`
	} `json:"spec"`
	Status struct {
		LastAppliedRevision string `json:"lastAppliedRevision"`
		// HelmRelease: the releases it made, newest first.
		History []struct {
			ChartVersion string `json:"chartVersion"`
		} `json:"history"`
		Sync struct {
			Revision string `json:"revision"`
			Status   string `json:"status"`
		} `json:"sync"`
		OperationState *struct {
			SyncResult *struct {
				Revision string `json:"revision"`
			} `json:"syncResult"`
		} `json:"operationState"`
	} `json:"status"`
}

type gitRepository struct {
	Spec struct {
		URL string `json:"url"`
		Ref *struct {
			Branch string `json:"branch"`
		} `json:"ref"`
		SecretRef *struct {
			Name string `json:"name"`
		} `json:"secretRef"`
	} `json:"spec"`
	Status struct {
		Artifact *struct {
			Revision string `json:"revision"`
		} `json:"artifact"`
	} `json:"status"`
}

func gitRepoPath(ns, name string) string {
	return "/apis/source.toolkit.fluxcd.io/v1/namespaces/" + ns + "/gitrepositories/" + name
}

// forbidden says what to grant when reading an object was refused.
func forbidden(what, resource, ns string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s: forbidden: %w; grant get on %s in namespace %s (deploy/workloads-role.yaml, role rollback-gitops)", what, err, resource, ns)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// FindSource reads, from the owner's own object, where it reads Git:
// a Kustomization's GitRepository (URL, branch, credentials) and path; a
// HelmRelease's chart in a GitRepository; an Application's repoURL,
// targetRevision and path. It fails, saying so, when the owner reads
// something else (an OCI or Helm repository): rollback.yaml's gitops
// section then says where the release lives.
func FindSource(ctx context.Context, cs kubernetes.Interface, o Owner) (*Source, error) {
	spec, err := kube.GetCustom[ownerSpec](ctx, cs, o.path(), kube.Target{Namespace: o.Namespace, Name: o.Name, Kind: kube.Kind(strings.ToLower(o.Kind))}, o.Tool+" CRDs")
	if err != nil {
		return nil, forbidden("read "+o.String(), o.resource(), o.Namespace, err)
	}
	switch o.Kind {
	case "Application":
		s := spec.Spec.Source
		if s == nil || s.RepoURL == "" {
			return nil, fmt.Errorf("%s has no spec.source (multi-source Applications): set gitops.repo in rollback.yaml", o)
		}
		branch := s.TargetRevision
		if branch == "" || branch == "HEAD" {
			return nil, fmt.Errorf("%s tracks %q, not a branch: set gitops.branch in rollback.yaml", o, cmp.Or(s.TargetRevision, "HEAD"))
		}
		return &Source{Repo: Repo{URL: s.RepoURL, Branch: branch, Path: s.Path}}, nil
	}
	ref, path := spec.Spec.SourceRef, spec.Spec.Path
	if o.Kind == "HelmRelease" {
		if spec.Spec.Chart == nil {
			return nil, fmt.Errorf("%s has no spec.chart (a chartRef): set gitops.repo in rollback.yaml", o)
		}
		// With Flux's default ChartVersion strategy the chart artifact is
		// rebuilt only when Chart.yaml's version changes: a reverted
		// values file would never reach the cluster.
		if spec.Spec.Chart.Spec.ReconcileStrategy != "Revision" {
			return nil, fmt.Errorf("%s builds its chart with reconcileStrategy %s: an edited values file is not picked up until the chart's version changes; set spec.chart.spec.reconcileStrategy: Revision, or gitops.repo and gitops.path in rollback.yaml where the release is written", o, cmp.Or(spec.Spec.Chart.Spec.ReconcileStrategy, "ChartVersion"))
		}
		ref, path = spec.Spec.Chart.Spec.SourceRef, spec.Spec.Chart.Spec.Chart
	}
	if ref.Kind != "GitRepository" {
		return nil, fmt.Errorf("%s reads a %s, not Git: set gitops.repo in rollback.yaml where the release is written", o, cmp.Or(ref.Kind, "source of no kind"))
	}
	ns := cmp.Or(ref.Namespace, o.Namespace)
	gr, err := kube.GetCustom[gitRepository](ctx, cs, gitRepoPath(ns, ref.Name), kube.Target{Namespace: ns, Name: ref.Name, Kind: "gitrepository"}, "Flux source CRDs")
	if err != nil {
		return nil, forbidden("read GitRepository "+ns+"/"+ref.Name, "gitrepositories.source.toolkit.fluxcd.io", ns, err)
	}
	branch := "master" // Flux's default when spec.ref is empty
	if gr.Spec.Ref != nil && gr.Spec.Ref.Branch != "" {
		branch = gr.Spec.Ref.Branch
	} else if gr.Spec.Ref != nil {
		return nil, fmt.Errorf("GitRepository %s/%s tracks a tag, semver or commit, not a branch: a revert cannot land there; set gitops.branch in rollback.yaml", ns, ref.Name)
	}
	s := &Source{Repo: Repo{URL: gr.Spec.URL, Branch: branch, Path: path}, GitRepository: ns + "/" + ref.Name}
	if gr.Spec.SecretRef != nil && gr.Spec.SecretRef.Name != "" {
		s.SecretRef = ns + "/" + gr.Spec.SecretRef.Name
	}
	return s, nil
}

// SecretAuth reads Git credentials from a Secret as Flux lays them out
// (username and password, or bearerToken).
func SecretAuth(ctx context.Context, cs kubernetes.Interface, ref string) (Auth, error) {
	ns, name, _ := strings.Cut(ref, "/")
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return Auth{}, forbidden("read the Git credentials Secret "+ref, "secrets", ns, err)
	}
	if t := string(sec.Data["bearerToken"]); t != "" {
		return Auth{Username: "git", Password: t}, nil
	}
	if p := string(sec.Data["password"]); p != "" {
		return Auth{Username: string(sec.Data["username"]), Password: p}, nil
	}
	return Auth{}, fmt.Errorf("the Git credentials Secret %s has neither password nor bearerToken", ref)
}

// Revisions is what the reconciler has: the commit its source fetched
// (Flux: the GitRepository's artifact; Argo CD: the sync revision) and the
// one it last applied.
type Revisions struct {
	Source  string `json:"source"`
	Applied string `json:"applied"`
}

// Commit is the hash in a Flux revision ("main@sha1:HASH", or a bare
// hash as Argo CD writes it).
func Commit(revision string) string {
	if i := strings.LastIndex(revision, ":"); i >= 0 {
		return revision[i+1:]
	}
	if i := strings.LastIndex(revision, "/"); i >= 0 { // Flux v1beta: main/HASH
		return revision[i+1:]
	}
	return revision
}

// Applied says whether an applied revision is the source revision: the
// same commit, or a chart version built from it (VERSION+COMMIT12).
func Applied(applied, source string) bool {
	a, c := Commit(applied), Commit(source)
	if a == "" || c == "" {
		return false
	}
	if a == c {
		return true
	}
	if i := strings.LastIndex(applied, "+"); i >= 0 && len(applied)-i-1 >= 7 {
		return strings.HasPrefix(c, applied[i+1:])
	}
	return false
}

// ReadRevisions reads the owner's source and applied revisions.
func ReadRevisions(ctx context.Context, cs kubernetes.Interface, o Owner, src *Source) (Revisions, error) {
	spec, err := kube.GetCustom[ownerSpec](ctx, cs, o.path(), kube.Target{Namespace: o.Namespace, Name: o.Name, Kind: kube.Kind(strings.ToLower(o.Kind))}, o.Tool+" CRDs")
	if err != nil {
		return Revisions{}, forbidden("read "+o.String(), o.resource(), o.Namespace, err)
	}
	if o.Tool == "argocd" {
		r := Revisions{Source: spec.Status.Sync.Revision}
		switch {
		case spec.Status.Sync.Status == "Synced":
			// The live objects match that revision (applied, or already
			// there: the undo put them so).
			r.Applied = spec.Status.Sync.Revision
		case spec.Status.OperationState != nil && spec.Status.OperationState.SyncResult != nil:
			r.Applied = spec.Status.OperationState.SyncResult.Revision // what its last sync applied
		}
		return r, nil
	}
	r := Revisions{Applied: spec.Status.LastAppliedRevision}
	if o.Kind == "HelmRelease" && len(spec.Status.History) > 0 {
		// A chart built from Git by revision is versioned VERSION+COMMIT12.
		r.Applied = spec.Status.History[0].ChartVersion
	}
	if src != nil && src.GitRepository != "" {
		ns, name, _ := strings.Cut(src.GitRepository, "/")
		gr, err := kube.GetCustom[gitRepository](ctx, cs, gitRepoPath(ns, name), kube.Target{Namespace: ns, Name: name, Kind: "gitrepository"}, "Flux source CRDs")
		if err != nil {
			return Revisions{}, forbidden("read GitRepository "+src.GitRepository, "gitrepositories.source.toolkit.fluxcd.io", ns, err)
		}
		if gr.Status.Artifact != nil {
			r.Source = gr.Status.Artifact.Revision
		}
	}
	return r, nil
}

// RequestReconcile asks the reconciler to look at Git now rather than at
// its next interval: Flux's reconcile.fluxcd.io/requestedAt on the
// GitRepository and the owner, Argo CD's refresh annotation.
func RequestReconcile(ctx context.Context, cs kubernetes.Interface, o Owner, src *Source, now time.Time) error {
	var paths []string
	var ann map[string]string
	switch o.Tool {
	case "argocd":
		paths, ann = []string{o.path()}, map[string]string{"argocd.argoproj.io/refresh": "normal"}
	default:
		paths, ann = []string{o.path()}, map[string]string{"reconcile.fluxcd.io/requestedAt": now.UTC().Format(time.RFC3339Nano)}
		if src != nil && src.GitRepository != "" {
			ns, name, _ := strings.Cut(src.GitRepository, "/")
			paths = append([]string{gitRepoPath(ns, name)}, paths...)
		}
	}
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	for _, p := range paths {
		if err := kube.PatchCustom(ctx, cs, p, types.MergePatchType, b); err != nil {
			return fmt.Errorf("request a reconcile of %s: %w", p, err)
		}
	}
	return nil
}
