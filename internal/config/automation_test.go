package config

import (
	"strings"
	"testing"
)

func TestAutomation(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte(`apiVersion: rollback/v1
kind: Config
services:
  api:
    kubernetes: {namespace: prod}
    automation:
      auto: true
      alerts:
        - {alertname: HighErrorRate, service: api}
        - {app: api-canary}
      watch: {requestsQuery: 'sum(r{v="{{version}}"})', errorsQuery: 'sum(e{v="{{version}}"})', interval: 10s}
      staging: {namespace: staging, badImage: "reg.example:5000/api:v0-chaos"}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Services["api"].Automation
	if !a.Auto || a.Severity != "P2" || a.Watch.Interval.Seconds() != 10 || a.Staging.Namespace != "staging" {
		t.Errorf("got %+v", a)
	}
	for _, c := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"alertname": "HighErrorRate", "service": "api", "severity": "critical"}, true},
		{map[string]string{"alertname": "HighErrorRate", "service": "ledger"}, false},
		{map[string]string{"app": "api-canary"}, true},
		{map[string]string{}, false},
	} {
		if got := a.Matches(c.labels); got != c.want {
			t.Errorf("Matches(%v) = %v, want %v", c.labels, got, c.want)
		}
	}
	var none *Automation
	if none.Matches(map[string]string{"app": "api-canary"}) {
		t.Error("a service without automation matched")
	}
}

func TestAutomationErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"auto: yes please", "services.api.automation.auto: expected true or false"},
		{"alerts: {alertname: X}", "expected a list of label matchers"},
		{"alerts: [{}]", "services.api.automation.alerts.0: expected a mapping"},
		{"severity: urgent", `"urgent" is not a severity`},
		{"watch: {interval: 10s}", "needs requestsQuery and errorsQuery"},
		{"staging: {badImage: x}", "automation.staging.namespace: missing"},
		{"staging: {namespace: Not_A_Namespace}", "is not a namespace name"},
	} {
		_, err := Parse("r.yaml", []byte("apiVersion: rollback/v1\nkind: Config\nservices:\n  api:\n    kubernetes: {namespace: prod}\n    automation:\n      "+c.yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestAlertSeverity(t *testing.T) {
	for in, want := range map[string]string{"critical": "P1", "P1": "P1", "p3": "P3", " Warning ": "P3", "info": "P4", "page": "", "P5": ""} {
		if got := AlertSeverity(in); got != want {
			t.Errorf("AlertSeverity(%q) = %q, want %q", in, got, want)
		}
	}
}
