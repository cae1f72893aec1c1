package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestRunbookNotifiesAndTurnsTheFlagOff: a configured service's run posts
// the start and closing messages in a new incident channel (a local
// stand-in for Slack's Web API), turns the flagd flag off, and never lets
// the token reach output, journal or store.
func TestRunbookNotifiesAndTurnsTheFlagOff(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	const token = "xoxb-SECRET-4242-do-not-leak"
	var mu sync.Mutex
	var channels []string
	var posts []string
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+token {
			json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "invalid_auth"})
			return
		}
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		switch r.URL.Path {
		case "/api/conversations.create":
			channels = append(channels, fmt.Sprint(body["name"]))
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": map[string]any{"id": "C1", "name": body["name"]}})
		case "/api/chat.postMessage":
			posts = append(posts, fmt.Sprint(body["text"]))
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": body["channel"], "ts": "1.2"}) // Slack: the channel id
		default:
			json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "unknown_method"})
		}
	}))
	defer slack.Close()
	// Webhooks: a Slack incoming webhook whose URL holds a secret (given
	// through the environment) and a generic JSON one.
	const hookSecret = "B0HOOK-SECRET-777"
	hooks := map[string][]map[string]any{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.Header.Get("Content-Type") == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		hooks[r.URL.Path] = append(hooks[r.URL.Path], body)
	}))
	defer hook.Close()
	// PagerDuty: Events API v2 and the REST API's incident update, in their
	// documented shapes.
	const pdKey, pdToken = "R0UTING-SECRET-55", "PDTOKEN-SECRET-66"
	var pdEvents, pdStatus []string
	dedup := map[string]bool{}
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v2/enqueue" && body["routing_key"] == pdKey:
			pdEvents = append(pdEvents, fmt.Sprint(body["event_action"]))
			dedup[fmt.Sprint(body["dedup_key"])] = true
			w.WriteHeader(http.StatusAccepted)
			json.NewEncoder(w).Encode(map[string]any{"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]})
		case r.Method == http.MethodPut && r.URL.Path == "/incidents/Q1PAGED" && r.Header.Get("Authorization") == "Token token="+pdToken &&
			r.Header.Get("From") == "oncall@example.com" && strings.Contains(r.Header.Get("Accept"), "application/vnd.pagerduty+json;version=2"):
			inc, _ := body["incident"].(map[string]any)
			if inc["type"] != "incident_reference" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			pdStatus = append(pdStatus, fmt.Sprint(inc["status"]))
			json.NewEncoder(w).Encode(map[string]any{"incident": map[string]any{"id": "Q1PAGED", "status": inc["status"]}})
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer pd.Close()
	dir := t.TempDir()
	flagFile := filepath.Join(dir, "flags.json")
	_ = os.WriteFile(flagFile, []byte(`{"flags": {"transaction-category": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}`), 0o644)
	cfg := filepath.Join(dir, "rollback.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  payments-api:
    kubernetes: {namespace: %s, name: %s}
    notify:
      slack: {tokenEnv: TEST_SLACK_TOKEN, apiURL: %s/api, mentions: ["<@U0TECHLEAD>"]}
      pagerduty: {routingKeyEnv: TEST_PD_KEY, eventsURL: "%s/v2/enqueue", apiTokenEnv: TEST_PD_TOKEN, from: oncall@example.com, apiURL: "%s"}
      webhooks:
        - {name: ops, format: slack, urlEnv: TEST_SLACK_WEBHOOK}
        - {name: status-page, format: json, url: "%s/status"}
    flag: {provider: flagd, key: transaction-category, path: %s}
    verify:
      smoke: [{name: health, url: "%s/healthz", expectStatus: 200}]
`, ns, app, slack.URL, pd.URL, pd.URL, hook.URL, flagFile, slack.URL)), 0o644)
	st := filepath.Join(dir, "state.db")
	env := map[string]string{"TEST_SLACK_TOKEN": token, "ROLLBACK_STORE": st, "TEST_SLACK_WEBHOOK": hook.URL + "/services/T0/" + hookSecret,
		"TEST_PD_KEY": pdKey, "TEST_PD_TOKEN": pdToken}
	r := rollbackEnv(t, env, "run", "payments-api", "--config", cfg, "--yes", "-o", "json", "--pagerduty-incident", "Q1PAGED")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	mu.Lock()
	if len(channels) != 1 || !strings.HasPrefix(channels[0], "incident-") || !strings.HasSuffix(channels[0], "-payments-api") {
		t.Errorf("channels %v", channels)
	}
	if len(posts) != 2 || !strings.HasPrefix(posts[0], "🔴 Initiating rollback of payments-api v1.2.0 → v1.1.5") || !strings.Contains(posts[0], "<@U0TECHLEAD>") ||
		!strings.HasPrefix(posts[1], "✅ Rollback complete") {
		t.Errorf("posts %q", posts)
	}
	// The closing summary says what the run measured.
	if len(posts) == 2 && (!strings.Contains(posts[1], "Inflight smoke tests: ✅ pod-health:") || !strings.Contains(posts[1], "smoke:health: GET") ||
		!strings.Contains(posts[1], "DB down-migration: not needed (no database configured")) {
		t.Errorf("closing summary does not carry the measured outcomes:\n%s", posts[1])
	}
	if in := hooks["/services/T0/"+hookSecret]; len(in) != 2 || !strings.HasPrefix(fmt.Sprint(in[0]["text"]), "🔴 Initiating rollback") ||
		!strings.HasPrefix(fmt.Sprint(in[1]["text"]), "✅ Rollback complete") {
		t.Errorf("slack incoming webhook got %v", in)
	}
	if in := hooks["/status"]; len(in) != 2 || in[0]["event"] != "rollback.started" || in[1]["event"] != "rollback.completed" ||
		in[1]["badVersion"] != "v1.2.0" || in[1]["summary"] == nil {
		t.Errorf("json webhook got %v", in)
	}
	if strings.Join(pdEvents, ",") != "trigger,acknowledge,resolve" || len(dedup) != 1 {
		t.Errorf("pagerduty events %v with dedup keys %v; want trigger, acknowledge, resolve under one key", pdEvents, dedup)
	}
	if strings.Join(pdStatus, ",") != "acknowledged,resolved" {
		t.Errorf("pagerduty incident Q1PAGED statuses %v; want acknowledged then resolved", pdStatus)
	}
	mu.Unlock()
	b, _ := os.ReadFile(flagFile)
	if !strings.Contains(string(b), `"defaultVariant": "off"`) {
		t.Errorf("flag file: %s", b)
	}
	var res struct{ Incident string }
	_ = json.Unmarshal([]byte(r.stdout), &res)
	s := rollbackEnv(t, env, "status", res.Incident)
	if !strings.Contains(s.stdout, "flagd flag transaction-category off (read back)") || !strings.Contains(s.stdout, "slack slack-summary in #incident-") ||
		!strings.Contains(s.stdout, "smoke:health: GET") {
		t.Errorf("status:\n%s", s.stdout)
	}
	// The token is in none of the output, the journal or the store's files.
	leak := r.stdout + r.stderr + s.stdout + s.stderr + rollbackEnv(t, env, "report", res.Incident).stdout
	files, _ := filepath.Glob(st + "*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		leak += string(b)
	}
	if strings.Contains(leak, token) || strings.Contains(leak, "SECRET-4242") {
		t.Error("the Slack token leaked into output or the store")
	}
	if strings.Contains(leak, pdKey) || strings.Contains(leak, pdToken) {
		t.Error("a PagerDuty secret leaked into output or the store")
	}
	if strings.Contains(leak, hookSecret) {
		t.Error("the webhook URL's secret leaked into output or the store")
	}
	if !strings.Contains(s.stdout, "webhook ops: summary sent") || !strings.Contains(s.stdout, "webhook status-page: start sent") {
		t.Errorf("status does not show the webhooks:\n%s", s.stdout)
	}
	if len(files) == 0 {
		t.Error("no store files to check")
	}
}
