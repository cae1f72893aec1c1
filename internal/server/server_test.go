package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/kube/kubetest"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/store"
)

const (
	opToken   = "operator-token-0123456789"
	readToken = "reader-token-0123456789"
	slackKey  = "8f742231b10e8888abcd99yyyzzz85a5"
)

type fixture struct {
	srv   *Server
	ts    *httptest.Server
	store store.Store
	cs    *fake.Clientset
}

// newFixture serves a server on a fake cluster whose Deployment shop/web
// (the configured service "web", automation as given) runs v2 over v1.
func newFixture(t *testing.T, auto *config.Automation, opts ...func(*Options)) *fixture {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := kubetest.Deployment("shop", "web")
	cfg := &config.Config{Services: map[string]*config.Service{"web": {Kubernetes: config.Kubernetes{Namespace: "shop", Name: "web", Kind: "Deployment"}, Automation: auto}}}
	auth, err := NewAuth("ops=operate:" + opToken + ",dash=read:" + readToken)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fixture{store: st, cs: cs}
	o0 := Options{Store: st, Config: cfg, Auth: auth, SlackSigningSecret: slackKey, SlackOperators: []string{"U1"},
		Engine: func(ev progress.Func) *engine.Engine {
			return &engine.Engine{Store: st, Config: cfg, Getenv: func(string) string { return "" }, Events: ev,
				StateDir: func(string) (string, error) { return dir, nil },
				Client:   func(string) (kubernetes.Interface, error) { return cs, nil }}
		},
		Resolve: func(_ context.Context, svc string) (*engine.Workload, error) {
			if parts := strings.Split(svc, "/"); len(parts) == 3 { // NAMESPACE/KIND/NAME
				kind, err := kube.ParseKind(parts[1])
				if err != nil {
					return nil, err
				}
				wl := &engine.Workload{Target: kube.Target{Namespace: parts[0], Name: parts[2], Kind: kind}, Client: cs}
				if wl.Target.String() == "shop/deployment/web" {
					wl.Service = "web"
				}
				return wl, nil
			}
			if svc != "web" {
				return nil, fmt.Errorf("unknown service %q", svc)
			}
			return &engine.Workload{Service: "web", Target: kube.Target{Namespace: "shop", Name: "web", Kind: kube.KindDeployment}, Client: cs}, nil
		}}
	for _, o := range opts {
		o(&o0)
	}
	f.srv = New(o0)
	f.ts = httptest.NewServer(f.srv.Handler())
	t.Cleanup(func() { f.ts.Close(); f.srv.Wait() })
	return f
}

func (f *fixture) do(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.ts.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// incidents waits for background work and lists the store's incidents.
func (f *fixture) incidents(t *testing.T) []store.Incident {
	t.Helper()
	f.srv.Wait()
	incs, err := f.store.ListIncidents(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return incs
}

func TestAuthRoles(t *testing.T) {
	f := newFixture(t, nil)
	block := `{"service":"web","version":"v2","reason":"5xx"}`
	for _, c := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"POST", "/api/v1/blocks", "", block, 401},
		{"POST", "/api/v1/blocks", "wrong-token-0123456789", block, 401},
		{"GET", "/api/v1/incidents", "", "", 401},
		{"POST", "/api/v1/blocks", readToken, block, 403},
		{"POST", "/api/v1/runs", readToken, `{"service":"web"}`, 403},
		{"POST", "/hooks/alertmanager", readToken, `{}`, 403},
		{"GET", "/api/v1/incidents", readToken, "", 200},
		{"POST", "/api/v1/blocks", opToken, block, 201},
		{"GET", "/api/v1/gate?service=web&version=v2", readToken, "", 200},
		{"DELETE", "/api/v1/blocks/web/v2", opToken, "", 204},
		{"DELETE", "/api/v1/blocks/web/v2", opToken, "", 404},
		{"POST", "/api/v1/blocks", opToken, `{"service":"web"}`, 400},
		{"POST", "/api/v1/blocks", opToken, `{"service":"web","version":"v2","reason":"x","extra":1}`, 400},
	} {
		code, body := f.do(t, c.method, c.path, c.token, c.body)
		if code != c.want {
			t.Errorf("%s %s as %q: got %d %s, want %d", c.method, c.path, c.token, code, body, c.want)
		}
		if strings.Contains(body, opToken) || strings.Contains(body, readToken) {
			t.Errorf("%s %s: a token is in the answer: %s", c.method, c.path, body)
		}
	}
	code, body := f.do(t, "GET", "/api/v1/gate?service=web&version=v2", readToken, "")
	var g GateAnswer
	if json.Unmarshal([]byte(body), &g); code != 200 || !g.Allowed {
		t.Errorf("gate after unblock: %d %s", code, body)
	}
	if _, err := NewAuth("ops=admin:" + opToken); err == nil || strings.Contains(err.Error(), opToken) {
		t.Errorf("a bad role: %v", err)
	}
	if _, err := NewAuth("ops=operate:short"); err == nil {
		t.Error("a short token was accepted")
	}
}

func alertBody(groupKey, alertname, severity string) string {
	return fmt.Sprintf(`{"version":"4","groupKey":%q,"status":"firing","receiver":"rollback","groupLabels":{"alertname":%q},
"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am:9093","truncatedAlerts":0,
"alerts":[{"status":"firing","labels":{"alertname":%q,"service":"web","severity":%q},"annotations":{"summary":"5xx above 1%%"},
"startsAt":"2026-11-27T03:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"abc"}]}`, groupKey, alertname, alertname, severity)
}

// An alert for a service that opted in rolls it back once; Alertmanager's
// repeated notifications of the group, concurrent or later, change nothing.
func TestAlertmanagerAutoRollsBackOnce(t *testing.T) {
	f := newFixture(t, &config.Automation{Auto: true, Severity: "P2", Alerts: []map[string]string{{"alertname": "HighErrorRate", "service": "web"}}})
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body := f.do(t, "POST", "/hooks/alertmanager", opToken, alertBody(`{}:{alertname="HighErrorRate"}`, "HighErrorRate", "critical")); code != 202 {
				t.Errorf("notification: %d %s", code, body)
			}
		}()
	}
	wg.Wait()
	incs := f.incidents(t)
	if len(incs) != 1 || incs[0].Status != store.StatusClosed || incs[0].Severity != "P1" || incs[0].GoodVersion != "v1" {
		t.Fatalf("incidents after 5 notifications: %+v", incs)
	}
	kubetest.RolledBack(t, f.cs, "shop", "web")
	if code, _ := f.do(t, "POST", "/hooks/alertmanager", opToken, alertBody(`{}:{alertname="HighErrorRate"}`, "HighErrorRate", "critical")); code != 202 {
		t.Fatal(code)
	}
	if n := len(f.incidents(t)); n != 1 {
		t.Errorf("a later repeat made %d incidents", n)
	}
	code, body := f.do(t, "POST", "/hooks/alertmanager", opToken, alertBody("other", "DiskFull", "warning"))
	if code != 200 || !strings.Contains(body, "no firing alert matches") {
		t.Errorf("unmatched alert: %d %s", code, body)
	}
	code, body = f.do(t, "GET", "/metrics", "", "")
	if code != 200 || !strings.Contains(body, `rollback_runs_total{outcome="recovered",service="web"} 1`) || !strings.Contains(body, "rollback_time_to_recover_seconds_count") {
		t.Errorf("metrics: %d\n%s", code, grep(body, "rollback_"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Without auto an alert opens a proposal; the API's approval runs it.
func TestAlertProposesAndAPIApproves(t *testing.T) {
	f := newFixture(t, &config.Automation{Severity: "P1", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}})
	f.do(t, "POST", "/hooks/alertmanager", opToken, alertBody("g", "HighErrorRate", ""))
	incs := f.incidents(t)
	if len(incs) != 1 || incs[0].Status != store.StatusProposed {
		t.Fatalf("got %+v, want one proposal", incs)
	}
	code, body := f.do(t, "GET", "/api/v1/incidents/"+incs[0].ID, readToken, "")
	if code != 200 || !strings.Contains(body, `"question": "What fired?"`) || !strings.Contains(body, "HighErrorRate") {
		t.Errorf("proposal view: %d %s", code, body)
	}
	code, body = f.do(t, "POST", "/api/v1/incidents/"+incs[0].ID+"/approve", opToken, "")
	if code != 202 && code != 200 {
		t.Fatalf("approve: %d %s", code, body)
	}
	var acc RunAccepted
	json.Unmarshal([]byte(body), &acc)
	f.srv.Wait()
	inc, err := f.store.GetIncident(context.Background(), acc.Incident)
	if err != nil || inc.Status != store.StatusClosed || !strings.Contains(inc.Rationale, "approved by api:ops") {
		t.Errorf("the approved run: %+v %v", inc, err)
	}
	kubetest.RolledBack(t, f.cs, "shop", "web")
	code, _ = f.do(t, "POST", "/api/v1/incidents/"+incs[0].ID+"/approve", opToken, "")
	if code != 409 {
		t.Errorf("second approval: %d, want 409", code)
	}
}

func TestFlaggerRollbackWebhook(t *testing.T) {
	f := newFixture(t, nil)
	body := `{"name":"web","namespace":"shop","phase":"Progressing","metadata":{}}`
	if code, _ := f.do(t, "POST", "/hooks/flagger/rollback", "", body); code != 404 {
		t.Errorf("no incident: %d, want 404 (Flagger goes on)", code)
	}
	ctx := context.Background()
	inc := &store.Incident{Service: "shop/canary/web"}
	if err := f.store.CreateIncident(ctx, inc); err != nil {
		t.Fatal(err)
	}
	if code, resp := f.do(t, "POST", "/hooks/flagger/rollback", "", body); code != 200 || strings.Contains(resp, inc.ID) || strings.Contains(resp, "shop") {
		t.Errorf("open incident: %d %q, want 200 (Flagger rolls back) naming nothing", code, resp)
	}
	now := time.Now()
	inc.Status, inc.ClosedAt = store.StatusClosed, &now
	f.store.UpdateIncident(ctx, inc)
	if code, _ := f.do(t, "POST", "/hooks/flagger/rollback", "", body); code != 404 {
		t.Errorf("closed incident: %d, want 404", code)
	}
	if code, _ := f.do(t, "POST", "/hooks/flagger/rollback", "", `{"phase":"x"}`); code != 400 {
		t.Errorf("no name: %d, want 400", code)
	}
}

func slackRequest(t *testing.T, f *fixture, form url.Values, ts time.Time, secret string) (int, string) {
	t.Helper()
	body := form.Encode()
	stamp := fmt.Sprint(ts.Unix())
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:%s", stamp, body)
	req, _ := http.NewRequest("POST", f.ts.URL+"/hooks/slack", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", stamp)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Slack's signature is verified; an approval from Slack runs the proposal
// as that user's decision and posts how it ended to response_url.
func TestSlackCommand(t *testing.T) {
	f := newFixture(t, &config.Automation{Severity: "P1", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}})
	followUps := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]string
		json.NewDecoder(r.Body).Decode(&m)
		if r.Header.Get("Content-Type") != "application/json" || m["response_type"] == "" {
			t.Errorf("follow-up %v %v", r.Header, m)
		}
		followUps <- m["text"]
	}))
	defer hook.Close()
	u, _ := url.Parse(hook.URL)
	f.srv.o.SlackResponseHost = u.Host
	form := url.Values{"command": {"/rollback"}, "text": {"status"}, "user_id": {"U1"}, "user_name": {"alice"}, "response_url": {hook.URL + "/commands/1"}}
	if code, _ := slackRequest(t, f, form, time.Now(), "wrong-secret"); code != 401 {
		t.Errorf("bad signature: %d", code)
	}
	if code, _ := slackRequest(t, f, form, time.Now().Add(-10*time.Minute), slackKey); code != 401 {
		t.Errorf("stale timestamp: %d", code)
	}
	code, body := slackRequest(t, f, form, time.Now(), slackKey)
	if code != 200 || !strings.Contains(body, "No open or proposed rollbacks") || !strings.Contains(body, `"response_type": "ephemeral"`) {
		t.Errorf("status: %d %s", code, body)
	}
	f.do(t, "POST", "/hooks/alertmanager", opToken, alertBody("g", "HighErrorRate", ""))
	f.srv.Wait()
	form.Set("text", "approve web")
	code, body = slackRequest(t, f, form, time.Now(), slackKey)
	if code != 200 || !strings.Contains(body, "approved by slack:@alice (U1)") {
		t.Fatalf("approve: %d %s", code, body)
	}
	f.srv.Wait()
	select {
	case text := <-followUps:
		if !strings.Contains(text, "finished") {
			t.Errorf("follow-up %q", text)
		}
	case <-time.After(5 * time.Second):
		t.Error("no follow-up posted")
	}
	incs := f.incidents(t)
	ran := 0
	for _, inc := range incs {
		if strings.Contains(inc.Rationale, "approved by slack:@alice (U1)") && inc.Status == store.StatusClosed {
			ran++
		}
	}
	if ran != 1 {
		t.Errorf("incidents approved from Slack: %d, want 1: %+v", ran, incs)
	}
	form.Set("text", "reboot everything")
	if _, body := slackRequest(t, f, form, time.Now(), slackKey); !strings.Contains(body, "Usage") {
		t.Errorf("unknown verb: %s", body)
	}
}

func TestVerifySlackRejectsTampering(t *testing.T) {
	now := time.Unix(1700000000, 0)
	body := []byte("text=run+web")
	mac := hmac.New(sha256.New, []byte("s3cret"))
	fmt.Fprintf(mac, "v0:%d:%s", now.Unix(), body)
	h := http.Header{"X-Slack-Request-Timestamp": {fmt.Sprint(now.Unix())}, "X-Slack-Signature": {"v0=" + hex.EncodeToString(mac.Sum(nil))}}
	if err := verifySlack("s3cret", h, body, now); err != nil {
		t.Fatalf("a valid request: %v", err)
	}
	if err := verifySlack("s3cret", h, []byte("text=run+ledger"), now); err == nil {
		t.Error("a changed body passed")
	}
	if err := verifySlack("s3cret", h, body, now.Add(6*time.Minute)); err == nil {
		t.Error("a replay passed")
	}
}

// The API's wide rollback answers with its incident at once.
func TestAPIRunAndWide(t *testing.T) {
	f := newFixture(t, nil)
	code, body := f.do(t, "POST", "/api/v1/runs", opToken, `{"service":"web"}`)
	if code != 202 && code != 200 {
		t.Fatalf("run: %d %s", code, body)
	}
	var acc RunAccepted
	json.Unmarshal([]byte(body), &acc)
	if acc.Incident == "" {
		t.Fatalf("no incident in %s", body)
	}
	f.srv.Wait()
	code, body = f.do(t, "GET", "/api/v1/incidents/"+acc.Incident, readToken, "")
	var v struct {
		Checklist []struct{ Status string } `json:"checklist"`
	}
	json.Unmarshal([]byte(body), &v)
	if code != 200 || len(v.Checklist) != 11 {
		t.Errorf("view: %d %s", code, body)
	}
	kubetest.RolledBack(t, f.cs, "shop", "web")
	code, body = f.do(t, "POST", "/api/v1/runs", opToken, `{"selector":"app=web"}`)
	if code != 400 || !strings.Contains(body, "namespace is required") {
		t.Errorf("wide without namespace: %d %s", code, body)
	}
	code, body = f.do(t, "POST", "/api/v1/runs", opToken, `{"service":"nope"}`)
	if code != 400 || !strings.Contains(body, "unknown service") {
		t.Errorf("unknown service: %d %s", code, body)
	}
}

// The dashboard's sign-in cookie opens pages, never the API: another site
// cannot make a signed-in browser write through it.
func TestCookieOnlyForPages(t *testing.T) {
	f := newFixture(t, nil)
	req, _ := http.NewRequest("POST", f.ts.URL+"/login", strings.NewReader(url.Values{"token": {opToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign in: %d %+v", resp.StatusCode, cookie)
	}
	page, _ := http.NewRequest("GET", f.ts.URL+"/", nil)
	page.AddCookie(cookie)
	if resp, err := noRedirect.Do(page); err != nil || resp.StatusCode != 200 {
		t.Errorf("the dashboard with the cookie: %v %v", resp.StatusCode, err)
	}
	api, _ := http.NewRequest("POST", f.ts.URL+"/api/v1/blocks", strings.NewReader(`{"service":"web","version":"v2","reason":"x"}`))
	api.AddCookie(cookie)
	if resp, err := noRedirect.Do(api); err != nil || resp.StatusCode != 401 {
		t.Errorf("the API with only the cookie: %v %v, want 401", resp.StatusCode, err)
	}
	bad, _ := http.NewRequest("POST", f.ts.URL+"/login", strings.NewReader("token=wrong-token-0123456789"))
	bad.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, _ := noRedirect.Do(bad); resp.StatusCode != 401 {
		t.Errorf("a wrong token signed in: %d", resp.StatusCode)
	}
}
