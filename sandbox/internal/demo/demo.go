// Package demo is the sandbox's stand-in for transaction-service: an HTTP
// service whose behaviour follows the image versions of the Ready pods of
// its Deployment. A request is served "by" a random Ready pod; a pod on a
// broken version answers some 5xx and slower. It exports Prometheus metrics
// (http_requests_total{code,version}, http_request_duration_seconds) and can
// generate its own load, so rollbacks have real, measurable effects.
package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Options configure the service.
type Options struct {
	Namespace, Deployment string
	// Selector, when set, picks the serving pods instead of the
	// Deployment's selector (a canary's primary and canary pods together:
	// "app in (web, web-primary)").
	Selector     string
	Broken       []string      // image tags that misbehave
	ErrorRate    float64       // 5xx share of a broken pod
	ExtraLatency time.Duration // added by a broken pod
	BaseLatency  time.Duration
	RPS          float64 // self-generated load; 0 for none
}

// Service is a running demo service.
type Service struct {
	o        Options
	cs       kubernetes.Interface
	mu       sync.RWMutex
	versions []string // tags of Ready pods
	reqs     *prometheus.CounterVec
	dur      *prometheus.HistogramVec
	reg      *prometheus.Registry
}

// New builds the service.
func New(cs kubernetes.Interface, o Options) *Service {
	s := &Service{o: o, cs: cs, reg: prometheus.NewRegistry()}
	s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "Requests by status code and serving version."}, []string{"code", "version"})
	s.dur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_request_duration_seconds", Help: "Request latency by serving version.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"version"})
	s.reg.MustRegister(s.reqs, s.dur)
	return s
}

// Handler serves "/" (the API) and "/metrics".
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", s.serve)
	return mux
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.mu.RLock()
	vs := s.versions
	s.mu.RUnlock()
	if len(vs) == 0 {
		s.reqs.WithLabelValues("503", "none").Inc()
		http.Error(w, "no ready pods", http.StatusServiceUnavailable)
		return
	}
	v := vs[rand.IntN(len(vs))]
	broken := false
	for _, b := range s.o.Broken {
		broken = broken || b == v
	}
	lat := s.o.BaseLatency + time.Duration(rand.Int64N(int64(s.o.BaseLatency)+1))
	code := http.StatusOK
	if broken {
		lat += s.o.ExtraLatency
		if rand.Float64() < s.o.ErrorRate {
			code = http.StatusInternalServerError
		}
	}
	time.Sleep(lat)
	w.Header().Set("X-Served-By-Version", v)
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"version":%q,"status":%d}`+"\n", v, code)
	s.reqs.WithLabelValues(fmt.Sprint(code), v).Inc()
	s.dur.WithLabelValues(v).Observe(time.Since(start).Seconds())
}

// Versions returns the image tags of the Ready pods, one per pod.
func (s *Service) Versions() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string(nil), s.versions...)
}

// Refresh reads the Ready pods of the Deployment (or the selector) once.
func (s *Service) Refresh(ctx context.Context) error {
	sel := s.o.Selector
	if sel == "" {
		d, err := s.cs.AppsV1().Deployments(s.o.Namespace).Get(ctx, s.o.Deployment, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ls, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return err
		}
		sel = ls.String()
	}
	pods, err := s.cs.CoreV1().Pods(s.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return err
	}
	var vs []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || !ready(&p) || len(p.Spec.Containers) == 0 {
			continue
		}
		img := p.Spec.Containers[0].Image
		tag := img[strings.LastIndex(img, ":")+1:]
		vs = append(vs, tag)
	}
	s.mu.Lock()
	s.versions = vs
	s.mu.Unlock()
	return nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Run serves on l, refreshes the pods every 250ms and, with RPS > 0,
// sends itself load, until ctx ends.
func (s *Service) Run(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			_ = s.Refresh(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	if s.o.RPS > 0 {
		go s.load(ctx, "http://"+l.Addr().String()+"/")
	}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (s *Service) load(ctx context.Context, url string) {
	c := &http.Client{Timeout: 5 * time.Second}
	interval := time.Duration(float64(time.Second) / s.o.RPS)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			go func() {
				resp, err := c.Get(url)
				if err == nil {
					resp.Body.Close()
				}
			}()
		}
	}
}
