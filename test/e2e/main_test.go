// Package e2e runs rollback end to end against a real sandbox: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok, started
// once per test binary, with a namespace per test.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/pgtest"
	"github.com/rollback-dev/rollback/internal/reaper"
)

var (
	binDir     string
	sandboxDir string
	storePath  string
	pg         *pgtest.Server
	kubeconfig string
	cs         kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	binDir = filepath.Join(root, "bin")
	for _, b := range []string{"rollback-sandbox", "kwok", "rollback"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s is missing: run 'make build' (or 'make test', which installs and builds everything)\n", filepath.Join(binDir, b))
			return 1
		}
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: kubectl is not on PATH; the tests compare rollback with the real kubectl")
		return 1
	}
	// What a killed earlier run left (its sandbox, its PostgreSQL) when
	// its watchdog was killed too.
	for _, pattern := range []string{"rollback-e2e-*", "rollback-pg-*"} {
		reaped, err := reaper.ReapStale(filepath.Join(os.TempDir(), pattern))
		for _, d := range reaped {
			fmt.Fprintln(os.Stderr, "e2e: stopped what a killed run left in", d)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: reaping a killed run's leftovers:", err)
		}
	}
	dir, err := os.MkdirTemp("", "rollback-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sandboxDir = dir
	storePath = filepath.Join(dir, "state", "rollback.db")
	sbx := filepath.Join(binDir, "rollback-sandbox")
	// Killed, this run's sandbox is stopped by a watchdog.
	release, err := reaper.Guard(dir, reaper.Stop{Argv: []string{sbx, "down", "--dir", dir}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer release()
	// Killed during up, the up dies too (not left starting daemons
	// after the watchdog's down).
	up := reaper.Child(exec.Command(sbx, "up", "--dir", dir))
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	if err := up.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: sandbox up:", err)
		_ = exec.Command(sbx, "down", "--dir", dir).Run()
		return 1
	}
	defer func() {
		down := exec.Command(sbx, "down", "--dir", dir)
		down.Stdout, down.Stderr = os.Stderr, os.Stderr
		_ = down.Run()
	}()
	if pg, err = pgtest.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: PostgreSQL:", err)
		return 1
	}
	defer pg.Stop()
	defer stopMariaDB()
	defer stopPeers()
	kubeconfig = filepath.Join(dir, "kubeconfig")
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	rc.QPS, rc.Burst = 100, 200
	if cs, err = kubernetes.NewForConfig(rc); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	takeParallel()
	return m.Run()
}

func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/rollback-dev/rollback\n")) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("cannot find the rollback module root above the working directory")
		}
		d = parent
	}
}

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

const app = "transaction-service"

func image(v string) string { return "registry.local/transaction-service:" + v }

// deploy creates the Deployment at versions[0] and rolls out each later
// version in turn, waiting for every rollout. A version ending in
// "!unschedulable" gets a node selector no node matches.
func deploy(t *testing.T, ns string, versions ...string) {
	t.Helper()
	ctx := context.Background()
	for i, v := range versions {
		tmpl := corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: image(strings.TrimSuffix(v, "!unschedulable"))}}},
		}
		wait := true
		if strings.HasSuffix(v, "!unschedulable") {
			tmpl.Spec.NodeSelector = map[string]string{"no-such-node": "true"}
			wait = false
		}
		cause := strings.TrimSuffix(v, "!unschedulable")
		if i == 0 {
			d := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns, Annotations: map[string]string{kube.ChangeCauseAnnotation: cause}},
				Spec: appsv1.DeploymentSpec{
					Replicas:             ptr.To[int32](3),
					RevisionHistoryLimit: ptr.To[int32](5),
					Selector:             &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
					Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
						RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(0))}},
					Template: tmpl,
				},
			}
			if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create deployment: %v", err)
			}
		} else {
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				d, err := cs.AppsV1().Deployments(ns).Get(ctx, app, metav1.GetOptions{})
				if err != nil {
					return err
				}
				d.Spec.Template = tmpl
				d.Annotations[kube.ChangeCauseAnnotation] = cause
				_, err = cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
				return err
			})
			if err != nil {
				t.Fatalf("update deployment to %s: %v", v, err)
			}
		}
		if wait {
			waitRolledOut(t, ns)
		} else {
			waitRevision(t, ns, int64(i+1))
		}
	}
}

func waitRolledOut(t *testing.T, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kube.WaitRolledOut(ctx, cs, kube.Target{Namespace: ns, Name: app}, nil); err != nil {
		t.Fatalf("rollout: %v", err)
	}
}

// waitRevision waits until the controller has created revision n.
func waitRevision(t *testing.T, ns string, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		h, err := kube.GetHistory(context.Background(), cs, kube.Target{Namespace: ns, Name: app})
		if err == nil && h.Find(n) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("revision %d never appeared", n)
}

type result struct {
	code           int
	stdout, stderr string
}

// rollback runs the CLI in-process, without a terminal.
func rollback(t *testing.T, args ...string) result {
	t.Helper()
	return rollbackEnv(t, nil, args...)
}

// rollbackEnv is rollback with extra environment variables.
func rollbackEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	io := &cli.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, Getenv: func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		switch k {
		case "ROLLBACK_CONFIG":
			return ""
		case "ROLLBACK_STORE":
			return storePath
		}
		return os.Getenv(k)
	}}
	// Longer than a run's own default timeout (5 minutes) and its step's
	// grace: the command's limits are what is tested, not this one's.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	code := cli.Main(ctx, "rollback", append(args, "--kubeconfig", kubeconfig), io)
	r := result{code: code, stdout: out.String(), stderr: errOut.String()}
	t.Logf("rollback %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// kubectl runs the real kubectl against the sandbox.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	// kubectl takes no flags before a plugin's name, so the kubeconfig
	// comes from the environment.
	cmd := exec.Command("kubectl", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "ROLLBACK_STORE="+storePath, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func getDeployment(t *testing.T, ns string) *appsv1.Deployment {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), app, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func runningImage(t *testing.T, ns string) string {
	t.Helper()
	return getDeployment(t, ns).Spec.Template.Spec.Containers[0].Image
}

// assertUnchanged fails when the Deployment's spec moved since before
// (status updates by the controllers do not count).
func assertUnchanged(t *testing.T, ns string, before *appsv1.Deployment) {
	t.Helper()
	after := getDeployment(t, ns)
	if after.Generation != before.Generation {
		t.Errorf("deployment spec changed: generation %d -> %d", before.Generation, after.Generation)
	}
	if b, a := before.Spec.Template.Spec.Containers[0].Image, after.Spec.Template.Spec.Containers[0].Image; a != b {
		t.Errorf("deployment image changed: %s -> %s", b, a)
	}
	if b, a := before.Annotations[kube.RevisionAnnotation], after.Annotations[kube.RevisionAnnotation]; a != b {
		t.Errorf("deployment revision changed: %s -> %s", b, a)
	}
}
