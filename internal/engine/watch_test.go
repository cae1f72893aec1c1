package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
)

// The supervised watch is configured by the service: no automation.watch
// or no Prometheus is an error that says what is missing (never a watch
// that sees nothing and calls the release healthy); the service's own
// Prometheus wins over serve's; missing data alone never breaches.
func TestSupervisedWatch(t *testing.T) {
	w := &Workload{Service: "web", Target: kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindDeployment}}
	watch := &config.Automation{Watch: &config.AutoWatch{RequestsQuery: "r", ErrorsQuery: "e", Interval: 5 * time.Second}}
	if _, err := SupervisedWatch(&config.Service{}, w, "http://prom:9090"); err == nil || !strings.Contains(err.Error(), "automation.watch") {
		t.Errorf("without automation.watch: %v", err)
	}
	if _, err := SupervisedWatch(&config.Service{Automation: watch}, w, ""); err == nil || !strings.Contains(err.Error(), "no Prometheus") {
		t.Errorf("without Prometheus: %v", err)
	}
	req, err := SupervisedWatch(&config.Service{Automation: watch, Verify: &config.Verify{Prometheus: "http://own:9090"}}, w, "http://serve:9090")
	if err != nil {
		t.Fatal(err)
	}
	if req.For != SupervisedFor || req.Interval != 5*time.Second || req.Workload != w || req.RequestsQuery != "r" {
		t.Errorf("request %+v", req)
	}
	if req.Inconclusive*int(req.Interval) <= int(SupervisedFor) {
		t.Errorf("inconclusive after %d intervals of %s: missing data alone would breach within the watch", req.Inconclusive, req.Interval)
	}
}
