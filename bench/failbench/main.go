// Command failbench measures the time to rolled back out of each way the
// sandbox's pods fail (crash-looping, never Ready, an image that cannot be
// pulled) for each plain workload kind, with `rollback run` against
// `kubectl rollout undo` + `kubectl rollout status`, and, for the
// StatefulSet, against kubectl with the documented fix done by hand (the
// stuck pods deleted after the undo, kubernetes#67250). Every measurement
// starts from the same point: a fresh namespace, the workload rolled out
// on v1, then v2-MODE released and a pod of it failing. The clock runs
// from the tool's start until its exit with every pod Ready on v1; a tool
// that has not got there by the cutoff is "never". Repeats alternate the
// order of the tools; the table shows medians. Run it with
// `make bench-fail`; it needs `make build`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/kube"
)

func main() {
	runs := flag.Int("runs", 3, "repeats of each measurement")
	cutoff := flag.Duration("cutoff", 30*time.Second, "a tool not rolled back by then is 'never'")
	flag.Parse()
	if err := run(*runs, *cutoff); err != nil {
		fmt.Fprintln(os.Stderr, "failbench:", err)
		os.Exit(1)
	}
}

type bench struct {
	cs     kubernetes.Interface
	kc     string
	bin    string
	dir    string
	cutoff time.Duration
	seq    int
}

func run(runs int, cutoff time.Duration) error {
	root, _ := os.Getwd()
	dir, err := os.MkdirTemp("", "failbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{bin: filepath.Join(root, "bin"), dir: dir, cutoff: cutoff, kc: filepath.Join(dir, "kubeconfig")}
	sbx := filepath.Join(b.bin, "rollback-sandbox")
	if out, err := exec.Command(sbx, "up", "--dir", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("sandbox up: %v\n%s", err, out)
	}
	defer exec.Command(sbx, "down", "--dir", dir).Run()
	rc, err := clientcmd.BuildConfigFromFlags("", b.kc)
	if err != nil {
		return err
	}
	if b.cs, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	tools := []string{"rollback run", "kubectl undo+status", "kubectl + delete stuck pods"}
	type row struct {
		kind, mode string
		times      [3][]time.Duration
	}
	var rows []row
	for _, kind := range []kube.Kind{kube.KindDeployment, kube.KindStatefulSet, kube.KindDaemonSet} {
		for _, mode := range []string{"crashloop", "unready", "pullfail"} {
			r := row{kind: string(kind), mode: mode}
			nt := 2
			if kind == kube.KindStatefulSet {
				nt = 3
			}
			for i := 0; i < runs; i++ {
				for j := 0; j < nt; j++ {
					tool := (j + i) % nt // the order alternates
					d, err := b.measure(kind, mode, tool)
					if err != nil {
						return err
					}
					fmt.Fprintf(os.Stderr, "failbench: %s %s %s: %s\n", kind, mode, tools[tool], show(d, cutoff))
					r.times[tool] = append(r.times[tool], d)
				}
			}
			rows = append(rows, r)
		}
	}
	fmt.Printf("\nTime to rolled back (every pod Ready on v1), median of %d, cutoff %s\n\n", runs, cutoff)
	fmt.Printf("| kind | failure | %s | %s | %s |\n|---|---|---:|---:|---:|\n", tools[0], tools[1], tools[2])
	for _, r := range rows {
		cells := make([]string, 3)
		for i := range cells {
			cells[i] = "—"
			if len(r.times[i]) > 0 {
				cells[i] = show(median(r.times[i]), cutoff)
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.kind, r.mode, cells[0], cells[1], cells[2])
	}
	return nil
}

func show(d, cutoff time.Duration) string {
	if d >= cutoff {
		return "never (> " + cutoff.String() + ")"
	}
	return d.Round(10 * time.Millisecond).String()
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

const app = "web"

func image(v string) string { return "registry.local/web:" + v }

// measure sets up a fresh broken workload and times one tool on it; it
// returns the cutoff when the tool did not get every pod Ready on v1.
func (b *bench) measure(kind kube.Kind, mode string, tool int) (time.Duration, error) {
	ctx := context.Background()
	b.seq++
	ns := fmt.Sprintf("fail-%d", b.seq)
	if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	defer b.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err := b.releaseBroken(ctx, ns, kind, mode); err != nil {
		return 0, err
	}
	ref := string(kind) + "/" + app
	cctx, cancel := context.WithTimeout(ctx, b.cutoff)
	defer cancel()
	start := time.Now()
	var err error
	switch tool {
	case 0:
		err = b.cmd(cctx, filepath.Join(b.bin, "rollback"), "run", ref, "-n", ns, "--yes", "--timeout", b.cutoff.String())
	default:
		err = b.cmd(cctx, "kubectl", "rollout", "undo", ref, "-n", ns)
		if err == nil && tool == 2 {
			// The documented fix: delete the pods stuck on the bad
			// revision, as an operator would after the undo.
			err = b.deleteStuck(cctx, ns)
		}
		if err == nil {
			err = b.cmd(cctx, "kubectl", "rollout", "status", ref, "-n", ns, "--timeout", b.cutoff.String())
		}
	}
	if err != nil || !b.allOn(ctx, ns, "v1") {
		return b.cutoff, nil
	}
	return time.Since(start), nil
}

func (b *bench) cmd(ctx context.Context, name string, args ...string) error {
	c := exec.CommandContext(ctx, name, args...)
	c.Env = append(os.Environ(), "KUBECONFIG="+b.kc, "ROLLBACK_STORE="+filepath.Join(b.dir, "rollback.db"))
	out, err := c.CombinedOutput()
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "failbench: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return err
}

func (b *bench) deleteStuck(ctx context.Context, ns string) error {
	pods, err := b.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return err
	}
	for i := range pods.Items {
		if !kube.PodReady(&pods.Items[i]) {
			if err := b.cmd(ctx, "kubectl", "delete", "pod", pods.Items[i].Name, "-n", ns, "--wait=false"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) allOn(ctx context.Context, ns, v string) bool {
	pods, err := b.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil || len(pods.Items) == 0 {
		return false
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && (p.Spec.Containers[0].Image != image(v) || !kube.PodReady(p)) {
			return false
		}
	}
	return true
}

func (b *bench) releaseBroken(ctx context.Context, ns string, kind kube.Kind, mode string) error {
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: image("v1")}}}}
	var err error
	switch kind {
	case kube.KindDeployment:
		_, err = b.cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	case kube.KindStatefulSet:
		_, err = b.cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3), Selector: sel, ServiceName: app, Template: tmpl}}, metav1.CreateOptions{})
	case kube.KindDaemonSet:
		_, err = b.cs.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.DaemonSetSpec{Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	tgt := kube.Target{Namespace: ns, Name: app, Kind: kind}
	if err := kube.WaitRolledOut(wctx, b.cs, tgt, nil); err != nil {
		return fmt.Errorf("%s did not roll out: %w", tgt, err)
	}
	if err := b.cmd(wctx, "kubectl", "set", "image", string(kind)+"/"+app, app+"="+image("v2-"+mode), "-n", ns); err != nil {
		return err
	}
	for {
		pods, err := b.cs.CoreV1().Pods(ns).List(wctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return fmt.Errorf("no pod of %s failed: %w", tgt, err)
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; strings.HasSuffix(p.Spec.Containers[0].Image, mode) && p.Status.PodIP != "" && !kube.PodReady(p) {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}
