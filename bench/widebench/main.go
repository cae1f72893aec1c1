// Command widebench measures the wide rollback on the sandbox: one
// incident rolling back every Deployment a label selector matches, with
// 200 Deployments against one (the same command, the same path). Each
// Deployment runs one replica of v1, then v2; the clock runs from
// `rollback run --selector` starting to its exit, when every workload has
// rolled out on v1 and the incident is closed. Three runs each; it prints a
// table. Run it with `make bench-wide`; it needs `make build`.
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
	parallel := flag.Int("parallel", 200, "rollback run --parallel")
	flag.Parse()
	if err := run(*n, *runs, *parallel); err != nil {
		fmt.Fprintln(os.Stderr, "widebench:", err)
		os.Exit(1)
	}
}

func run(n, runs, parallel int) error {
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
	times := map[int][]time.Duration{}
	// floor: the same change made directly (every Deployment patched at
	// once by this program, waited until rolled out): what the sandbox's
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
		for r := 0; r < runs; r++ {
			bad := fmt.Sprintf("v%d", r+2)
			t0 := time.Now()
			if err := deployAll(ctx, cs, ns, size, bad); err != nil {
				return err
			}
			floor[size] = append(floor[size], time.Since(t0))
			st := filepath.Join(dir, fmt.Sprintf("store-%d-%d.db", size, r))
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
			times[size] = append(times[size], took)
			fmt.Fprintf(os.Stderr, "widebench: %d Deployment(s) rolled back in %.2fs; %s\n", size, took.Seconds(), phases(ctx, st))
			// The next run's "bad" version goes over v1 again; v1 stays the
			// last good one (each run marks only its bad one).
		}
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	fmt.Printf("\nWide rollback on the sandbox (rollback run --selector, --parallel %d; each Deployment 1 replica, v%d..v2 → v1)\n\n", parallel, runs+1)
	fmt.Println("| Deployments | rollback run --selector: median (min–max) | The same number of rollouts made directly: median (min–max) |")
	fmt.Println("|---|---|---|")
	span := func(d []time.Duration) string {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return fmt.Sprintf("%.2f s (%.2f–%.2f)", med(d).Seconds(), d[0].Seconds(), d[len(d)-1].Seconds())
	}
	for _, size := range []int{1, n} {
		fmt.Printf("| %d | %s | %s |\n", size, span(times[size]), span(floor[size]))
	}
	fmt.Printf("\nRatio %d vs 1, wide rollback (medians): %.2f (target ≤ 2)\n", n, med(times[n]).Seconds()/med(times[1]).Seconds())
	fmt.Printf("Ratio %d vs 1, direct rollouts (medians): %.2f (the control plane's own scaling)\n", n, med(floor[n]).Seconds()/med(floor[1]).Seconds())
	fmt.Printf("Wide rollback over direct rollouts of %d (medians): %.2f\n", n, med(times[n]).Seconds()/med(floor[n]).Seconds())
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

// allOn waits until every Deployment runs v, rolled out.
func allOn(ctx context.Context, cs kubernetes.Interface, ns string, size int, v string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		list, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: "bench=wide"})
		if err != nil {
			return err
		}
		done := 0
		for _, d := range list.Items {
			st := d.Status
			if strings.HasSuffix(d.Spec.Template.Spec.Containers[0].Image, ":"+v) && st.ObservedGeneration >= d.Generation &&
				st.UpdatedReplicas == 1 && st.AvailableReplicas == 1 && st.Replicas == 1 {
				done++
			}
		}
		if done == size {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d Deployments on %s after 5 minutes", done, size, v)
		}
		time.Sleep(500 * time.Millisecond)
	}
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
