package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/store"
)

const (
	triggerToken = "trigger-token-0123456789"
	scopedToken  = "scoped-token-0123456789"
	saAlice      = "sa-alice-token-0123456789" // may patch shop/deployment/web
	saBob        = "sa-bob-token-0123456789"   // authenticated, may not
)

// withTrust adds a trigger token, a token scoped to another service,
// TokenReview users (alice may roll back web, bob may not) and a
// SubjectAccessReview that says so.
func withTrust(reviews *atomic.Int32) func(*Options) {
	return func(o *Options) {
		ts, err := ParseTokens("ops=operate:" + opToken + ",dash=read:" + readToken + ",am=trigger:" + triggerToken + ",ledger=operate@ledger|shop/deployment/ledger:" + scopedToken)
		if err != nil {
			panic(err)
		}
		o.Auth = &Auth{tokens: ts, OperateSubjects: []string{"group:oncall"},
			Review: func(_ context.Context, tok string) (Identity, bool, error) {
				reviews.Add(1)
				switch tok {
				case saAlice:
					return Identity{User: "system:serviceaccount:ops:alice", Groups: []string{"oncall"}}, true, nil
				case saBob:
					return Identity{User: "system:serviceaccount:ops:bob", Groups: []string{"oncall"}}, true, nil
				}
				return Identity{}, false, nil
			}}
		o.Access = func(_ context.Context, id Identity, a kube.Access) (bool, string, error) {
			if id.User == "system:serviceaccount:ops:alice" && a.Namespace == "shop" && a.Resource == "deployments" && a.Name == "web" {
				return true, "", nil
			}
			return false, "no RBAC rule", nil
		}
	}
}

// Every write route, for every role: 401 without a credential, 403 for a
// role or scope that may not, and never 401/403 for one that may.
func TestWriteRoutesByRole(t *testing.T) {
	var reviews atomic.Int32
	f := newFixture(t, &config.Automation{Severity: "P2", Alerts: []map[string]string{{"alertname": "X"}}}, withTrust(&reviews))
	routes := []struct{ method, path, body string }{
		{"POST", "/api/v1/runs", `{"service":"web"}`},
		{"POST", "/api/v1/incidents/INC-1/approve", ``},
		{"POST", "/api/v1/incidents/INC-1/decline", `{"reason":"no"}`},
		{"POST", "/api/v1/incidents/INC-1/resume", ``},
		{"POST", "/api/v1/incidents/INC-1/close", `{"reason":"done"}`},
		{"POST", "/api/v1/blocks", `{"service":"web","version":"v9","reason":"x"}`},
		{"DELETE", "/api/v1/blocks/web/v9", ``},
		{"POST", "/api/v1/signoffs", `{"service":"web","release":"v9"}`},
		{"POST", "/api/v1/drills", `{"service":"web","kind":"nope"}`},
		{"POST", "/hooks/alertmanager", `{"version":"4","alerts":[]}`},
	}
	denied := func(token, path string) (bool, int) {
		switch token {
		case "", "bogus-token-0123456789":
			return true, 401
		case readToken:
			return true, 403
		case triggerToken:
			return path != "/hooks/alertmanager", 403
		case scopedToken: // operate, but on ledger only
			return path != "/hooks/alertmanager" && path != "/api/v1/incidents/INC-1/approve" &&
				path != "/api/v1/incidents/INC-1/decline" && path != "/api/v1/incidents/INC-1/resume" &&
				path != "/api/v1/incidents/INC-1/close" && path != "/api/v1/drills", 403
		case saBob: // authenticated operator without RBAC on web
			return path == "/api/v1/runs" || path == "/api/v1/blocks" || path == "/api/v1/blocks/web/v9" || path == "/api/v1/signoffs", 403
		}
		return false, 0
	}
	for _, tok := range []string{"", "bogus-token-0123456789", readToken, triggerToken, scopedToken, saBob, saAlice, opToken} {
		for _, rt := range routes {
			code, body := f.do(t, rt.method, rt.path, tok, rt.body)
			wantDenied, want := denied(tok, rt.path)
			switch {
			case wantDenied && code != want:
				t.Errorf("%s %s as %.12s: got %d %s, want %d", rt.method, rt.path, tok, code, body, want)
			case !wantDenied && (code == 401 || code == 403):
				t.Errorf("%s %s as %.12s: got %d %s, want it let through", rt.method, rt.path, tok, code, body)
			}
			for _, secret := range []string{opToken, readToken, triggerToken, scopedToken, saAlice, saBob} {
				if strings.Contains(body, secret) {
					t.Errorf("%s %s: a token in the answer: %s", rt.method, rt.path, body)
				}
			}
		}
		f.srv.Wait()
	}
	// One TokenReview per token, not per request.
	if n := reviews.Load(); n > 3 {
		t.Errorf("%d TokenReviews for 3 distinct tokens over %d requests", n, 3*len(routes))
	}
}

// serve acts on configured services only: a workload that rollback.yaml
// does not name is refused unless its namespace is opted in, and a
// workload that does not exist is 404, not 500.
func TestUnconfiguredWorkloads(t *testing.T) {
	f := newFixture(t, nil)
	code, body := f.do(t, "POST", "/api/v1/runs", opToken, `{"service":"payments/deployment/ledger"}`)
	if code != 403 || !strings.Contains(body, "not a service of rollback.yaml") || !strings.Contains(body, "--allow-unconfigured payments") {
		t.Errorf("unconfigured: %d %s", code, body)
	}
	if n := len(f.incidents(t)); n != 0 {
		t.Errorf("%d incidents after a refused run", n)
	}
	// KIND/NAME of a configured service is that service.
	if code, body := f.do(t, "POST", "/api/v1/runs", opToken, `{"service":"shop/deployment/web"}`); code != 202 && code != 200 {
		t.Errorf("configured by reference: %d %s", code, body)
	}
	f.srv.Wait()

	g := newFixture(t, nil, func(o *Options) { o.AllowUnconfigured = []string{"shop"} })
	code, body = g.do(t, "POST", "/api/v1/runs", opToken, `{"service":"shop/deployment/nope"}`)
	if code != 404 {
		t.Errorf("missing workload in an allowed namespace: %d %s, want 404", code, body)
	}
	code, _ = g.do(t, "POST", "/api/v1/runs", opToken, `{"service":"payments/deployment/ledger"}`)
	if code != 403 {
		t.Errorf("a namespace not opted in: %d, want 403", code)
	}
	code, body = g.do(t, "POST", "/api/v1/runs", opToken, `{"selector":"app=web","namespace":"payments"}`)
	if code != 403 {
		t.Errorf("wide rollback in a namespace not opted in: %d %s, want 403", code, body)
	}
}

// A user the API server authenticated gets only what it could do itself:
// the SubjectAccessReview decides, and says why not.
func TestSubjectAccessReview(t *testing.T) {
	var reviews atomic.Int32
	f := newFixture(t, nil, withTrust(&reviews))
	code, body := f.do(t, "POST", "/api/v1/runs", saBob, `{"service":"web"}`)
	if code != 403 || !strings.Contains(body, "may not get deployments.apps shop/web") || !strings.Contains(body, "no RBAC rule") {
		t.Errorf("bob: %d %s", code, body)
	}
	code, body = f.do(t, "POST", "/api/v1/runs", saAlice, `{"service":"web"}`)
	if code != 202 && code != 200 {
		t.Errorf("alice: %d %s", code, body)
	}
	f.srv.Wait()
	// Without a SubjectAccessReview, API-server users are refused.
	g := newFixture(t, nil, withTrust(&reviews), func(o *Options) { o.Access = nil })
	if code, body := g.do(t, "POST", "/api/v1/runs", saAlice, `{"service":"web"}`); code != 403 || !strings.Contains(body, "cannot check") {
		t.Errorf("no SAR: %d %s", code, body)
	}
}

// A static token scoped to services acts on those only.
func TestScopedToken(t *testing.T) {
	var reviews atomic.Int32
	f := newFixture(t, nil, withTrust(&reviews))
	code, body := f.do(t, "POST", "/api/v1/runs", scopedToken, `{"service":"web"}`)
	if code != 403 || !strings.Contains(body, "may act on ledger, shop/deployment/ledger only") {
		t.Errorf("scoped: %d %s", code, body)
	}
	for _, bad := range []string{"x=operate@:" + opToken, "x=admin@web:" + opToken} {
		if _, err := ParseTokens(bad); err == nil || strings.Contains(err.Error(), opToken) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func slackForm(text, userID, userName string) url.Values {
	return url.Values{"command": {"/rollback"}, "text": {text}, "user_id": {userID}, "user_name": {userName}, "team_id": {"T1"}}
}

// Slack as Slack documents it: operators by user_id in one workspace,
// each signed request taken once, configured services only, and status
// only when no operator is configured.
func TestSlackTrust(t *testing.T) {
	f := newFixture(t, &config.Automation{Severity: "P1", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}},
		func(o *Options) { o.SlackOperators, o.SlackTeam = []string{"U1"}, "T1" })
	now := time.Now()
	// user_name is the user's to choose: "U1" as a name is no operator.
	if _, body := slackRequest(t, f, slackForm("run web", "U666", "U1"), now, slackKey); !strings.Contains(body, "not one of rollback's Slack operators") {
		t.Errorf("user_name spoofing: %s", body)
	}
	other := slackForm("run web", "U1", "alice")
	other.Set("team_id", "T2")
	if code, _ := slackRequest(t, f, other, now, slackKey); code != 403 {
		t.Errorf("another workspace: %d, want 403", code)
	}
	if _, body := slackRequest(t, f, slackForm("run payments/deployment/ledger", "U1", "alice"), now, slackKey); !strings.Contains(body, "not a service of rollback.yaml") {
		t.Errorf("unconfigured workload from Slack: %s", body)
	}
	if _, body := slackRequest(t, f, slackForm("approve INC-20990101-9", "U1", "alice"), now, slackKey); !strings.Contains(body, "No incident INC-20990101-9") {
		t.Errorf("approve an unknown incident: %s", body)
	}
	if n := len(f.incidents(t)); n != 0 {
		t.Fatalf("%d incidents after refused commands", n)
	}
	// A captured request replayed inside the 5 minutes runs once.
	run := slackForm("run web", "U1", "alice")
	stamp := time.Now()
	code1, body1 := slackRequest(t, f, run, stamp, slackKey)
	code2, body2 := slackRequest(t, f, run, stamp, slackKey)
	if code1 != 200 || !strings.Contains(body1, "started by") || code2 != 401 || !strings.Contains(body2, "replay") {
		t.Errorf("request then replay: %d %s / %d %s", code1, body1, code2, body2)
	}
	if n := len(f.incidents(t)); n != 1 {
		t.Errorf("incidents after a replay: %d, want 1", n)
	}
	// Without operators Slack shows status and nothing else.
	g := newFixture(t, nil, func(o *Options) { o.SlackOperators = nil })
	if _, body := slackRequest(t, g, slackForm("run web", "U1", "alice"), time.Now(), slackKey); !strings.Contains(body, "can only show status") {
		t.Errorf("no operators: %s", body)
	}
	if _, body := slackRequest(t, g, slackForm("status", "U1", "alice"), time.Now(), slackKey); !strings.Contains(body, "No open or proposed") {
		t.Errorf("status without operators: %s", body)
	}
	if n := len(g.incidents(t)); n != 0 {
		t.Errorf("%d incidents from Slack without operators", n)
	}
}

// A manual close refuses while a live run holds the service; unblock is
// journaled with who did it; a request beyond the run cap is 429.
func TestCloseUnblockAndRunCap(t *testing.T) {
	f := newFixture(t, nil, func(o *Options) { o.MaxRuns = 1 })
	ctx := context.Background()
	inc := &store.Incident{Service: "web", Status: store.StatusOpen, OpenedAt: time.Now()}
	if err := f.store.CreateIncident(ctx, inc); err != nil {
		t.Fatal(err)
	}
	target, _ := json.Marshal(map[string]string{"namespace": "shop", "name": "web", "kind": "deployment"})
	f.store.AppendEvent(ctx, store.Event{Incident: inc.ID, Step: "plan", Phase: store.PhaseNote, Key: "target", Evidence: string(target)})
	if _, err := f.store.AcquireLease(ctx, "shop/deployment/web", "replica-b/run-7", time.Minute); err != nil {
		t.Fatal(err)
	}
	code, body := f.do(t, "POST", "/api/v1/incidents/"+inc.ID+"/close", opToken, `{"reason":"done by hand"}`)
	if code != 409 || !strings.Contains(body, "replica-b/run-7") {
		t.Errorf("close while a run holds the service: %d %s, want 409 naming the holder", code, body)
	}
	f.store.ReleaseLease(ctx, "shop/deployment/web", "replica-b/run-7")
	if code, body := f.do(t, "POST", "/api/v1/incidents/"+inc.ID+"/close", opToken, `{"reason":"done by hand"}`); code != 200 {
		t.Errorf("close: %d %s", code, body)
	}

	f.store.SetBlock(ctx, store.Block{Service: "web", Version: "v2", Incident: inc.ID, Reason: "5xx", At: time.Now()})
	if code, _ := f.do(t, "DELETE", "/api/v1/blocks/web/v2", opToken, ""); code != 204 {
		t.Fatalf("unblock: %d", code)
	}
	evs, _ := f.store.Events(ctx, inc.ID)
	audited := false
	for _, ev := range evs {
		audited = audited || strings.Contains(ev.Message, "unblocked web v2 by api:ops")
	}
	if !audited {
		t.Errorf("unblock not journaled: %+v", evs)
	}

	block := make(chan struct{})
	if err := f.srv.tryBackground(func(context.Context) { <-block }); err != nil {
		t.Fatal(err)
	}
	code, body = f.do(t, "POST", "/api/v1/runs", opToken, `{"service":"web"}`)
	close(block)
	if code != 429 {
		t.Errorf("beyond the run cap: %d %s, want 429", code, body)
	}
}

// The dashboard's cookie holds a signed, expiring session, never the
// token; signing out ends it.
func TestSessionCookie(t *testing.T) {
	f := newFixture(t, nil)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", f.ts.URL+"/login", strings.NewReader(url.Values{"token": {opToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == sessionCookie {
			c = k
		}
	}
	if c == nil || strings.Contains(c.Value, opToken) || c.Expires.IsZero() || time.Until(c.Expires) > 9*time.Hour {
		t.Fatalf("session cookie: %+v", c)
	}
	get := func(c *http.Cookie) int {
		r, _ := http.NewRequest("GET", f.ts.URL+"/", nil)
		r.AddCookie(c)
		resp, err := noRedirect.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(c); code != 200 {
		t.Errorf("with the session: %d", code)
	}
	forged := *c
	forged.Value = strings.Replace(c.Value, ".", "x.", 1)
	if code := get(&forged); code != 303 {
		t.Errorf("forged session: %d, want the sign-in redirect", code)
	}
	out, _ := http.NewRequest("POST", f.ts.URL+"/logout", nil)
	out.AddCookie(c)
	if resp, err := noRedirect.Do(out); err != nil || resp.StatusCode != 303 {
		t.Fatalf("sign out: %v", err)
	}
	if code := get(c); code != 303 {
		t.Errorf("after sign-out: %d, want the sign-in redirect", code)
	}
	// An expired session no longer opens pages.
	s := NewSessions("k")
	v, _ := s.Issue(Principal{Name: "a", Role: RoleRead})
	s.Now = func() time.Time { return time.Now().Add(9 * time.Hour) }
	if _, ok := s.Open(v); ok {
		t.Error("an expired session opened")
	}
}

// /readyz follows the store: a replica that cannot record takes no
// requests.
func TestReadyFollowsTheStore(t *testing.T) {
	f := newFixture(t, nil)
	if code, _ := f.do(t, "GET", "/readyz", "", ""); code != 200 {
		t.Errorf("ready: %d", code)
	}
	f.store.Close()
	if code, _ := f.do(t, "GET", "/readyz", "", ""); code != 503 {
		t.Errorf("store closed: %d, want 503", code)
	}
}

// A follow-up that cannot be delivered is logged without its
// response_url: that URL posts to the channel.
func TestResponseURLNotLogged(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	f := newFixture(t, nil, func(o *Options) {
		o.Log = slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(b) }), nil))
	})
	dead := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(dead.URL)
	dead.Close() // refuses connections
	f.srv.o.SlackResponseHost = u.Host
	f.srv.slackFollowUp(dead.URL+"/commands/T1/B2/s3cr3t-path", "done")
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "slack follow-up not delivered") || strings.Contains(logs.String(), "s3cr3t-path") {
		t.Errorf("log: %s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(b []byte) (int, error) { return w(b) }
