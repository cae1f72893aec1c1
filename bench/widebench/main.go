// Command widebench measures the wide rollback on the sandbox: one
// incident rolling back every Deployment a label selector matches, with
// 200 Deployments against one (the same command, the same path). Each
// Deployment runs one replica of v1, then v2; the clock runs from
// `rollback run --selector` starting to its exit, when every workload has
// rolled out on v1 and the incident is closed. It runs at the CLI's default
// parallelism (20) and at a stated higher one (-parallel), alternating
// them, against the floor: the same rollouts made directly by this program
// and waited for with a watch (no polling slack). Three runs each; it
// prints a table. Run it with `make bench-wide`; it needs `make build`.
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
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/store"
)

func main() {
	n := flag.Int("n", 200, "Deployments of the wide rollback")
	runs := flag.Int("runs", 3, "runs of each size")
	parallel := flag.String("parallel", "20,200", "rollback run --parallel settings, compared in one run (20 is the CLI's default)")
	flag.Parse()
	var ps []int
	for _, f := range strings.Split(*parallel, ",") {
		var p int
		if _, err := fmt.Sscan(f, &p); err != nil || p <= 0 {
			fmt.Fprintf(os.Stderr, "widebench: -parallel %q: expected numbers such as 20,200\n", *parallel)
			os.Exit(2)
		}
		ps = append(ps, p)
	}
	if err := run(*n, *runs, ps); err != nil {
		fmt.Fprintln(os.Stderr, "widebench:", err)
		os.Exit(1)
	}
}

func run(n, runs int, parallels []int) error {
	root, _ := os.Getwd()
	bin := filepath.Join(root, "bin")
	dir, err := os.MkdirTemp("", "widebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sbx := filepath.Join(bin, "rollback-sandbox")
	if out, err := exec.Command(sbx, "up", "--dir", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("sandbox up: %v\n%s", err, out)
	}
	defer exec.Command(sbx, "down", "--dir", dir).Run()
	kc := filepath.Join(dir, "kubeconfig")
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx := context.Background()
	type key struct{ size, parallel int }
	times := map[key][]time.Duration{}
	// floor: the same change made directly (every Deployment patched at
	// once by this program, waited for with a watch): what the sandbox's
	// control plane itself needs for that many rollouts.
	floor := map[int][]time.Duration{}
	for _, size := range []int{1, n} {
		ns := fmt.Sprintf("wide-%d", size)
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "widebench: %d Deployment(s) in %s\n", size, ns)
		if err := deployAll(ctx, cs, ns, size, "v1"); err != nil {
			return err
		}
		version := 1
		for r := 0; r < runs; r++ {
			// The settings alternate: the first goes first on even runs.
			order := append([]int(nil), parallels...)
			if r%2 == 1 {
				for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
					order[i], order[j] = order[j], order[i]
				}
			}
			for _, parallel := range order {
				version++
				bad := fmt.Sprintf("v%d", version)
				t0 := time.Now()
				if err := deployAll(ctx, cs, ns, size, bad); err != nil {
					return err
				}
				floor[size] = append(floor[size], time.Since(t0))
				st := filepath.Join(dir, fmt.Sprintf("store-%d-%d-%d.db", size, r, parallel))
				cmd := exec.Command(filepath.Join(bin, "rollback"), "run", "--selector", "bench=wide", "-n", ns, "--yes",
					"--parallel", fmt.Sprint(parallel), "-o", "json")
				cmd.Env = append(os.Environ(), "KUBECONFIG="+kc, "ROLLBACK_STORE="+st)
				t0 = time.Now()
				out, err := cmd.CombinedOutput()
				took := time.Since(t0)
				if err != nil {
					return fmt.Errorf("rollback run --selector (%d): %v\n%s", size, err, out)
				}
				if got := strings.Count(string(out), `"state": "done"`); got != size {
					return fmt.Errorf("%d of %d workloads done:\n%s", got, size, out)
				}
				if err := allOn(ctx, cs, ns, size, "v1"); err != nil {
					return err
				}
				times[key{size, parallel}] = append(times[key{size, parallel}], took)
				fmt.Fprintf(os.Stderr, "widebench: %d Deployment(s), --parallel %d, rolled back in %.2fs; %s\n", size, parallel, took.Seconds(), phases(ctx, st))
			}
		}
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	span := func(d []time.Duration) string {
		d = append([]time.Duration(nil), d...)
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return fmt.Sprintf("%.2f s (%.2f–%.2f)", med(d).Seconds(), d[0].Seconds(), d[len(d)-1].Seconds())
	}
	fmt.Printf("\nWide rollback on the sandbox (rollback run --selector; each Deployment 1 replica, a new bad version each run → v1; %d runs per setting, settings alternated)\n\n", runs)
	fmt.Println("| Deployments | --parallel | rollback run --selector: median (min–max) | the same rollouts made directly: median (min–max) | ratio to direct |")
	fmt.Println("|---:|---:|---|---|---:|")
	for _, size := range []int{1, n} {
		for _, p := range parallels {
			fmt.Printf("| %d | %d | %s | %s | %.2f× |\n", size, p, span(times[key{size, p}]), span(floor[size]), med(times[key{size, p}]).Seconds()/med(floor[size]).Seconds())
		}
	}
	fmt.Printf("\nThe direct floor scales %.2f× from 1 to %d Deployments (the control plane's own scaling).\n", med(floor[n]).Seconds()/med(floor[1]).Seconds(), n)
	return nil
}

// deployAll creates or updates size Deployments to version v and waits
// until every one has rolled out.
func deployAll(ctx context.Context, cs kubernetes.Interface, ns string, size int, v string) error {
	var wg sync.WaitGroup
	errs := make(chan error, size)
	sem := make(chan struct{}, 50)
	for i := 0; i < size; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("svc-%03d", i)
			tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.local/" + name + ":" + v}}}}
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				d = &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"bench": "wide"}},
					Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}, Template: tmpl}}
				_, err = cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
			} else {
				d.Spec.Template = tmpl
				_, err = cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return allOn(ctx, cs, ns, size, v)
}

// allOn waits until every Deployment runs v, rolled out: a list, then a
// watch from its resourceVersion, each event judged as it comes (no
// polling slack in the floor).
func allOn(ctx context.Context, cs kubernetes.Interface, ns string, size int, v string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	on := func(d *appsv1.Deployment) bool {
		st := d.Status
		return strings.HasSuffix(d.Spec.Template.Spec.Containers[0].Image, ":"+v) && st.ObservedGeneration >= d.Generation &&
			st.UpdatedReplicas == 1 && st.AvailableReplicas == 1 && st.Replicas == 1
	}
	opts := metav1.ListOptions{LabelSelector: "bench=wide"}
	list, err := cs.AppsV1().Deployments(ns).List(ctx, opts)
	if err != nil {
		return err
	}
	done := map[string]bool{}
	for i := range list.Items {
		done[list.Items[i].Name] = on(&list.Items[i])
	}
	count := func() int {
		n := 0
		for _, ok := range done {
			if ok {
				n++
			}
		}
		return n
	}
	if count() == size {
		return nil
	}
	opts.ResourceVersion = list.ResourceVersion
	w, err := cs.AppsV1().Deployments(ns).Watch(ctx, opts)
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if d, ok := ev.Object.(*appsv1.Deployment); ok {
			done[d.Name] = on(d)
			if count() == size {
				return nil
			}
		}
	}
	return fmt.Errorf("%d of %d Deployments on %s when the watch ended (%v)", count(), size, v, ctx.Err())
}

// phases reads the incident's journal: when the workloads' targets were
// pinned and when they were done, from the incident's opening.
func phases(ctx context.Context, path string) string {
	s, err := store.Open(ctx, path)
	if err != nil {
		return err.Error()
	}
	defer s.Close()
	incs, err := s.ListIncidents(ctx, "")
	if err != nil || len(incs) == 0 {
		return "no incident"
	}
	evs, _ := s.Events(ctx, incs[0].ID)
	var pinned, done []float64
	for _, ev := range evs {
		at := ev.Time.Sub(incs[0].OpenedAt).Seconds()
		switch {
		case strings.HasPrefix(ev.Key, "wide-target:"):
			pinned = append(pinned, at)
		case strings.HasPrefix(ev.Key, "wide-done:"):
			done = append(done, at)
		}
	}
	sort.Float64s(pinned)
	sort.Float64s(done)
	if len(pinned) == 0 || len(done) == 0 {
		return "no journal"
	}
	return fmt.Sprintf("targets pinned %.1f–%.1fs, done %.1f–%.1fs (median %.1fs) after the incident opened", pinned[0], pinned[len(pinned)-1], done[0], done[len(done)-1], done[len(done)/2])
}
