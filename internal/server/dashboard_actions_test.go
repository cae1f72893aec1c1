package server

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/store"
)

// signIn returns a dashboard session cookie for token.
func signIn(t *testing.T, f *fixture, token string) *http.Cookie {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", f.ts.URL+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			return c
		}
	}
	t.Fatal("no session")
	return nil
}

// page GETs or POSTs a dashboard page with a session, without following
// redirects.
func page(t *testing.T, f *fixture, c *http.Cookie, method, path string, form url.Values, origin string) *http.Response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, f.ts.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	req.AddCookie(c)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// An on-call engineer approves or declines a proposal from its page: a
// form with this session's CSRF token, operate role only; the approved
// run's page follows it live.
func TestDashboardApproveAndDecline(t *testing.T) {
	f := newFixture(t, &config.Automation{Severity: "P1", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}})
	f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt("g", time.Now()))
	prop := f.incidents(t)[0]
	op := signIn(t, f, opToken)
	resp := page(t, f, op, "GET", "/incidents/"+prop.ID, nil, "")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(b))
	if m == nil || !strings.Contains(string(b), `id="approve"`) {
		t.Fatalf("the proposal's page has no approve form:\n%s", b)
	}
	csrf := m[1]
	// Refused: no token, another session's token, another site, a reader.
	reader := signIn(t, f, readToken)
	for name, c := range map[string]struct {
		cookie *http.Cookie
		form   url.Values
		origin string
	}{
		"no token":       {op, url.Values{}, ""},
		"a wrong token":  {op, url.Values{"csrf": {"x" + csrf}}, ""},
		"another origin": {op, url.Values{"csrf": {csrf}}, "https://evil.example"},
		"a reader":       {reader, url.Values{"csrf": {f.srv.o.Auth.sessions().csrfToken(reader.Value)}}, ""},
	} {
		resp := page(t, f, c.cookie, "POST", "/incidents/"+prop.ID+"/approve", c.form, c.origin)
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("%s: %d, want 403", name, resp.StatusCode)
		}
	}
	if n := len(f.incidents(t)); n != 1 {
		t.Fatalf("%d incidents after refused approvals", n)
	}
	resp = page(t, f, op, "POST", "/incidents/"+prop.ID+"/approve", url.Values{"csrf": {csrf}}, f.ts.URL)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 303 || !strings.HasPrefix(loc, "/incidents/INC-") || loc == "/incidents/"+prop.ID {
		t.Fatalf("approve: %d to %q, want a redirect to the run's incident", resp.StatusCode, loc)
	}
	f.srv.Wait()
	if got := runningImage(t, f.cs); got != "r/web:v1" {
		t.Errorf("after the approval the cluster runs %s", got)
	}
	// An open incident's page reloads itself; a closed one's does not.
	inc := &store.Incident{Service: "web", Status: store.StatusOpen, OpenedAt: time.Now()}
	f.store.CreateIncident(context.Background(), inc)
	if resp := page(t, f, op, "GET", "/incidents/"+inc.ID, nil, ""); resp.Header.Get("Refresh") == "" {
		t.Error("an open incident's page does not follow the run")
	}
	if resp := page(t, f, op, "GET", loc, nil, ""); resp.Header.Get("Refresh") != "" {
		t.Error("a closed incident's page reloads")
	}
	now := time.Now()
	inc.Status, inc.ClosedAt = store.StatusClosed, &now
	f.store.UpdateIncident(context.Background(), inc)
	// Decline, with a reason.
	f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt("g", time.Now().Add(time.Hour)))
	release(t, f.cs, "v3")
	f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt("g2", time.Now().Add(2*time.Hour)))
	var second *store.Incident
	for _, i := range f.incidents(t) {
		if i.Status == store.StatusProposed {
			second = &i
		}
	}
	if second == nil {
		t.Fatalf("no second proposal: %+v", f.incidents(t))
	}
	resp = page(t, f, op, "POST", "/incidents/"+second.ID+"/decline", url.Values{"csrf": {csrf}, "reason": {"fix rolling forward"}}, "")
	resp.Body.Close()
	got, _ := f.store.GetIncident(context.Background(), second.ID)
	if resp.StatusCode != 303 || got.Status != store.StatusDeclined {
		t.Errorf("decline: %d, incident %s", resp.StatusCode, got.Status)
	}
}
