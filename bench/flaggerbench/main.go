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
// request reaches it, on either path). It runs each setting (-settings:
// the seed's interval 1m over a 1m window, and Flagger's fastest practical
// one, 10s over 30s) -repeats times, alternating their order, each trial
// in fresh namespaces with its own Prometheus, and prints medians and
// spread. Run it with `make bench-canary` (after the synthetic detector
// comparison); it needs `make build peers`.
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
	"sort"
	"strings"
	"sync"
	"time"
)

const app = "transaction-service"

var (
	bin        string
	kubeconfig string
)

// setting is one Flagger analysis: its interval and its metric's window.
type setting struct{ interval, window time.Duration }

func (s setting) String() string { return fmt.Sprintf("interval %s, window %s", s.interval, s.window) }

func main() {
	errRate := flag.Float64("error-rate", 0.05, "5xx share of the broken version")
	settings := flag.String("settings", "1m/1m,10s/30s", "Flagger analysis settings INTERVAL/WINDOW: the seed's, and its fastest practical")
	repeats := flag.Int("repeats", 5, "trials per setting (medians and spread)")
	watchEvery := flag.Duration("watch-interval", 5*time.Second, "rollback watch's --interval")
	flag.Parse()
	var ss []setting
	for _, f := range strings.Split(*settings, ",") {
		i, w, _ := strings.Cut(f, "/")
		iv, err1 := time.ParseDuration(i)
		wv, err2 := time.ParseDuration(w)
		if err1 != nil || err2 != nil {
			fmt.Fprintf(os.Stderr, "flaggerbench: -settings %q: expected INTERVAL/WINDOW pairs such as 1m/1m,10s/30s\n", *settings)
			os.Exit(2)
		}
		ss = append(ss, setting{iv, wv})
	}
	root, _ := os.Getwd()
	bin = filepath.Join(root, "bin")
	if err := run(*errRate, ss, *repeats, *watchEvery); err != nil {
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

func run(errRate float64, settings []setting, repeats int, watchEvery time.Duration) error {
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
	if _, err := kubectl("apply", "--server-side", "-f", filepath.Join(bin, "crds", "flagger")); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // the CRDs become established
	// Each trial's MetricTemplate names its own Prometheus; Flagger's
	// global metrics server is one with nothing to scrape.
	global, err := startPrometheus(&ps, dir, "global", nil)
	if err != nil {
		return err
	}
	if _, err := ps.start(dir, filepath.Join(bin, "flagger"), "-kubeconfig", kubeconfig, "-mesh-provider", "kubernetes",
		"-metrics-server", global, "-port", strings.Split(freeAddr(), ":")[1], "-log-level", "info", "-zap-encoding", "console"); err != nil {
		return err
	}
	fmt.Printf("sandbox up; Flagger v1.41.0 (kubernetes provider), threshold 3, request-success-rate min 99; broken v1.2.0 at %.0f%% 5xx; rollback watch every %s; %d trials per setting, settings alternated\n",
		100*errRate, watchEvery, repeats)
	type times struct{ flagger, watch, flaggerCanary, watchCanary []time.Duration }
	got := map[setting]*times{}
	trial := 0
	for r := 0; r < repeats; r++ {
		order := append([]setting(nil), settings...)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, st := range order {
			trial++
			f, w, err := runTrial(dir, trial, st, errRate, watchEvery)
			if err != nil {
				return fmt.Errorf("trial %d (%s): %w", trial, st, err)
			}
			if got[st] == nil {
				got[st] = &times{}
			}
			t := got[st]
			t.flagger, t.flaggerCanary = append(t.flagger, f[0]), append(t.flaggerCanary, f[1])
			t.watch, t.watchCanary = append(t.watch, w[0]), append(t.watchCanary, w[1])
			fmt.Fprintf(os.Stderr, "flaggerbench: trial %d (%s): traffic back after %.1fs with Flagger alone, %.1fs with rollback watch\n", trial, st, f[0].Seconds(), w[0].Seconds())
		}
	}
	fmt.Printf("\ntraffic back on v1.1.5, seconds after the image change (after the canary's start): median (min–max) of %d\n\n", repeats)
	fmt.Println("| Flagger setting | Flagger alone | rollback watch beside it | ratio of medians |")
	fmt.Println("|---|---|---|---:|")
	for _, st := range settings {
		t := got[st]
		fmt.Printf("| %s | %s (%s) | %s (%s) | %.3f |\n", st, span(t.flagger), span(t.flaggerCanary), span(t.watch), span(t.watchCanary),
			median(t.watch).Seconds()/median(t.flagger).Seconds())
	}
	return nil
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func span(d []time.Duration) string {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%.1f (%.1f–%.1f)", median(s).Seconds(), s[0].Seconds(), s[len(s)-1].Seconds())
}

// startPrometheus starts a Prometheus scraping targets (job name ->
// address) every second and returns its URL once it answers.
func startPrometheus(ps *procs, dir, name string, targets map[string]string) (string, error) {
	addr := freeAddr()
	cfg := "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n"
	if len(targets) == 0 {
		cfg = "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs: []\n"
	}
	for job, t := range targets {
		cfg += fmt.Sprintf("  - job_name: %s\n    static_configs: [{targets: ['%s']}]\n", job, t)
	}
	path := filepath.Join(dir, "prometheus-"+name+".yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return "", err
	}
	if _, err := ps.start(dir, "prometheus", "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "prom-"+name), "--web.listen-address="+addr); err != nil {
		return "", fmt.Errorf("prometheus (make deps installs it): %w", err)
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("prometheus %s did not answer", name)
}

// runTrial is one trial in fresh namespaces: Flagger alone in one, rollback
// watch beside Flagger in the other, the canary started in both at once.
// It returns, for each, the time from the image change to traffic back and
// from the canary's first Ready pod to traffic back.
func runTrial(dir string, k int, st setting, errRate float64, watchEvery time.Duration) (flaggerT, watchT [2]time.Duration, err error) {
	alone, beside := fmt.Sprintf("flagger-alone-%d", k), fmt.Sprintf("rollback-watch-%d", k)
	namespaces := []string{alone, beside}
	var ps procs
	defer ps.stop()
	sbx := filepath.Join(bin, "rollback-sandbox")
	demos := map[string]string{}
	for _, ns := range namespaces {
		if _, err := kubectl("create", "namespace", ns); err != nil {
			return flaggerT, watchT, err
		}
		if err := apply(deployment(ns)); err != nil {
			return flaggerT, watchT, err
		}
		cmd := exec.Command(sbx, "demo-service", "--dir", dir, "-n", ns, "--selector", "app in ("+app+", "+app+"-primary)",
			"--broken", "v1.2.0", "--error-rate", fmt.Sprint(errRate), "--rps", "50")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return flaggerT, watchT, err
		}
		if err := cmd.Start(); err != nil {
			return flaggerT, watchT, err
		}
		ps.list = append(ps.list, cmd)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			return flaggerT, watchT, fmt.Errorf("demo-service: %v", err)
		}
		demos[ns] = strings.TrimPrefix(strings.Fields(line)[3], "http://")
	}
	prom, err := startPrometheus(&ps, dir, fmt.Sprint(k), demos)
	if err != nil {
		return flaggerT, watchT, err
	}
	for _, ns := range namespaces {
		if err := apply(canary(ns, prom, st)); err != nil {
			return flaggerT, watchT, err
		}
	}
	for _, ns := range namespaces {
		if err := waitPhase(ns, 5*time.Minute, "Initialized"); err != nil {
			return flaggerT, watchT, err
		}
	}
	limit := 20*st.interval + 5*time.Minute
	t0 := time.Now()
	for _, ns := range namespaces {
		if _, err := kubectl("set", "image", "deployment/"+app, app+"=registry.local/transaction-service:v1.2.0", "-n", ns); err != nil {
			return flaggerT, watchT, err
		}
	}
	var wg sync.WaitGroup
	results := map[string][2]time.Duration{}
	errs := map[string]error{}
	var mu sync.Mutex
	for _, ns := range namespaces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := trafficBack(ns, t0, limit)
			d[1] = d[0] - d[1]
			mu.Lock()
			results[ns], errs[ns] = d, err
			mu.Unlock()
		}()
	}
	// rollback watch joins once Flagger has scaled the canary up (before
	// that no request reaches v1.2.0, and no data is never healthy).
	if err := waitPhase(beside, 3*st.interval+time.Minute, "Progressing"); err != nil {
		return flaggerT, watchT, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	stPath := filepath.Join(dir, fmt.Sprintf("rollback-%d.db", k))
	q := func(code string) string {
		return `sum(increase(http_requests_total{job="` + beside + `",version="{{version}}"` + code + `}[{{interval}}]))`
	}
	watch := exec.CommandContext(ctx, filepath.Join(bin, "rollback"), "watch", "canary/"+app, "-n", beside,
		"--kubeconfig", kubeconfig, "--store", stPath, "--prometheus", prom, "--interval", watchEvery.String(),
		"--requests-query", q(""), "--errors-query", q(`,code=~"5.."`), "--for", limit.String(), "-o", "json")
	watchOut, watchErr := watch.CombinedOutput()
	wg.Wait()
	for _, ns := range namespaces {
		if errs[ns] != nil {
			return flaggerT, watchT, fmt.Errorf("%s: %w\nrollback watch: %v\n%s", ns, errs[ns], watchErr, watchOut)
		}
		go func() { _, _ = kubectl("delete", "namespace", ns, "--wait=false") }()
	}
	return results[alone], results[beside], nil
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
func canary(ns, prom string, st setting) string {
	window := promDuration(st.window)
	return `apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: request-success-rate, namespace: ` + ns + `}
spec:
  provider: {type: prometheus, address: "` + prom + `"}
  query: |
    100 * sum(rate(http_requests_total{job="` + ns + `",version="v1.2.0",code!~"5.."}[` + window + `]))
      / sum(rate(http_requests_total{job="` + ns + `",version="v1.2.0"}[` + window + `]))
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
    interval: ` + promDuration(st.interval) + `
    threshold: 3
    iterations: 10
    metrics:
    - name: request-success-rate
      templateRef: {name: request-success-rate}
      thresholdRange: {min: 99}
      interval: ` + window + `
`
}

// promDuration is d as Prometheus and Flagger write it (1m, 30s, 1m30s).
func promDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
