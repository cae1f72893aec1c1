package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	cfg, err := Parse("rollback.yaml", []byte(`apiVersion: rollback/v1
kind: Config
services:
  transaction-service:
    kubernetes:
      context: prod
      namespace: payments
  ledger:
    kubernetes:
      name: ledger-api
    notify:
      slack: {tokenEnv: SLACK_BOT_TOKEN, mentions: ["<@U01TECHLEAD>"]}
      pagerduty: {routingKeyEnv: PD_ROUTING_KEY}
      webhooks:
        - {name: ops-slack, format: slack, urlEnv: SLACK_WEBHOOK_URL}
        - {name: status-page, format: json, url: "https://status.example/hooks/rollback"}
    decide:
      apiAdoptionQuery: sum(rate(api_v2[5m])) / sum(rate(api[5m]))
      apiAdoptionThreshold: 0.05
    flag: {provider: flagd, key: transaction-category, path: /etc/flagd/flags.json}
    verify:
      prometheus: http://127.0.0.1:9090
      errorRateQuery: sum(rate(x[1m]))
      maxErrorRate: 0.001
      within: 5m
      maxLatency: 500ms
      smoke:
        - name: health
          url: http://127.0.0.1:8080/
          headers: {Authorization: "Bearer ${INFLIGHT_API_KEY}"}
          expectStatus: 200
          maxLatency: 1s
`))
	if err != nil {
		t.Fatal(err)
	}
	ts := cfg.Services["transaction-service"].Kubernetes
	if ts != (Kubernetes{Context: "prod", Namespace: "payments", Kind: "Deployment", Name: "transaction-service"}) {
		t.Errorf("transaction-service = %+v, want the defaults filled in (kind Deployment, name = service)", ts)
	}
	if got := cfg.Services["ledger"].Kubernetes.Name; got != "ledger-api" {
		t.Errorf("ledger name = %q, want ledger-api", got)
	}
	if n := cfg.Services["ledger"].Notify; n == nil || n.Slack.TokenEnv != "SLACK_BOT_TOKEN" || n.PagerDuty.RoutingKeyEnv != "PD_ROUTING_KEY" || len(n.Slack.Mentions) != 1 {
		t.Errorf("notify = %+v", n)
	}
	if wh := cfg.Services["ledger"].Notify.Webhooks; len(wh) != 2 || wh[0] != (WebhookNotify{Name: "ops-slack", Format: "slack", URLEnv: "SLACK_WEBHOOK_URL"}) || wh[1].URL != "https://status.example/hooks/rollback" {
		t.Errorf("webhooks = %+v", wh)
	}
	if d := cfg.Services["ledger"].Decide; d == nil || d.APIAdoptionThreshold != 0.05 || d.APIAdoptionQuery == "" {
		t.Errorf("decide = %+v", d)
	}
	if fl := cfg.Services["ledger"].Flag; fl == nil || fl.Provider != "flagd" || fl.Path != "/etc/flagd/flags.json" {
		t.Errorf("flag = %+v", fl)
	}
	vf := cfg.Services["ledger"].Verify
	if vf == nil || vf.MaxErrorRate != 0.001 || vf.Within != 5*time.Minute || vf.MaxLatency != 500*time.Millisecond ||
		len(vf.Smoke) != 1 || vf.Smoke[0].Headers["Authorization"] != "Bearer ${INFLIGHT_API_KEY}" || vf.Smoke[0].MaxLatency != time.Second {
		t.Errorf("verify = %+v", vf)
	}
	if got := strings.Join(cfg.ServiceNames(), ","); got != "ledger,transaction-service" {
		t.Errorf("ServiceNames = %s", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error
	}{
		{"empty", ``, []string{"rollback.yaml:1", "empty"}},
		{"not yaml", "services: [\n", []string{"rollback.yaml:", "not valid YAML"}},
		{"wrong version", "apiVersion: rollback/v9\nservices: {}\n", []string{"rollback.yaml:1: apiVersion", `expected "rollback/v1"`}},
		{"missing services", "apiVersion: rollback/v1\n", []string{"services: missing"}},
		{"bad snapshot store", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    database:\n      dsnEnv: DB\n      dir: m\n      snapshotStore:\n        url: https://bucket\n        maxBytes: lots\n        accessKeyIdEnv: AK\n",
			[]string{"rollback.yaml:9: services.api.database.snapshotStore.url", "expected s3://BUCKET", "rollback.yaml:10: services.api.database.snapshotStore.maxBytes", "accessKeyIdEnv and secretAccessKeyEnv go together"}},
		{"unknown top field", "apiVersion: rollback/v1\nservices: {}\nservice: {}\n", []string{"rollback.yaml:3: service: unknown field; expected one of: apiVersion, kind, services"}},
		{"unknown nested field", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes:\n      namespce: x\n",
			[]string{"rollback.yaml:5: services.api.kubernetes.namespce: unknown field", "namespace"}},
		{"bad kind", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes:\n      kind: CronJob\n",
			[]string{"rollback.yaml:5: services.api.kubernetes.kind", `unsupported kind "CronJob"`, "Deployment"}},
		{"bad namespace", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes:\n      namespace: Pay_ments\n",
			[]string{"rollback.yaml:5: services.api.kubernetes.namespace", "not a valid namespace"}},
		{"bad service name", "apiVersion: rollback/v1\nservices:\n  API:\n    kubernetes: {}\n", []string{"rollback.yaml:3: services.API", "DNS label"}},
		{"missing kubernetes", "apiVersion: rollback/v1\nservices:\n  api: {}\n", []string{"services.api.kubernetes: missing"}},
		{"list instead of map", "apiVersion: rollback/v1\nservices:\n  - api\n", []string{"rollback.yaml:3: services: expected a mapping"}},
		{"number not string", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes:\n      name: [a]\n", []string{"services.api.kubernetes.name: expected a string"}},
		{"bad verify duration", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    verify:\n      within: five minutes\n",
			[]string{"rollback.yaml:6: services.api.verify.within", "not a positive duration"}},
		{"bad error rate", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    verify:\n      maxErrorRate: 5\n",
			[]string{"services.api.verify.maxErrorRate", "fraction between 0 and 1"}},
		{"smoke without url", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    verify:\n      smoke:\n        - name: x\n",
			[]string{"rollback.yaml:7: services.api.verify.smoke[0]", "needs a name and a url"}},
		{"smoke bad status", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    verify:\n      smoke:\n        - {name: x, url: 'http://a/', expectStatus: 9000}\n",
			[]string{"services.api.verify.smoke[0].expectStatus", "HTTP status code"}},
		{"secret in the file", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      slack: {tokenEnv: 'xoxb-123-abc'}\n",
			[]string{"rollback.yaml:6: services.api.notify.slack.tokenEnv", "not an environment variable name"}},
		{"launchdarkly without project", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    flag: {provider: launchdarkly, key: f, environment: production, tokenEnv: LD_TOKEN}\n",
			[]string{"services.api.flag.project", "project key (not the environment)"}},
		{"unknown flag provider", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    flag: {provider: split, key: f}\n",
			[]string{"services.api.flag.provider", "unsupported provider"}},
		{"webhook url and urlEnv", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      webhooks:\n        - {name: a, format: json, url: 'http://x/', urlEnv: HOOK}\n",
			[]string{"rollback.yaml:7: services.api.notify.webhooks[0]", "exactly one of url and urlEnv"}},
		{"load balancer bad listener", "apiVersion: rollback/v1\nservices:\n  web:\n    loadBalancer:\n      listenerArn: arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/x/1\n",
			[]string{"rollback.yaml:5: services.web.loadBalancer.listenerArn", "not a listener ARN"}},
		{"gitops bad revert", "apiVersion: rollback/v1\nservices:\n  web:\n    kubernetes: {}\n    gitops: {revert: yes-please}\n",
			[]string{"rollback.yaml:5: services.web.gitops.revert", "expected push, pull-request or off"}},
		{"gitops credentials in the URL", "apiVersion: rollback/v1\nservices:\n  web:\n    kubernetes: {}\n    gitops: {repo: 'https://bot:ghp_x@github.com/acme/shop.git'}\n",
			[]string{"services.web.gitops.repo", "carries credentials"}},
		{"gitops token over plain http", "apiVersion: rollback/v1\nservices:\n  web:\n    kubernetes: {}\n    gitops: {repo: 'http://git.example.com/shop.git', tokenEnv: T}\n",
			[]string{"services.web.gitops.repo", "token in clear"}},
		{"gitops branch as a ref", "apiVersion: rollback/v1\nservices:\n  web:\n    kubernetes: {}\n    gitops: {branch: refs/heads/main}\n",
			[]string{"services.web.gitops.branch", "not a branch name"}},
		{"gitops username without token", "apiVersion: rollback/v1\nservices:\n  web:\n    kubernetes: {}\n    gitops:\n      username: bot\n",
			[]string{"services.web.gitops.tokenEnv: missing"}},
		{"gitops pull request without forge", "apiVersion: rollback/v1\nservices:\n  web:\n    kubernetes: {}\n    gitops:\n      revert: pull-request\n",
			[]string{"rollback.yaml:6: services.web.gitops.forge: missing"}},
		{"gitops forge incomplete", "apiVersion: rollback/v1\nservices:\n  web:\n    kubernetes: {}\n    gitops:\n      forge: {type: github, project: shop, tokenEnv: GH_TOKEN}\n",
			[]string{"services.web.gitops.forge.project", "OWNER/REPO"}},
		{"load balancer without listener", "apiVersion: rollback/v1\nservices:\n  web:\n    loadBalancer: {region: eu-west-1}\n",
			[]string{"rollback.yaml:4: services.web.loadBalancer.listenerArn: missing"}},
		{"load balancer bad target group", "apiVersion: rollback/v1\nservices:\n  web:\n    loadBalancer:\n      listenerArn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/w/1/2\n      targetGroups: {blue: 'not-an-arn'}\n",
			[]string{"services.web.loadBalancer.targetGroups.blue", "not a target group ARN"}},
		{"webhook bad format", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      webhooks:\n        - {name: a, format: teams, urlEnv: HOOK}\n",
			[]string{"services.api.notify.webhooks[0].format", "unsupported format \"teams\""}},
		{"webhook duplicate name", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      webhooks:\n        - {name: a, format: json, url: 'http://x/'}\n        - {name: a, format: slack, urlEnv: HOOK}\n",
			[]string{"rollback.yaml:8: services.api.notify.webhooks[1].name", "duplicate webhook name"}},
		{"webhooks not a list", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      webhooks: {name: a}\n",
			[]string{"services.api.notify.webhooks", "expected a list of webhooks"}},
		{"decide bad threshold", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    decide:\n      apiAdoptionThreshold: 5\n",
			[]string{"rollback.yaml:6: services.api.decide.apiAdoptionThreshold", "fraction between 0 and 1"}},
		{"pagerduty rest without from", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      pagerduty: {apiTokenEnv: PD_API_TOKEN}\n",
			[]string{"rollback.yaml:6: services.api.notify.pagerduty.from", "email of the PagerDuty user"}},
		{"pagerduty nothing", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      pagerduty: {eventsURL: 'http://x'}\n",
			[]string{"services.api.notify.pagerduty.routingKeyEnv", "or give apiTokenEnv and from"}},
		{"pagerduty from not email", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes: {}\n    notify:\n      pagerduty: {apiTokenEnv: T, from: oncall}\n",
			[]string{"services.api.notify.pagerduty.from", "not an email address"}},
		{"duplicate key", "apiVersion: rollback/v1\nservices:\n  api:\n    kubernetes:\n      name: a\n      name: b\n", []string{"rollback.yaml:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("rollback.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseReportsEveryError(t *testing.T) {
	_, err := Parse("c.yaml", []byte("apiVersion: rollback/v2\nservices:\n  a:\n    kubernetes:\n      kind: Job\n      bogus: 1\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 3 {
		t.Fatalf("got %v, want 3 errors (version, kind, unknown field)", err)
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: rollback/v1\nservices: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noenv := func(string) string { return "" }
	if got, err := Find(path, noenv); err != nil || got != path {
		t.Errorf("explicit: got %q, %v", got, err)
	}
	if _, err := Find(filepath.Join(dir, "missing.yaml"), noenv); err == nil {
		t.Error("explicit missing file: want an error")
	}
	env := func(k string) string {
		if k == "ROLLBACK_CONFIG" {
			return path
		}
		return ""
	}
	if got, err := Find("", env); err != nil || got != path {
		t.Errorf("from env: got %q, %v", got, err)
	}
	t.Chdir(dir)
	if _, err := Find("", noenv); !errors.Is(err, ErrNotFound) {
		t.Errorf("nothing anywhere: got %v, want ErrNotFound", err)
	}
}

// FuzzParse: any input either parses into a config whose services all have
// a kind and a name, or fails with an error that names the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte("apiVersion: rollback/v1\nkind: Config\nservices:\n  a:\n    kubernetes:\n      namespace: n\n"))
	f.Add([]byte("services: [\n"))
	f.Add([]byte("apiVersion: rollback/v1\nservices:\n  a: &x {kubernetes: {}}\n  b: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for name, s := range cfg.Services {
			if s.Kubernetes.Kind != "Deployment" || s.Kubernetes.Name == "" {
				t.Fatalf("service %q parsed without kind or name: %+v", name, s.Kubernetes)
			}
		}
	})
}

// A huge file is refused before parsing; thousands of errors print as the
// first MaxErrors and a count.
func TestInputLimits(t *testing.T) {
	big := []byte("apiVersion: rollback/v1\nkind: Config\n# " + strings.Repeat("x", MaxSize) + "\n")
	path := filepath.Join(t.TempDir(), "rollback.yaml")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "larger than 1024 KiB") {
		t.Fatalf("got %v", err)
	}
	var b strings.Builder
	b.WriteString("apiVersion: rollback/v1\nkind: Config\n")
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&b, "unknown%d: %s\n", i, strings.Repeat("y", 100))
	}
	_, err = Parse("rollback.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("5000 unknown keys accepted")
	}
	if n := len(err.Error()); n > 20*400 || !strings.Contains(err.Error(), "more error(s)") {
		t.Errorf("error output is %d bytes: %.300s", n, err.Error())
	}
}
