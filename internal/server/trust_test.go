package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/kube/kubetest"
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

// alertAt is a firing notification of group g whose alert started at
// startsAt (Alertmanager keeps the group key for ever; the alert's
// fingerprint and startsAt tell one firing from the next).
func alertAt(g string, startsAt time.Time) string {
	return fmt.Sprintf(`{"version":"4","groupKey":%q,"status":"firing","receiver":"rollback","groupLabels":{"alertname":"HighErrorRate"},
"alerts":[{"status":"firing","labels":{"alertname":"HighErrorRate","service":"web","severity":"critical"},"annotations":{},
"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"f00d"}]}`, g, startsAt.UTC().Format(time.RFC3339Nano))
}

// release deploys version v of shop/web on the fake cluster as a new
// revision (what CD does after a rollback), its status rolled out.
func release(t *testing.T, cs *fake.Clientset, v string) {
	t.Helper()
	ctx := context.Background()
	dep, err := cs.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rss, _ := cs.AppsV1().ReplicaSets("shop").List(ctx, metav1.ListOptions{})
	rev := 0
	for _, rs := range rss.Items {
		var n int
		fmt.Sscan(rs.Annotations[kube.RevisionAnnotation], &n)
		rev = max(rev, n)
	}
	tpl := kubetest.Template("web", "r/web:"+v)
	dep.Spec.Template = tpl
	dep.Generation++
	dep.Status.ObservedGeneration = dep.Generation
	if _, err := cs.AppsV1().Deployments("shop").Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", rev+1), Namespace: "shop", Labels: map[string]string{"app": "web"},
		Annotations:     map[string]string{kube.RevisionAnnotation: fmt.Sprint(rev + 1)},
		OwnerReferences: []metav1.OwnerReference{{UID: dep.UID, Controller: ptrTrue(), Kind: "Deployment", Name: "web"}}},
		Spec: appsv1.ReplicaSetSpec{Template: tpl}}
	if _, err := cs.AppsV1().ReplicaSets("shop").Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func ptrTrue() *bool { b := true; return &b }

func runningImage(t *testing.T, cs *fake.Clientset) string {
	t.Helper()
	dep, err := cs.AppsV1().Deployments("shop").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return dep.Spec.Template.Spec.Containers[0].Image
}

// Two outages of one alert group, a month apart on two releases: both are
// acted on; the repeats of each change nothing.
func TestAlertGroupFiresAgainOnALaterRelease(t *testing.T) {
	f := newFixture(t, &config.Automation{Auto: true, Severity: "P2", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}})
	group := `{}:{alertname="HighErrorRate"}`
	first := time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ { // the notification and two repeats
		if code, body := f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt(group, first)); code != 202 {
			t.Fatalf("outage 1, notification %d: %d %s", i, code, body)
		}
		f.srv.Wait()
	}
	incs := f.incidents(t)
	if len(incs) != 1 || incs[0].Status != store.StatusClosed || runningImage(t, f.cs) != "r/web:v1" {
		t.Fatalf("after outage 1: %+v, running %s", incs, runningImage(t, f.cs))
	}
	// A month later CD ships v3, which breaks the same way: the same
	// group fires again (a new startsAt).
	release(t, f.cs, "v3")
	second := first.AddDate(0, 1, 0)
	for i := 0; i < 3; i++ {
		if code, body := f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt(group, second)); code != 202 {
			t.Fatalf("outage 2, notification %d: %d %s", i, code, body)
		}
		f.srv.Wait()
	}
	incs = f.incidents(t)
	if len(incs) != 2 || incs[0].BadVersion != "v3" || incs[0].Status != store.StatusClosed {
		t.Fatalf("after outage 2: %+v", incs)
	}
	if got := runningImage(t, f.cs); got != "r/web:v1" {
		t.Errorf("after outage 2 running %s, want r/web:v1", got)
	}
	// A late repeat of the first outage's alert changes nothing either.
	f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt(group, first))
	if n := len(f.incidents(t)); n != 2 {
		t.Errorf("a late repeat made %d incidents, want 2", n)
	}
}

// A notification that cannot be handled now (another trigger of the
// service holds its lease) is answered 503, so Alertmanager sends it
// again; nothing is recorded, and the retry is acted on.
func TestBusyTriggerAsksForARetry(t *testing.T) {
	f := newFixture(t, &config.Automation{Severity: "P2", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}},
		func(o *Options) { o.TriggerWait = 200 * time.Millisecond })
	ctx := context.Background()
	if _, err := f.store.AcquireLease(ctx, "trigger:shop/deployment/web", "other-replica:1", time.Minute); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", f.ts.URL+"/hooks/alertmanager", strings.NewReader(alertAt("g", time.Now())))
	req.Header.Set("Authorization", "Bearer "+opToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("busy: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := len(f.incidents(t)); n != 0 {
		t.Fatalf("%d incidents while busy", n)
	}
	if err := f.store.ReleaseLease(ctx, "trigger:shop/deployment/web", "other-replica:1"); err != nil {
		t.Fatal(err)
	}
	if code, body := f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt("g", time.Now())); code != 202 {
		t.Errorf("the retry: %d %s", code, body)
	}
	if incs := f.incidents(t); len(incs) != 1 || incs[0].Status != store.StatusProposed {
		t.Errorf("after the retry: %+v", incs)
	}
}

// A storm: many notifications at once, several groups, one service: one
// proposal, and every notification answered 202 (none dropped).
func TestAlertStormOneIncident(t *testing.T) {
	f := newFixture(t, &config.Automation{Severity: "P2", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}})
	start := time.Now()
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body := f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt(fmt.Sprintf("g%d", i%4), start)); code != 202 {
				bad.Add(1)
				t.Logf("%d %s", code, body)
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d notifications not accepted", n)
	}
	incs := f.incidents(t)
	if len(incs) != 1 {
		t.Fatalf("incidents after the storm: %d, want 1", len(incs))
	}
	evs, _ := f.store.Events(context.Background(), incs[0].ID)
	groups := map[string]bool{}
	for _, ev := range evs {
		if strings.HasPrefix(ev.Key, "trigger:alertmanager:") {
			groups[strings.SplitN(strings.TrimPrefix(ev.Key, "trigger:alertmanager:"), "|", 2)[0]] = true
		}
	}
	if len(groups) != 4 {
		t.Errorf("groups journaled on the incident: %v, want all 4", groups)
	}
}

// Approving a proposal after the world moved (a fix deployed) refuses,
// saying what changed; nothing is rolled back.
func TestStaleApprovalRefused(t *testing.T) {
	f := newFixture(t, &config.Automation{Severity: "P1", Alerts: []map[string]string{{"alertname": "HighErrorRate"}}})
	f.do(t, "POST", "/hooks/alertmanager", opToken, alertAt("g", time.Now()))
	incs := f.incidents(t)
	if len(incs) != 1 || incs[0].Status != store.StatusProposed || incs[0].BadVersion != "v2" {
		t.Fatalf("want a proposal to roll back v2: %+v", incs)
	}
	release(t, f.cs, "v3") // the fix
	code, body := f.do(t, "POST", "/api/v1/incidents/"+incs[0].ID+"/approve", opToken, "")
	if code != 409 || !strings.Contains(body, "running now is v3") {
		t.Errorf("stale approval: %d %s, want 409 naming v3", code, body)
	}
	f.srv.Wait()
	if got := runningImage(t, f.cs); got != "r/web:v3" {
		t.Errorf("after a refused approval the cluster runs %s, want the fix r/web:v3", got)
	}
	if n := len(f.incidents(t)); n != 1 {
		t.Errorf("%d incidents after a refused approval", n)
	}
	// Unknown and closed incidents answer as such.
	if code, _ := f.do(t, "POST", "/api/v1/incidents/INC-20990101-1/approve", opToken, ""); code != 404 {
		t.Errorf("unknown incident: %d, want 404", code)
	}
	ctx := context.Background()
	now := time.Now()
	incs[0].Status, incs[0].ClosedAt = store.StatusClosed, &now
	f.store.UpdateIncident(ctx, &incs[0])
	if code, body := f.do(t, "POST", "/api/v1/incidents/"+incs[0].ID+"/approve", opToken, ""); code != 409 || !strings.Contains(body, "already closed") {
		t.Errorf("closed incident: %d %s", code, body)
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

// countingStore counts the store's reads.
type countingStore struct {
	store.Store
	reads atomic.Int32
}

func (c *countingStore) ListIncidents(ctx context.Context, s string) ([]store.Incident, error) {
	c.reads.Add(1)
	return c.Store.ListIncidents(ctx, s)
}
func (c *countingStore) QueryIncidents(ctx context.Context, q store.IncidentQuery) ([]store.Incident, error) {
	c.reads.Add(1)
	return c.Store.QueryIncidents(ctx, q)
}
func (c *countingStore) Events(ctx context.Context, id string) ([]store.Event, error) {
	c.reads.Add(1)
	return c.Store.Events(ctx, id)
}
func (c *countingStore) EventsOf(ctx context.Context, ids []string) (map[string][]store.Event, error) {
	c.reads.Add(1)
	return c.Store.EventsOf(ctx, ids)
}
func (c *countingStore) GetIncident(ctx context.Context, id string) (*store.Incident, error) {
	c.reads.Add(1)
	return c.Store.GetIncident(ctx, id)
}

// The dashboard and the API read the store a constant number of times
// whatever the history, and the leader's scan reads open incidents only.
func TestLoadDoesNotGrowWithHistory(t *testing.T) {
	var counting *countingStore
	f := newFixture(t, nil, func(o *Options) { counting = &countingStore{Store: o.Store}; o.Store = counting })
	ctx := context.Background()
	readsFor := func(path string) int32 {
		counting.reads.Store(0)
		if code, body := f.do(t, "GET", path, readToken, ""); code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		return counting.reads.Load()
	}
	add := func(n int, st store.Status) {
		for i := 0; i < n; i++ {
			inc := &store.Incident{Service: "web", Status: st, OpenedAt: time.Now()}
			if err := f.store.CreateIncident(ctx, inc); err != nil {
				t.Fatal(err)
			}
			f.store.AppendEvent(ctx, store.Event{Incident: inc.ID, Step: "kube-undo", Phase: store.PhaseDone, Time: time.Now()})
		}
	}
	add(3, store.StatusClosed)
	small, smallAPI := readsFor("/"), readsFor("/api/v1/incidents")
	add(150, store.StatusClosed)
	if big, bigAPI := readsFor("/"), readsFor("/api/v1/incidents"); big != small || bigAPI != smallAPI {
		t.Errorf("store reads for a page: dashboard %d with 3 incidents, %d with 153; API %d, %d", small, big, smallAPI, bigAPI)
	}
	code, body := f.do(t, "GET", "/api/v1/incidents?limit=100", readToken, "")
	var page []store.Incident
	json.Unmarshal([]byte(body), &page)
	if code != 200 || len(page) != 100 {
		t.Errorf("a page of 100: %d, %d incidents", code, len(page))
	}
	if code, _ := f.do(t, "GET", "/api/v1/incidents?limit=100000", readToken, ""); code != 400 {
		t.Errorf("an oversized page: %d, want 400", code)
	}
	// The leader's scan: one read, open incidents only.
	counting.reads.Store(0)
	f.srv.resumeOrphans(ctx, map[string]int{}, &sync.Mutex{})
	if n := counting.reads.Load(); n != 1 {
		t.Errorf("orphan scan over 153 closed incidents read the store %d times, want 1", n)
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
