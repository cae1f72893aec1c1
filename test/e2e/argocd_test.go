package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollback-dev/rollback/internal/gitops/gittest"
	"github.com/rollback-dev/rollback/internal/reaper"
)

// argoServer is the sandbox's API server as Argo CD's cluster.
var argoServer string

// startArgoCD runs the real Argo CD application-controller and repo-server
// (v2.14.21, built by scripts/build-peers.sh) with Debian's Redis, against
// the sandbox, resyncing every 5 seconds.
func startArgoCD(t *testing.T) {
	t.Helper()
	waitBuilt(t, "argocd")
	installGitOps(t)
	startPeer(t, "argocd", func() error {
		if err := applyCRDs("argocd", "applications.argoproj.io", "appprojects.argoproj.io"); err != nil {
			return err
		}
		cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(`apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-cm, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
data: {timeout.reconciliation: 5s}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-rbac-cm, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
---
apiVersion: v1
kind: Secret
metadata: {name: argocd-secret, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
stringData: {server.secretkey: e2e-not-a-secret}
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: default, namespace: argocd}
spec:
  sourceRepos: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
`)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("argocd settings: %v\n%s", err, out)
		}
		// The sandbox as Argo CD's cluster (outside a pod there is no
		// in-cluster configuration): a declarative cluster Secret.
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return err
		}
		if err := rest.LoadTLSFiles(rc); err != nil {
			return err
		}
		clusterCfg, err := json.Marshal(map[string]any{"bearerToken": rc.BearerToken, "tlsClientConfig": map[string]any{
			"caData": base64.StdEncoding.EncodeToString(rc.CAData), "certData": base64.StdEncoding.EncodeToString(rc.CertData),
			"keyData": base64.StdEncoding.EncodeToString(rc.KeyData)}})
		if err != nil {
			return err
		}
		argoServer = rc.Host
		cmd = exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(`apiVersion: v1
kind: Secret
metadata: {name: sandbox, namespace: argocd, labels: {argocd.argoproj.io/secret-type: cluster}}
stringData:
  name: sandbox
  server: "` + rc.Host + `"
  config: '` + string(clusterCfg) + `'
`)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("argocd cluster secret: %v\n%s", err, out)
		}
		redis, err := exec.LookPath("redis-server")
		if err != nil {
			return fmt.Errorf("redis-server is not installed (make deps installs it)")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		redisAddr := l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(redisAddr)
		rp := reaper.Child(exec.Command(redis, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"))
		if err := rp.Start(); err != nil {
			return err
		}
		peers.procs = append(peers.procs, rp)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if c, err := net.Dial("tcp", redisAddr); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("redis did not listen on %s", redisAddr)
			}
		}
		tmp := filepath.Join(sandboxDir, "argocd-tmp")
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		env := []string{"ARGOCD_GPG_ENABLED=false", "TMPDIR=" + tmp, "KUBECONFIG=" + kubeconfig}
		repo, metrics := freePort(t), freePort(t)
		if err := runPeerEnv("argocd-repo-server", fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics), env,
			"--port", fmt.Sprint(repo), "--disable-tls", "--redis", redisAddr, "--metrics-port", fmt.Sprint(metrics), "--logformat", "text"); err != nil {
			return err
		}
		metrics = freePort(t)
		return runPeerEnv("argocd-application-controller", fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics), env,
			"--kubeconfig", kubeconfig, "--namespace", "argocd", "--repo-server", fmt.Sprintf("127.0.0.1:%d", repo), "--repo-server-plaintext",
			"--redis", redisAddr, "--metrics-port", fmt.Sprint(metrics), "--app-resync", "5", "--self-heal-timeout-seconds", "1", "--logformat", "text")
	})
}

// newArgoApp commits v1.1.5 to a repository on git, has the real Argo CD
// auto-sync it with self-heal, releases v1.2.0 by a commit and waits until
// Argo CD has rolled it out.
func newArgoApp(t *testing.T, git *gittest.Server) *fluxApp {
	t.Helper()
	ns := namespace(t)
	a := &fluxApp{ns: ns, repo: "argo-" + ns, git: git, svc: ns}
	url := git.Create(t, a.repo)
	git.Commit(t, a.repo, "main", map[string]*string{"deploy/deployment.yaml": fluxManifest(ns, image("v1.1.5"))}, "transaction-service v1.1.5")
	kubectlApply(t, `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: `+ns+`, namespace: argocd}
spec:
  project: default
  source: {repoURL: "`+url+`", path: deploy, targetRevision: main}
  destination: {server: "`+argoServer+`", namespace: `+ns+`}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
`)
	a.waitImage(t, image("v1.1.5"))
	a.release = git.Commit(t, a.repo, "main", map[string]*string{"deploy/deployment.yaml": fluxManifest(ns, image("v1.2.0"))}, "Release transaction-service v1.2.0")
	kubectl(t, "annotate", "application", ns, "-n", "argocd", "argocd.argoproj.io/refresh=normal", "--overwrite")
	a.waitImage(t, image("v1.2.0"))
	return a
}

// selfHealing reads whether the Application's automated sync heals.
func selfHealing(t *testing.T, app string) bool {
	return kubectl(t, "get", "application", app, "-n", "argocd", "-o", "jsonpath={.spec.syncPolicy.automated.selfHeal}") == "true"
}

// The real Argo CD with self-heal re-applies the broken version seconds
// after a plain 'kubectl rollout undo'. 'rollback run' pauses it first
// (acknowledged: no sync in flight), and with gitops.revert off it stays
// paused, said by 'rollback status', while the controller keeps resyncing;
// once a person has reverted Git, 'rollback gitops resume' puts self-heal
// back and the workload stays on the good version.
func TestGitOpsArgoCDSelfHealIsPaused(t *testing.T) {
	parallel(t)
	startArgoCD(t)
	git := gittest.Start(t)

	bare := newArgoApp(t, git)
	kubectl(t, "rollout", "undo", "deployment/"+app, "-n", bare.ns)
	start := time.Now()
	for runningImage(t, bare.ns) != image("v1.2.0") {
		if time.Since(start) > 180*time.Second {
			t.Fatalf("Argo CD's self-heal did not re-apply v1.2.0 within 180s of a plain undo (running %s)", runningImage(t, bare.ns))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("without the pause the real Argo CD re-applied the broken version %.1fs after 'kubectl rollout undo'", time.Since(start).Seconds())

	a := newArgoApp(t, git)
	cfg := a.config(t, "{revert: \"off\"}")
	s := sample(a.ns)
	r := rollbackEnv(t, nil, "run", a.svc, "--config", cfg, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "automated sync (and self-heal) turned off") || !strings.Contains(r.stderr, "no sync operation in flight") ||
		!strings.Contains(r.stderr, "gitops.revert is off") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	id := incidentID.FindString(r.stderr)
	argoReconciled(t, a.ns, 3) // three full comparisons with Git (v1.2.0), paused
	if selfHealing(t, a.ns) || runningImage(t, a.ns) != image("v1.1.5") {
		t.Fatalf("after three refreshes: self-heal %v, running %s", selfHealing(t, a.ns), runningImage(t, a.ns))
	}
	if by := kubectl(t, "get", "application", a.ns, "-n", "argocd", "-o", "jsonpath={.metadata.annotations.rollback/paused-by}|{.metadata.annotations.rollback/paused-was}"); by != id+`|{"prune":true,"selfHeal":true}` {
		t.Errorf("the pause is not recorded on the Application: %q", by)
	}
	if st := rollbackEnv(t, nil, "status", id, "--config", cfg); !strings.Contains(st.stdout, "WARNING: GitOps reconciler paused") {
		t.Errorf("status does not show the paused reconciler:\n%s", st.stdout)
	}
	if st := rollbackEnv(t, nil, "status", "--config", cfg); !strings.Contains(st.stdout, "WARNING: "+id+" paused a GitOps reconciler") {
		t.Errorf("the status list does not show the paused reconciler:\n%s", st.stdout)
	}
	git.Commit(t, a.repo, "main", map[string]*string{"deploy/deployment.yaml": fluxManifest(a.ns, image("v1.1.5"))}, "Revert v1.2.0 by hand")
	if res := rollbackEnv(t, nil, "gitops", "resume", id, "--config", cfg); res.code != 0 || !strings.Contains(res.stdout, "resumed") {
		t.Fatalf("gitops resume: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if !selfHealing(t, a.ns) {
		t.Error("self-heal not restored by 'rollback gitops resume'")
	}
	// Until Argo CD reports the hand-made revert synced, then the samples.
	revert := git.Log(t, a.repo, "main")[0].Hash
	kubectl(t, "annotate", "application", a.ns, "-n", "argocd", "argocd.argoproj.io/refresh=normal", "--overwrite")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got := kubectl(t, "get", "application", a.ns, "-n", "argocd", "-o", "jsonpath={.status.sync.revision}|{.status.sync.status}")
		if got == revert+"|Synced" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Argo CD not synced to the revert %s after 60s: %q", revert, got)
		}
	}
	if bad, total := s.badAfterUndo(); bad != 0 || total < 20 {
		t.Errorf("%d of %d samples on v1.2.0 after the undo (want none of at least 20)", bad, total)
	}
	if st := rollbackEnv(t, nil, "status", id, "--config", cfg); strings.Contains(st.stdout, "WARNING") {
		t.Errorf("status still warns after the resume:\n%s", st.stdout)
	}
}

// With the real Argo CD application-controller auto-syncing with
// self-heal from a local Git server, 'rollback run' turns the automated
// sync off, undoes, reverts the release commit in Git and puts the sync
// policy back once the Application's sync revision is the revert: no
// sample on the broken version after the undo, no rollout after the run.
func TestGitOpsArgoCDRevertsInGit(t *testing.T) {
	parallel(t)
	startArgoCD(t)
	git := gittest.Start(t)
	a := newArgoApp(t, git)
	ns, repo, release := a.ns, a.repo, a.release

	cfg := a.config(t, "{tokenEnv: TEST_GIT_TOKEN}")
	s := sample(ns)
	start := time.Now()
	r := rollbackEnv(t, map[string]string{"TEST_GIT_TOKEN": git.Token}, "run", a.svc, "--config", cfg, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "automated sync (and self-heal) turned off") || !strings.Contains(r.stderr, "resumed (paused by INC-") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("run to Git agreeing and Argo CD resumed: %.1fs", time.Since(start).Seconds())
	id := incidentID.FindString(r.stderr)
	revision := getDeployment(t, ns).Annotations["deployment.kubernetes.io/revision"]
	// The resumed Argo CD (self-heal on) compares with Git three times
	// over: had the revert not been what it reads, it would sync v1.2.0
	// back in one of them.
	argoReconciled(t, ns, 3)
	s.atLeast(t, 100)
	if bad, total := s.badAfterUndo(); bad != 0 || total < 100 {
		t.Errorf("%d of %d samples on v1.2.0 after the undo", bad, total)
	}
	if got := getDeployment(t, ns).Annotations["deployment.kubernetes.io/revision"]; got != revision {
		t.Errorf("a rollout after the run: revision %s -> %s", revision, got)
	}
	head := git.Log(t, repo, "main")[0]
	if !strings.Contains(head.Message, "Rollback-Incident: "+id) || !strings.Contains(head.Message, "This reverts commit "+release) {
		t.Errorf("head commit:\n%s", head.Message)
	}
	got := kubectl(t, "get", "application", ns, "-n", "argocd", "-o", `jsonpath={.spec.syncPolicy.automated.selfHeal}|{.metadata.annotations.rollback/paused-by}|{.status.sync.revision}`)
	if got != "true||"+head.Hash {
		t.Errorf("application: %q, want self-heal back, no pause, sync revision %s", got, head.Hash)
	}
}
