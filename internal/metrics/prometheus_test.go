package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rollback-dev/rollback/internal/reaper"
)

var promURL string

// TestMain starts a test exporter and a real Prometheus (Debian's package)
// scraping it every second.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		reg := prometheus.NewRegistry()
		req := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "requests"}, []string{"code"})
		reg.MustRegister(req)
		up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "test_ready", Help: "a constant"})
		up.Set(3)
		reg.MustRegister(up)
		nan := prometheus.NewGauge(prometheus.GaugeOpts{Name: "test_nan", Help: "NaN"})
		reg.MustRegister(nan)
		nan.Set(0)
		go func() {
			for {
				req.WithLabelValues("200").Add(99)
				req.WithLabelValues("500").Add(1)
				time.Sleep(100 * time.Millisecond)
			}
		}()
		exp := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		defer exp.Close()

		bin, err := exec.LookPath("prometheus")
		if err != nil {
			fmt.Fprintln(os.Stderr, "metrics tests need Prometheus (apt-get install prometheus; make deps does)")
			return 1
		}
		dir, _ := os.MkdirTemp("", "rollback-prom-")
		defer os.RemoveAll(dir)
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: ['%s']\n", exp.Listener.Addr())
		_ = os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644)
		cmd := reaper.Child(exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr))
		log, _ := os.Create(filepath.Join(dir, "log"))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		promURL = "http://" + addr
		// Wait until two scrapes exist, so rate() has data.
		p, _ := NewPrometheus(promURL)
		deadline := time.Now().Add(60 * time.Second)
		for {
			if v, err := p.Query(context.Background(), `count_over_time(test_ready[1m])`, time.Now()); err == nil && v >= 3 {
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(dir, "log"))
				fmt.Fprintf(os.Stderr, "prometheus never scraped the exporter:\n%s\n", b)
				return 1
			}
			time.Sleep(200 * time.Millisecond)
		}
		return m.Run()
	}())
}

func TestPrometheusQuery(t *testing.T) {
	p, err := NewPrometheus(promURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := p.Query(ctx, `test_ready`, time.Now())
	if err != nil || v != 3 {
		t.Errorf("test_ready = %v, %v; want 3", v, err)
	}
	rate, err := p.Query(ctx, `sum(rate(http_requests_total{code=~"5.."}[5s])) / sum(rate(http_requests_total[5s]))`, time.Now())
	if err != nil || rate < 0.005 || rate > 0.015 {
		t.Errorf("5xx ratio = %v, %v; want about 0.01", rate, err)
	}
	if _, err := p.Query(ctx, `no_such_metric`, time.Now()); !errors.Is(err, ErrNoData) {
		t.Errorf("missing metric: got %v, want ErrNoData", err)
	}
	if _, err := p.Query(ctx, `test_nan / test_nan`, time.Now()); !errors.Is(err, ErrNaN) {
		t.Errorf("0/0: got %v, want ErrNaN", err)
	}
	if _, err := p.Query(ctx, `http_requests_total`, time.Now()); !errors.Is(err, ErrNotScalar) {
		t.Errorf("two series: got %v, want ErrNotScalar", err)
	}
	if _, err := p.Query(ctx, `this is not promql`, time.Now()); err == nil {
		t.Error("bad query: want an error")
	}
}

func TestPrometheusQueryRange(t *testing.T) {
	p, _ := NewPrometheus(promURL)
	ctx := context.Background()
	end := time.Now()
	s, err := p.QueryRange(ctx, `test_ready`, end.Add(-5*time.Second), end, time.Second)
	if err != nil || len(s) < 2 {
		t.Fatalf("range: %v, %v", s, err)
	}
	for _, x := range s {
		if x.Value != 3 {
			t.Errorf("sample %v, want 3", x)
		}
	}
	if _, err := p.QueryRange(ctx, `test_nan / test_nan`, end.Add(-5*time.Second), end, time.Second); !errors.Is(err, ErrNoData) {
		t.Errorf("all-NaN range: got %v, want ErrNoData", err)
	}
	dead, err := NewPrometheus("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Query(ctx, `up`, time.Now()); err == nil {
		t.Error("unreachable Prometheus: want an error")
	}
}
