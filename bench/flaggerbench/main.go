// Command flaggerbench measures, on the sandbox, the time from a canary's
// start to traffic back on the stable version with the real Flagger's own
// analysis and with 'rollback watch', in the same run: two namespaces,
// the same broken version (the demo service's v1.2.0 at --error-rate 5xx),
// the same Flagger Canary (kubernetes provider; the seed's interval 1m,
// threshold 3 and request-success-rate min 99 from a Prometheus
// MetricTemplate), started at the same moment. In one namespace Flagger
// alone decides; in the other 'rollback watch canary/NAME' runs beside it.
// "Traffic back" is the moment no Ready pod of the broken version is left
// to serve; it is timed from the image change and from the canary's start
// (its first pod Ready, when Flagger has scaled it up: before that no
// request reaches it, on either path). It prints a table. Run it with `make bench-canary` (after the
// synthetic detector comparison); it needs `make build peers`.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const app = "transaction-service"

var (
	bin        string
	kubeconfig string
)

func main() {
	errRate := flag.Float64("error-rate", 0.05, "5xx share of the broken version")
	interval := flag.Duration("interval", time.Minute, "the Canary's analysis interval (the seed's 1m)")
	watchEvery := flag.Duration("watch-interval", 5*time.Second, "rollback watch's --interval")
	flag.Parse()
	root, _ := os.Getwd()
	bin = filepath.Join(root, "bin")
	if err := run(*errRate, *interval, *watchEvery); err != nil {
		fmt.Fprintln(os.Stderr, "flaggerbench:", err)
		os.Exit(1)
	}
}

func sh(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func kubectl(args ...string) (string, error) {
	return sh("kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
}

func apply(manifest string) error {
	cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply: %v\n%s", err, out)
	}
	return nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type procs struct{ list []*exec.Cmd }

func (p *procs) start(logDir, name string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(filepath.Join(logDir, filepath.Base(name)+fmt.Sprint(len(p.list))+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.list = append(p.list, cmd)
	return cmd, nil
}

func (p *procs) stop() {
	for i := len(p.list) - 1; i >= 0; i-- {
		_ = p.list[i].Process.Kill()
		_ = p.list[i].Wait()
	}
}

func run(errRate float64, interval, watchEvery time.Duration) error {
	dir, err := os.MkdirTemp("", "flaggerbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig = filepath.Join(dir, "kubeconfig")
	sbx := filepath.Join(bin, "rollback-sandbox")
	if _, err := sh(sbx, "up", "--dir", dir); err != nil {
		return err
	}
	defer func() { _, _ = sh(sbx, "down", "--dir", dir) }()
	var ps procs
	defer ps.stop()

	namespaces := []string{"flagger-alone", "rollback-watch"}
	demos := map[string]string{}
	for _, ns := range namespaces {
		if _, err := kubectl("create", "namespace", ns); err != nil {
			return err
		}
		if err := apply(deployment(ns)); err != nil {
			return err
		}
		cmd := exec.Command(sbx, "demo-service", "--dir", dir, "-n", ns, "--selector", "app in ("+app+", "+app+"-primary)",
			"--broken", "v1.2.0", "--error-rate", fmt.Sprint(errRate), "--rps", "50")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		ps.list = append(ps.list, cmd)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			return fmt.Errorf("demo-service: %v", err)
		}
		demos[ns] = strings.TrimPrefix(strings.Fields(line)[3], "http://")
	}
	// Prometheus scrapes both demo services, a job per namespace.
	promAddr := freeAddr()
	cfg := "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n"
	for _, ns := range namespaces {
		cfg += fmt.Sprintf("  - job_name: %s\n    static_configs: [{targets: ['%s']}]\n", ns, demos[ns])
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	if _, err := ps.start(dir, "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "prom"), "--web.listen-address="+promAddr); err != nil {
		return fmt.Errorf("prometheus (make deps installs it): %w", err)
	}
	prom := "http://" + promAddr
	if _, err := kubectl("apply", "--server-side", "-f", filepath.Join(bin, "crds", "flagger")); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // the CRDs become established
	if _, err := ps.start(dir, filepath.Join(bin, "flagger"), "-kubeconfig", kubeconfig, "-mesh-provider", "kubernetes",
		"-metrics-server", prom, "-port", strings.Split(freeAddr(), ":")[1], "-log-level", "info", "-zap-encoding", "console"); err != nil {
		return err
	}
	for _, ns := range namespaces {
		if err := apply(canary(ns, prom, interval)); err != nil {
			return err
		}
	}
	fmt.Printf("sandbox up; Flagger v1.41.0 (kubernetes provider), Canary interval %s, threshold 3, request-success-rate min 99; broken v1.2.0 at %.0f%% 5xx\n", interval, 100*errRate)
	for _, ns := range namespaces {
		if err := waitPhase(ns, 5*time.Minute, "Initialized"); err != nil {
			return err
		}
	}

	// The canary starts in both namespaces at once.
	t0 := time.Now()
	for _, ns := range namespaces {
		if _, err := kubectl("set", "image", "deployment/"+app, app+"=registry.local/transaction-service:v1.2.0", "-n", ns); err != nil {
			return err
		}
	}
	fmt.Println("canary v1.2.0 started in both namespaces; waiting for traffic back on v1.1.5 (Flagger alone takes several analysis intervals)")
	var wg sync.WaitGroup
	results := map[string][2]time.Duration{}
	errs := map[string]error{}
	var mu sync.Mutex
	for _, ns := range namespaces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := trafficBack(ns, t0, 20*interval)
			d[1] = d[0] - d[1]
			mu.Lock()
			results[ns], errs[ns] = d, err
			mu.Unlock()
		}()
	}
	// rollback watch joins once Flagger has scaled the canary up (before
	// that no request reaches v1.2.0, and no data is never healthy).
	if err := waitPhase("rollback-watch", 3*interval, "Progressing"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*interval)
	defer cancel()
	st := filepath.Join(dir, "rollback.db")
	q := func(code string) string {
		return `sum(increase(http_requests_total{job="rollback-watch",version="{{version}}"` + code + `}[{{interval}}]))`
	}
	watch := exec.CommandContext(ctx, filepath.Join(bin, "rollback"), "watch", "canary/"+app, "-n", "rollback-watch",
		"--kubeconfig", kubeconfig, "--store", st, "--prometheus", prom, "--interval", watchEvery.String(),
		"--requests-query", q(""), "--errors-query", q(`,code=~"5.."`), "--for", (15 * interval).String(), "-o", "json")
	watchOut, watchErr := watch.CombinedOutput()
	wg.Wait()
	for _, ns := range namespaces {
		if errs[ns] != nil {
			return fmt.Errorf("%s: %w\nrollback watch: %v\n%s", ns, errs[ns], watchErr, watchOut)
		}
	}
	detector := "?"
	for _, l := range strings.Split(string(watchOut), "\n") {
		if strings.Contains(l, `"detector"`) {
			detector = strings.Trim(strings.TrimSpace(strings.SplitN(l, ":", 2)[1]), `",`)
		}
	}
	f, r := results["flagger-alone"], results["rollback-watch"]
	fmt.Printf("\n%-52s %16s %22s\n", "traffic back on v1.1.5, seconds after", "the image change", "the canary's start")
	fmt.Printf("%-52s %16.1f %22.1f\n", "Flagger's own analysis (flagger-alone)", f[0].Seconds(), f[1].Seconds())
	fmt.Printf("%-52s %16.1f %22.1f\n", "rollback watch, "+detector+" detector (rollback-watch)", r[0].Seconds(), r[1].Seconds())
	fmt.Printf("%-52s %16.3f %22.3f\n", "ratio rollback / Flagger (target <= 0.1)", r[0].Seconds()/f[0].Seconds(), r[1].Seconds()/f[1].Seconds())
	return nil
}

// trafficBack waits until v1.2.0 has had Ready pods and then has none:
// nothing of the broken version serves any more. It returns the times
// from t0 to then, and to the first Ready v1.2.0 pod.
func trafficBack(ns string, t0 time.Time, limit time.Duration) ([2]time.Duration, error) {
	seen := false
	var first time.Duration
	for time.Since(t0) < limit {
		out, err := kubectl("get", "pods", "-n", ns, "-o",
			`jsonpath={range .items[?(@.spec.containers[0].image=="registry.local/transaction-service:v1.2.0")]}{.metadata.deletionTimestamp}{","}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return [2]time.Duration{}, err
		}
		ready := 0
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(l, ",True") {
				ready++
			}
		}
		if ready > 0 && !seen {
			seen, first = true, time.Since(t0)
		} else if ready == 0 && seen {
			return [2]time.Duration{time.Since(t0), first}, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return [2]time.Duration{}, fmt.Errorf("traffic not back on v1.1.5 within %s", limit)
}

func waitPhase(ns string, limit time.Duration, phases ...string) error {
	deadline := time.Now().Add(limit)
	for {
		out, _ := kubectl("get", "canary", app, "-n", ns, "-o", "jsonpath={.status.phase}")
		for _, p := range phases {
			if out == p {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: canary phase %q, want %v", ns, out, phases)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func deployment(ns string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: ` + app + `, namespace: ` + ns + `}
spec:
  replicas: 2
  selector: {matchLabels: {app: ` + app + `}}
  template:
    metadata: {labels: {app: ` + app + `}}
    spec:
      containers:
      - {name: ` + app + `, image: "registry.local/transaction-service:v1.1.5"}
`
}

// canary is the seed's Flagger analysis on the kubernetes provider (which
// takes iterations, not maxWeight/stepWeight: its canary gets traffic by
// its share of the pods).
func canary(ns, prom string, interval time.Duration) string {
	return `apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: request-success-rate, namespace: ` + ns + `}
spec:
  provider: {type: prometheus, address: "` + prom + `"}
  query: |
    100 * sum(rate(http_requests_total{job="` + ns + `",version="v1.2.0",code!~"5.."}[1m]))
      / sum(rate(http_requests_total{job="` + ns + `",version="v1.2.0"}[1m]))
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: ` + app + `, namespace: ` + ns + `}
spec:
  provider: kubernetes
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: ` + app + `}
  progressDeadlineSeconds: 600
  service: {port: 80, targetPort: 8080}
  analysis:
    interval: ` + interval.String() + `
    threshold: 3
    iterations: 10
    metrics:
    - name: request-success-rate
      templateRef: {name: request-success-rate}
      thresholdRange: {min: 99}
      interval: 1m
`
}
