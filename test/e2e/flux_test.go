package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollback-dev/rollback/internal/gitops"
	"github.com/rollback-dev/rollback/internal/gitops/gittest"
)

// startFlux runs the real Flux source-controller and kustomize-controller
// (v1.9.6, built by scripts/build-peers.sh) against the sandbox.
func startFlux(t *testing.T) {
	t.Helper()
	waitBuilt(t, "flux")
	startPeer(t, "flux", func() error {
		if err := applyCRDs("flux", "gitrepositories.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io"); err != nil {
			return err
		}
		out, err := exec.Command("kubectl", "--kubeconfig", kubeconfig, "create", "namespace", "flux-system").CombinedOutput()
		if err != nil && !strings.Contains(string(out), "AlreadyExists") {
			return fmt.Errorf("%v: %s", err, out)
		}
		storage := filepath.Join(sandboxDir, "flux-artifacts")
		if err := os.MkdirAll(storage, 0o755); err != nil {
			return err
		}
		env := []string{"KUBECONFIG=" + kubeconfig, "RUNTIME_NAMESPACE=flux-system"}
		art, health := freePort(t), freePort(t)
		if err := runPeerEnv("source-controller", fmt.Sprintf("http://127.0.0.1:%d/healthz", health), env,
			"--storage-path="+storage, fmt.Sprintf("--storage-addr=127.0.0.1:%d", art), fmt.Sprintf("--storage-adv-addr=127.0.0.1:%d", art),
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", freePort(t)), fmt.Sprintf("--health-addr=127.0.0.1:%d", health), "--log-encoding=console", "--concurrent=6"); err != nil {
			return err
		}
		health = freePort(t)
		return runPeerEnv("kustomize-controller", fmt.Sprintf("http://127.0.0.1:%d/healthz", health), env,
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", freePort(t)), fmt.Sprintf("--health-addr=127.0.0.1:%d", health), "--log-encoding=console", "--concurrent=6")
	})
}

// fluxManifest is the app's Deployment as the repository holds it.
func fluxManifest(ns, img string) *string {
	return gittest.Str(fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: 3
  revisionHistoryLimit: 5
  selector: {matchLabels: {app: %[1]s}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers:
      - name: %[1]s
        image: %[3]s # the release
`, app, ns, img))
}

// fluxApp is an app that Flux applies from a repository on a local Git
// server, reconciling every 2 seconds.
type fluxApp struct {
	ns, repo string
	svc      string // the service's name in rollback.yaml
	git      *gittest.Server
	release  string // the commit that released v1.2.0
}

// newFluxApp commits v1.1.5, lets Flux apply it, then releases v1.2.0 by
// a commit and waits until Flux has rolled it out. layout is "plain" (the
// manifest's image is reverted) or "kustomize" (kustomization.yaml's
// images: is; a later commit touches the file too, so the revert is an
// edit of the newTag field).
func newFluxApp(t *testing.T, git *gittest.Server, layout string) *fluxApp {
	t.Helper()
	ns := namespace(t)
	a := &fluxApp{ns: ns, repo: "shop-" + ns, git: git, svc: ns}
	url := git.Create(t, a.repo)
	kust := func(tag, resources string) *string {
		return gittest.Str("resources: [deployment.yaml" + resources + "]\nimages:\n- name: registry.local/transaction-service\n  newTag: " + tag + "\n")
	}
	switch layout {
	case "plain":
		git.Commit(t, a.repo, "main", map[string]*string{"deploy/deployment.yaml": fluxManifest(ns, image("v1.1.5"))}, "transaction-service v1.1.5")
	case "kustomize":
		git.Commit(t, a.repo, "main", map[string]*string{"deploy/deployment.yaml": fluxManifest(ns, image("v1.0.0")), "deploy/kustomization.yaml": kust("v1.1.5", "")}, "transaction-service v1.1.5")
	}
	kubectlApply(t, gitRepository(ns, url)+`
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: shop, namespace: `+ns+`}
spec:
  interval: `+fluxInterval()+`
  retryInterval: 2s
  path: ./deploy
  prune: true
  sourceRef: {kind: GitRepository, name: shop}
`)
	a.waitImage(t, image("v1.1.5"))
	switch layout {
	case "plain":
		a.release = git.Commit(t, a.repo, "main", map[string]*string{"deploy/deployment.yaml": fluxManifest(ns, image("v1.2.0"))}, "Release transaction-service v1.2.0")
	case "kustomize":
		a.release = git.Commit(t, a.repo, "main", map[string]*string{"deploy/kustomization.yaml": kust("v1.2.0", "")}, "Release transaction-service v1.2.0")
		git.Commit(t, a.repo, "main", map[string]*string{"deploy/kustomization.yaml": kust("v1.2.0", ", team.yaml"),
			"deploy/team.yaml": gittest.Str("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: team, namespace: " + ns + "}\ndata: {team: payments}\n")}, "team config")
	}
	a.waitImage(t, image("v1.2.0"))
	return a
}

// gitRepository is the GitRepository "shop" of ns, tracking main of url.
func gitRepository(ns, url string) string {
	return `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: shop, namespace: ` + ns + `}
spec:
  interval: ` + fluxInterval() + `
  url: ` + url + `
  ref: {branch: main}`
}

// waitImage waits until Flux has rolled the Deployment out at img.
func (a *fluxApp) waitImage(t *testing.T, img string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		d, err := cs.AppsV1().Deployments(a.ns).Get(context.Background(), app, metav1.GetOptions{})
		if err == nil && d.Spec.Template.Spec.Containers[0].Image == img && d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == 3 && d.Status.ReadyReplicas == 3 {
			return
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("kubectl", "--kubeconfig", kubeconfig, "get", "kustomization,gitrepository", "-n", a.ns, "-o", "yaml").CombinedOutput()
			app, _ := exec.Command("kubectl", "--kubeconfig", kubeconfig, "get", "application", a.ns, "-n", "argocd", "-o", "yaml").CombinedOutput()
			t.Fatalf("the reconciler did not roll out %s in 90s (deployment: %v)\n%s\n%s", img, err, out, app)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// config is the service's rollback.yaml with the given gitops section.
func (a *fluxApp) config(t *testing.T, gitopsYAML string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rollback.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("apiVersion: rollback/v1\nservices:\n  %s:\n    kubernetes: {namespace: %s, name: %s}\n    gitops: %s\n", a.svc, a.ns, app, gitopsYAML)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sampler reads the Deployment's image every 100 ms until stopped.
type sampler struct {
	mu      sync.Mutex
	images  []string
	stop    chan struct{}
	stopped chan struct{}
}

func sample(ns string) *sampler {
	s := &sampler{stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(s.stopped)
		for {
			if d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), app, metav1.GetOptions{}); err == nil {
				s.mu.Lock()
				s.images = append(s.images, d.Spec.Template.Spec.Containers[0].Image)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return s
}

// badAfterUndo stops sampling and counts the samples on the bad version
// after the first on the good one (the undo), and all samples.
func (s *sampler) badAfterUndo() (bad, total int) {
	close(s.stop)
	<-s.stopped
	undone := false
	for _, img := range s.images {
		undone = undone || img == image("v1.1.5")
		if undone && img == image("v1.2.0") {
			bad++
		}
	}
	return bad, len(s.images)
}

// watchWindow is how long the bad version is watched for after the run:
// the five minutes in CI, a minute on a developer's machine, or
// $ROLLBACK_E2E_GITOPS_WATCH.
func watchWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("ROLLBACK_E2E_GITOPS_WATCH")); err == nil {
		return d
	}
	if os.Getenv("CI") == "true" {
		return 5 * time.Minute
	}
	return time.Minute
}

// fluxInterval is the Flux objects' reconcile interval: 2s, or
// $ROLLBACK_E2E_FLUX_INTERVAL (Flux's usual 1m, say: the revert step asks
// for a reconcile rather than waiting for one).
func fluxInterval() string {
	if d, err := time.ParseDuration(os.Getenv("ROLLBACK_E2E_FLUX_INTERVAL")); err == nil {
		return d.String()
	}
	return "2s"
}

// kustomization reads the app's Kustomization: suspended, the pause
// annotation, the applied revision.
func (a *fluxApp) kustomization(t *testing.T) (suspend, pausedBy, applied string) {
	t.Helper()
	out := kubectl(t, "get", "kustomization", "shop", "-n", a.ns, "-o", `jsonpath={.spec.suspend}|{.metadata.annotations.rollback/paused-by}|{.status.lastAppliedRevision}`)
	parts := strings.SplitN(out, "|", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return parts[0], parts[1], parts[2]
}

// reverts are the branch's commits naming the incident.
func (a *fluxApp) reverts(t *testing.T, branch, id string) []gittest.Commit {
	var out []gittest.Commit
	for _, c := range a.git.Log(t, a.repo, branch) {
		if strings.Contains(c.Message, gitops.TrailerKey+": "+id) {
			out = append(out, c)
		}
	}
	return out
}

// With the real Flux controllers reconciling every 2 seconds while it
// runs, 'rollback run' pauses the Kustomization, undoes, writes the
// rollback to Git (a 'git revert' of the release commit for a plain
// manifest; an edit of kustomize's images: when a later commit touched
// it), and resumes Flux once its GitRepository has the revert. From the
// undo until the watch window ends no sample shows the broken version and
// no rollout happens; the branch has one commit naming the incident,
// which Flux reports applied.
//
// $ROLLBACK_E2E_GITOPS_RUNS=N adds plain runs (the closing note's 20) and
// prints the time from 'rollback run' to "Git agrees and Flux resumed"
// with its median.
func TestGitOpsFluxRevertsInGit(t *testing.T) {
	parallel(t)
	startFlux(t)
	git := gittest.Start(t)
	layouts := []string{"plain", "kustomize"}
	if n, err := strconv.Atoi(os.Getenv("ROLLBACK_E2E_GITOPS_RUNS")); err == nil {
		for i := 2; i <= n; i++ {
			layouts = append(layouts, fmt.Sprintf("plain-%d", i))
		}
	}
	var mu sync.Mutex
	var took []float64
	var badTotal, samples int
	t.Cleanup(func() {
		sort.Float64s(took)
		if len(took) > 0 {
			t.Logf("%d runs at a %s reconcile interval: run to Git agreeing and Flux resumed, median %.1fs (min %.1fs, max %.1fs); %d of %d samples on v1.2.0 after the undo",
				len(took), fluxInterval(), took[len(took)/2], took[0], took[len(took)-1], badTotal, samples)
		}
	})
	for _, name := range layouts {
		layout, _, _ := strings.Cut(name, "-")
		t.Run(name, func(t *testing.T) {
			parallel(t)
			a := newFluxApp(t, git, layout)
			cfg := a.config(t, "{tokenEnv: TEST_GIT_TOKEN, username: rollback}")
			s := sample(a.ns)
			start := time.Now()
			r := rollbackEnv(t, map[string]string{"TEST_GIT_TOKEN": git.Token}, "run", a.svc, "--config", cfg, "--yes")
			ran := time.Since(start)
			if r.code != 0 || !strings.Contains(r.stderr, "suspended (spec.suspend: true)") || !strings.Contains(r.stderr, "resumed (paused by INC-") {
				t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
			}
			if strings.Contains(r.stderr+r.stdout, git.Token) {
				t.Error("the Git token is in the run's output")
			}
			id := incidentID.FindString(r.stderr)
			revision := getDeployment(t, a.ns).Annotations["deployment.kubernetes.io/revision"]
			t.Logf("%s: run to Git agreeing and Flux resumed: %.1fs; watching %s", name, ran.Seconds(), watchWindow())
			time.Sleep(watchWindow())
			bad, total := s.badAfterUndo()
			mu.Lock()
			took, badTotal, samples = append(took, ran.Seconds()), badTotal+bad, samples+total
			mu.Unlock()
			if bad != 0 || total < 100 {
				t.Errorf("%d of %d samples on v1.2.0 after the undo", bad, total)
			}
			if got := getDeployment(t, a.ns).Annotations["deployment.kubernetes.io/revision"]; got != revision {
				t.Errorf("a rollout after the run: revision %s -> %s", revision, got)
			}
			reverts := a.reverts(t, "main", id)
			head := a.git.Log(t, a.repo, "main")[0]
			if len(reverts) != 1 || reverts[0].Hash != head.Hash {
				t.Fatalf("commits naming %s: %v; head %s", id, reverts, head.Hash)
			}
			switch layout {
			case "plain":
				if !strings.Contains(head.Message, "This reverts commit "+a.release) {
					t.Errorf("not a revert of the release commit %s:\n%s", a.release, head.Message)
				}
			case "kustomize":
				if got := a.git.Read(t, a.repo, "main", "deploy/kustomization.yaml"); !strings.Contains(got, "newTag: v1.1.5") || !strings.Contains(got, "team.yaml") {
					t.Errorf("kustomization.yaml after the revert:\n%s", got)
				}
			}
			suspend, by, applied := a.kustomization(t)
			if suspend == "true" || by != "" || applied != "main@sha1:"+head.Hash {
				t.Errorf("kustomization: suspend %q, paused-by %q, applied %q; want resumed, applying %s", suspend, by, applied, head.Hash)
			}
			if st := rollback(t, "status", id); strings.Contains(st.stdout, "WARNING") {
				t.Errorf("status still warns:\n%s", st.stdout)
			}
		})
	}
}

// The branch is protected: the revert goes to a branch and a pull request
// (a GitHub stand-in checking the documented shapes); Flux stays paused
// until the pull request merges, and 'rollback gitops resume' resumes it
// only then, at the merge.
func TestGitOpsFluxPullRequest(t *testing.T) {
	parallel(t)
	startFlux(t)
	git := gittest.Start(t)
	a := newFluxApp(t, git, "plain")
	git.Protect(t, a.repo, "main")
	forge := gittest.StartForge(t, git, a.repo)
	cfg := a.config(t, fmt.Sprintf("{tokenEnv: TEST_GIT_TOKEN, forge: {type: github, url: %q, project: acme/shop, tokenEnv: TEST_FORGE_TOKEN}}", forge.URL))
	env := map[string]string{"TEST_GIT_TOKEN": git.Token, "TEST_FORGE_TOKEN": forge.Token}
	s := sample(a.ns)
	r := rollbackEnv(t, env, "run", a.svc, "--config", cfg, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "pull request "+forge.URL) || !strings.Contains(r.stderr, "STAYS PAUSED until it merges") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	id := incidentID.FindString(r.stderr)
	prs := forge.PRs()
	if len(prs) != 1 || prs[0].Head != "rollback/"+id || prs[0].Base != "main" || len(forge.Bad) > 0 {
		t.Fatalf("pull requests %+v, bad requests %v", prs, forge.Bad)
	}
	if suspend, _, _ := a.kustomization(t); suspend != "true" {
		t.Fatalf("Flux resumed before the merge (suspend %q)", suspend)
	}
	if st := rollbackEnv(t, env, "status", id, "--config", cfg); !strings.Contains(st.stdout, "WARNING: GitOps reconciler paused") || !strings.Contains(st.stdout, "/pull/1") {
		t.Errorf("status does not show the pull request:\n%s", st.stdout)
	}
	if res := rollbackEnv(t, env, "gitops", "resume", id, "--config", cfg); res.code == 0 || !strings.Contains(res.stderr, "not merged yet") {
		t.Fatalf("resume before the merge: exit %d\n%s", res.code, res.stderr)
	}
	// Flux's source fetches main twice more while the Kustomization stays
	// suspended (the sampler sees any apply of v1.2.0).
	fluxReconciled(t, "gitrepository", a.ns, "shop", 2)
	merge := forge.MergePR(t, prs[0].Number)
	res := rollbackEnv(t, env, "gitops", "resume", id, "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "resumed") {
		t.Fatalf("resume after the merge: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// Until Flux has applied the merge (the resume waited for its
	// source, the apply follows), then the samples are read.
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		suspend, by, applied := a.kustomization(t)
		if suspend != "true" && by == "" && applied == "main@sha1:"+merge {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kustomization: suspend %q, paused-by %q, applied %q after 120s; want resumed at the merge %s", suspend, by, applied, merge)
		}
	}
	if bad, total := s.badAfterUndo(); bad != 0 || total < 20 {
		t.Errorf("%d of %d samples on v1.2.0 after the undo (want none of at least 20)", bad, total)
	}
	if got := runningImage(t, a.ns); got != image("v1.1.5") {
		t.Errorf("running %s after the merge", got)
	}
}

// Killed after the push reached Git and before the run journaled it, the
// run's resume finds its commit by the incident's trailer: no second
// commit, no second push; Flux is resumed on it.
func TestGitOpsFluxKilledAfterPush(t *testing.T) {
	parallel(t)
	startFlux(t)
	git := gittest.Start(t)
	a := newFluxApp(t, git, "plain")
	cfg := a.config(t, "{tokenEnv: TEST_GIT_TOKEN}")
	st := filepath.Join(t.TempDir(), "r.db")
	cmd := rollbackCmd(st, "run", a.svc, "--config", cfg, "--yes")
	cmd.Env = append(cmd.Env, "TEST_GIT_TOKEN="+git.Token, "XDG_STATE_HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	git.OnPush = func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		time.Sleep(200 * time.Millisecond)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the run was not killed at the push (%v):\n%s", err, stderr.String())
	}
	git.OnPush = nil
	id := incidentID.FindString(stderr.String())
	if n := len(a.reverts(t, "main", id)); n != 1 || git.Pushes() != 1 {
		t.Fatalf("after the kill: %d commits naming %s, %d pushes", n, id, git.Pushes())
	}
	res := rollbackCmd(st, "resume", id, "--config", cfg)
	res.Env = append(res.Env, "TEST_GIT_TOKEN="+git.Token, "XDG_STATE_HOME="+t.TempDir())
	out, err := res.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "already on main") {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if n := len(a.reverts(t, "main", id)); n != 1 || git.Pushes() != 1 {
		t.Errorf("after the resume: %d commits naming %s, %d pushes; want 1 and 1", n, id, git.Pushes())
	}
	head := git.Log(t, a.repo, "main")[0].Hash
	deadline := time.Now().Add(90 * time.Second)
	for {
		suspend, _, applied := a.kustomization(t)
		if suspend != "true" && applied == "main@sha1:"+head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Flux not resumed on the revert %s: suspend %q, applied %q", head, suspend, applied)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := runningImage(t, a.ns); got != image("v1.1.5") {
		t.Errorf("running %s", got)
	}
}
