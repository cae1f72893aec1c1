package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
