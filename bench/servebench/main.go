// Command servebench measures 'rollback serve' under load, on a real
// PostgreSQL store it starts and fake clusters (no sandbox):
//
//  1. an alert storm: -rate notifications a second for -storm, across -services
//     services, each notification a group of two services' alerts (groups
//     overlap), every answer that is not 2xx sent again as Alertmanager does:
//     incidents per service (want exactly one each) and notifications never
//     accepted (want none);
//  2. with -incidents incidents in the store: p50/p99 of the dashboard's
//     page (/) and of GET /api/v1/incidents, and the store reads the leader
//     makes a second while it leads.
//
// It prints a table. Run it with `go run ./bench/servebench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/kube/kubetest"
	"github.com/rollback-dev/rollback/internal/pgtest"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/server"
	"github.com/rollback-dev/rollback/internal/store"
)

const token = "bench-operator-token-0123456789"

// client bounds every request: a hung server is a failed measurement, not
// a stalled bench.
var client = &http.Client{Timeout: 30 * time.Second}

func main() {
	services := flag.Int("services", 20, "services")
	rate := flag.Int("rate", 100, "notifications a second")
	storm := flag.Duration("storm", 60*time.Second, "how long the storm lasts")
	incidents := flag.Int("incidents", 10000, "incidents in the store for the read measurements")
	requests := flag.Int("requests", 300, "requests per read measurement")
	flag.Parse()
	if err := run(*services, *rate, *storm, *incidents, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "servebench:", err)
		os.Exit(1)
	}
}

// counting counts the store's reads.
type counting struct {
	store.Store
	reads atomic.Int64
}

func (c *counting) QueryIncidents(ctx context.Context, q store.IncidentQuery) ([]store.Incident, error) {
	c.reads.Add(1)
	return c.Store.QueryIncidents(ctx, q)
}
func (c *counting) ListIncidents(ctx context.Context, s string) ([]store.Incident, error) {
	c.reads.Add(1)
	return c.Store.ListIncidents(ctx, s)
}
func (c *counting) Events(ctx context.Context, id string) ([]store.Event, error) {
	c.reads.Add(1)
	return c.Store.Events(ctx, id)
}
func (c *counting) EventsOf(ctx context.Context, ids []string) (map[string][]store.Event, error) {
	c.reads.Add(1)
	return c.Store.EventsOf(ctx, ids)
}

func newServer(st store.Store, n int) (*server.Server, *config.Config) {
	cfg := &config.Config{Services: map[string]*config.Service{}}
	clusters := map[string]kubernetes.Interface{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc%02d", i)
		cfg.Services[name] = &config.Service{Kubernetes: config.Kubernetes{Namespace: "ns" + name, Name: name, Kind: "Deployment"},
			Automation: &config.Automation{Severity: "P2", Alerts: []map[string]string{{"service": name}}}}
		clusters[name] = kubetest.Deployment("ns"+name, name)
	}
	auth, err := server.NewAuth("bench=operate:" + token)
	if err != nil {
		panic(err)
	}
	dir, _ := os.MkdirTemp("", "servebench-")
	srv := server.New(server.Options{Store: st, Config: cfg, Auth: auth, MaxRuns: 32,
		Engine: func(ev progress.Func) *engine.Engine {
			return &engine.Engine{Store: st, Config: cfg, Getenv: func(string) string { return "" }, Events: ev,
				StateDir: func(string) (string, error) { return dir, nil },
				Client:   func(string) (kubernetes.Interface, error) { return nil, fmt.Errorf("no cluster") }}
		},
		Resolve: func(_ context.Context, svc string) (*engine.Workload, error) {
			cs, ok := clusters[svc]
			if !ok {
				return nil, fmt.Errorf("unknown service %q", svc)
			}
			return &engine.Workload{Service: svc, Target: kube.Target{Namespace: "ns" + svc, Name: svc, Kind: kube.KindDeployment}, Client: cs}, nil
		}})
	return srv, cfg
}

func post(url, body string) (int, error) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func run(services, rate int, storm time.Duration, incidents, requests int) error {
	ctx := context.Background()
	pg, err := pgtest.Start(ctx)
	if err != nil {
		return err
	}
	defer pg.Stop()

	// 1. The storm.
	dsn, err := pg.CreateDB(ctx, "storm")
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	srv, _ := newServer(st, services)
	ts := httptest.NewServer(srv.Handler())
	started := time.Now().UTC()
	var sent, accepted, retried, lost atomic.Int64
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	end := time.Now().Add(storm)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		a, b := i%services, (i+1)%services
		body := fmt.Sprintf(`{"version":"4","groupKey":"{}:{group=\"g%d\"}","status":"firing","receiver":"rollback","alerts":[`+
			`{"status":"firing","labels":{"alertname":"Errors","service":"svc%02d"},"startsAt":%q,"fingerprint":"fp%02d"},`+
			`{"status":"firing","labels":{"alertname":"Errors","service":"svc%02d"},"startsAt":%q,"fingerprint":"fp%02d"}]}`,
			a, a, started.Format(time.RFC3339Nano), a, b, started.Format(time.RFC3339Nano), b)
		sent.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for try := 0; try < 10; try++ {
				code, err := post(ts.URL+"/hooks/alertmanager", body)
				if err == nil && code/100 == 2 {
					accepted.Add(1)
					return
				}
				retried.Add(1)
				time.Sleep(time.Duration(try+1) * 500 * time.Millisecond)
			}
			lost.Add(1)
		}()
	}
	tick.Stop()
	wg.Wait()
	srv.Wait()
	ts.Close()
	perService := map[string]int{}
	incs, err := st.ListIncidents(ctx, "")
	if err != nil {
		return err
	}
	for _, inc := range incs {
		perService[inc.Service]++
	}
	exact := 0
	for i := 0; i < services; i++ {
		if perService[fmt.Sprintf("svc%02d", i)] == 1 {
			exact++
		}
	}
	st.Close()

	// 2. Reads with a long history.
	dsn, err = pg.CreateDB(ctx, "history")
	if err != nil {
		return err
	}
	base, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer base.Close()
	t0 := time.Now().Add(-time.Duration(incidents) * time.Minute)
	for i := 0; i < incidents; i++ {
		inc := &store.Incident{Service: fmt.Sprintf("svc%02d", i%services), Status: store.StatusClosed, OpenedAt: t0.Add(time.Duration(i) * time.Minute)}
		if err := base.CreateIncident(ctx, inc); err != nil {
			return err
		}
		for _, step := range []string{"declare", "kube-undo", "verify", "close"} {
			if _, err := base.AppendEvent(ctx, store.Event{Incident: inc.ID, Time: inc.OpenedAt.Add(time.Second), Step: step, Phase: store.PhaseDone}); err != nil {
				return err
			}
		}
	}
	cs := &counting{Store: base}
	srv, _ = newServer(cs, services)
	ts = httptest.NewServer(srv.Handler())
	defer ts.Close()
	measure := func(path string) (p50, p99 time.Duration, err error) {
		var d []time.Duration
		for i := 0; i < requests; i++ {
			req, _ := http.NewRequest("GET", ts.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			t := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				return 0, 0, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return 0, 0, fmt.Errorf("%s: %d", path, resp.StatusCode)
			}
			d = append(d, time.Since(t))
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2], d[len(d)*99/100], nil
	}
	// Alternate the order of the two pages over two rounds.
	type row struct {
		name     string
		p50, p99 time.Duration
	}
	var rows []row
	for round := 0; round < 2; round++ {
		paths := []string{"/", "/api/v1/incidents"}
		if round == 1 {
			paths = []string{"/api/v1/incidents", "/"}
		}
		for _, p := range paths {
			a, b, err := measure(p)
			if err != nil {
				return err
			}
			rows = append(rows, row{fmt.Sprintf("GET %s (round %d)", p, round+1), a, b})
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cs.reads.Store(0)
	srv.Lead(lctx, time.Second)
	cancel()
	leaderQPS := float64(cs.reads.Load()) / 10

	fmt.Printf("\nAlert storm: %d notifications/s for %s across %d services (groups of two services, overlapping), PostgreSQL store\n\n", rate, storm, services)
	fmt.Printf("| notifications sent | accepted | answers retried (503/429) | never accepted | services with exactly one incident | incidents |\n|---|---|---|---|---|---|\n")
	fmt.Printf("| %d | %d | %d | %d | %d of %d | %d |\n", sent.Load(), accepted.Load(), retried.Load(), lost.Load(), exact, services, len(incs))
	fmt.Printf("\nReads with %d incidents in the PostgreSQL store (%d requests each, p50/p99)\n\n| request | p50 | p99 |\n|---|---|---|\n", incidents, requests)
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s |\n", r.name, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond))
	}
	fmt.Printf("\nThe leader's store reads while it leads (10 s, scan every 1 s): %.1f a second\n", leaderQPS)
	return nil
}
