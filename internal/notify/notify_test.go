package notify

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

var inc = Incident{ID: "INC-20261126-1", Service: "transaction-service", BadVersion: "v1.2.0", GoodVersion: "v1.1.5",
	Date: time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)}

func TestChannelName(t *testing.T) {
	tests := map[string]string{
		"transaction-service":   "incident-2026-11-26-transaction-service",
		"Payments API (EU)":     "incident-2026-11-26-payments-api-eu",
		strings.Repeat("x", 90): "incident-2026-11-26-" + strings.Repeat("x", 60),
	}
	for svc, want := range tests {
		got := ChannelName(Incident{Service: svc, Date: inc.Date})
		if got != want || len(got) > 80 {
			t.Errorf("%q: got %q, want %q", svc, got, want)
		}
	}
}

func TestTexts(t *testing.T) {
	if got := StartText(inc, []string{"<@U01TECHLEAD>", "<!subteam^S01QA>"}); got != "🔴 Initiating rollback of transaction-service v1.2.0 → v1.1.5\n<@U01TECHLEAD> <!subteam^S01QA>" {
		t.Errorf("start: %q", got)
	}
	s := SummaryText(inc, Summary{TimeToRecover: 12 * time.Minute, ErrorRate: "back to < 0.1%", DownMigration: "applied ✅",
		SmokeTests: "✅ all passing", PIRDue: inc.Date.Add(48 * time.Hour), Blocked: true})
	for _, want := range []string{"✅ Rollback complete", "Service: transaction-service", "Rolled back: v1.2.0 → v1.1.5",
		"Time to recover: 12 minutes", "Error rate: back to < 0.1%", "DB down-migration: applied ✅", "Inflight smoke tests: ✅ all passing",
		"PIR within 48 hours", "Deployment of v1.2.0 blocked until root cause resolved."} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	for d, want := range map[time.Duration]string{4 * time.Second: "4 seconds", 61 * time.Second: "1 minute", 150 * time.Second: "3 minutes"} {
		if s := SummaryText(inc, Summary{TimeToRecover: d}); !strings.Contains(s, "Time to recover: "+want+"\n") {
			t.Errorf("%s: %s", d, s)
		}
	}
}

// fakeSlack checks requests against the Web API's documented shape.
type fakeSlack struct {
	mu       sync.Mutex
	taken    map[string]bool
	posts    []map[string]any
	failNext int
}

func (f *fakeSlack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(v any) { json.NewEncoder(w).Encode(v) }
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		reply(map[string]any{"ok": false, "error": "invalid_request"})
		return
	}
	if r.Header.Get("Authorization") != "Bearer xoxb-test" {
		reply(map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	if f.failNext > 0 {
		f.failNext--
		reply(map[string]any{"ok": false, "error": "ratelimited"})
		return
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	switch r.URL.Path {
	case "/api/conversations.create":
		name, _ := body["name"].(string)
		if name == "" || len(name) > 80 || name != strings.ToLower(name) {
			reply(map[string]any{"ok": false, "error": "invalid_name"})
			return
		}
		if f.taken[name] {
			reply(map[string]any{"ok": false, "error": "name_taken"})
			return
		}
		f.taken[name] = true
		reply(map[string]any{"ok": true, "channel": map[string]any{"id": "C" + name, "name": name}})
	case "/api/chat.postMessage":
		if body["channel"] == "" || body["text"] == "" {
			reply(map[string]any{"ok": false, "error": "no_text"})
			return
		}
		f.posts = append(f.posts, body)
		// Slack's documented answer: "channel" is the channel id here.
		reply(map[string]any{"ok": true, "channel": body["channel"], "ts": "1700000000.000100",
			"message": map[string]any{"text": body["text"], "type": "message"}})
	default:
		reply(map[string]any{"ok": false, "error": "unknown_method"})
	}
}

func TestSlack(t *testing.T) {
	f := &fakeSlack{taken: map[string]bool{"incident-2026-11-26-transaction-service": true}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	s := &Slack{BaseURL: srv.URL + "/api", Token: "xoxb-test", Backoff: time.Millisecond}
	ctx := context.Background()
	id, name, err := s.CreateChannel(ctx, ChannelName(inc))
	if err != nil || name != "incident-2026-11-26-transaction-service-2" || id == "" {
		t.Fatalf("create: %s %s %v", id, name, err)
	}
	f.failNext = 2 // rate limited twice, then through
	if _, err := s.Post(ctx, id, StartText(inc, nil)); err != nil {
		t.Fatal(err)
	}
	if len(f.posts) != 1 || f.posts[0]["channel"] != id || !strings.HasPrefix(f.posts[0]["text"].(string), "🔴 Initiating rollback") {
		t.Errorf("posts %v", f.posts)
	}
	bad := &Slack{BaseURL: srv.URL + "/api", Token: "xoxb-wrong", Backoff: time.Millisecond}
	_, err = bad.Post(ctx, id, "x")
	if err == nil || !strings.Contains(err.Error(), "invalid_auth") || strings.Contains(err.Error(), "xoxb-wrong") {
		t.Errorf("bad token: %v", err)
	}
}

func TestWebhookPermanentAndRetryable(t *testing.T) {
	var mu sync.Mutex
	calls, status := 0, []int{503, 200}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		code := 400
		if calls < len(status) {
			code = status[calls]
		}
		calls++
		w.WriteHeader(code)
	}))
	defer srv.Close()
	h := &Webhook{URL: srv.URL + "/hooks/T000/B000/secret", Backoff: time.Millisecond}
	if err := h.Send(context.Background(), map[string]string{"text": "hi"}); err != nil || calls != 2 {
		t.Fatalf("retry after 503: %v after %d calls", err, calls)
	}
	err := h.Send(context.Background(), map[string]string{"text": "hi"})
	if err == nil || calls != 3 || strings.Contains(err.Error(), "secret") {
		t.Errorf("400 is permanent (one call, no secret in the error): %v after %d calls", err, calls)
	}
}

func TestPagerDuty(t *testing.T) {
	var mu sync.Mutex
	var events []map[string]any
	first := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if first {
			first = false
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil || r.URL.Path != "/v2/enqueue" || ev["routing_key"] != "R0UTINGKEY" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"status": "invalid event"})
			return
		}
		switch ev["event_action"] {
		case "trigger":
			p, _ := ev["payload"].(map[string]any)
			if p["summary"] == nil || p["source"] == nil || p["severity"] != "critical" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		case "acknowledge", "resolve":
			if ev["dedup_key"] == nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		default:
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		events = append(events, ev)
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]any{"status": "success", "dedup_key": ev["dedup_key"]})
	}))
	defer srv.Close()
	p := &PagerDuty{EventsURL: srv.URL + "/v2/enqueue", RoutingKey: "R0UTINGKEY", Backoff: time.Millisecond}
	ctx := context.Background()
	for _, a := range []string{Trigger, Acknowledge, Resolve} {
		if err := p.Send(ctx, a, inc, StartText(inc, nil)); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	if len(events) != 3 {
		t.Fatalf("%d events", len(events))
	}
	for _, ev := range events {
		if ev["dedup_key"] != "rollback-inc-20261126-1" {
			t.Errorf("dedup_key %v, want one key per incident", ev["dedup_key"])
		}
	}
}

func TestPagerDutyREST(t *testing.T) {
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/incidents/PXYZ123" || r.Header.Get("Authorization") != "Token token=pd-rest" ||
			r.Header.Get("From") != "oncall@example.com" || r.Header.Get("Accept") != "application/vnd.pagerduty+json;version=2" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.Write([]byte(`{"incident":{"id":"PXYZ123","status":"acknowledged"}}`))
	}))
	defer srv.Close()
	p := &PagerDutyREST{BaseURL: srv.URL, Token: "pd-rest", From: "oncall@example.com", Backoff: time.Millisecond}
	if err := p.SetStatus(context.Background(), "PXYZ123", "acknowledged"); err != nil {
		t.Fatal(err)
	}
	in, _ := got["incident"].(map[string]any)
	if in["type"] != "incident_reference" || in["status"] != "acknowledged" {
		t.Errorf("body %v", got)
	}
	p.Token = "wrong"
	if err := p.SetStatus(context.Background(), "PXYZ123", "acknowledged"); err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("bad token: %v", err)
	}
}

func TestWebhookBody(t *testing.T) {
	b, _ := json.Marshal(WebhookBody(FormatSlack, inc, "🔴 start", nil))
	if string(b) != `{"text":"🔴 start"}` {
		t.Errorf("slack incoming webhook body = %s", b)
	}
	b, _ = json.Marshal(WebhookBody(FormatJSON, inc, "🔴 start", nil))
	var start map[string]any
	_ = json.Unmarshal(b, &start)
	if start["event"] != "rollback.started" || start["incident"] != inc.ID || start["badVersion"] != "v1.2.0" || start["goodVersion"] != "v1.1.5" || start["summary"] != nil {
		t.Errorf("json start body = %s", b)
	}
	sum := &Summary{TimeToRecover: 90 * time.Second, ErrorRate: "0.000%", DownMigration: "not needed", SmokeTests: "✅", PIRDue: inc.Date.Add(48 * time.Hour), Blocked: true}
	b, _ = json.Marshal(WebhookBody(FormatJSON, inc, "✅ done", sum))
	var done struct {
		Event   string  `json:"event"`
		TTR     float64 `json:"timeToRecoverSeconds"`
		Summary Summary `json:"summary"`
	}
	if err := json.Unmarshal(b, &done); err != nil || done.Event != "rollback.completed" || done.TTR != 90 || done.Summary.ErrorRate != "0.000%" || !done.Summary.Blocked {
		t.Errorf("json summary body = %s (%v)", b, err)
	}
}

// Slack's 429 carries Retry-After (seconds): the next try waits that long,
// and a wait that would pass the step's deadline is not begun.
func TestRetryAfterHonouredWithinDeadline(t *testing.T) {
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		times = append(times, time.Now())
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true,"channel":"C1","ts":"1.2"}`))
	}))
	defer srv.Close()
	sl := &Slack{BaseURL: srv.URL, Token: "xoxb-t", Backoff: 10 * time.Millisecond}
	if _, err := sl.Post(context.Background(), "C1", "hi"); err != nil {
		t.Fatal(err)
	}
	if len(times) != 2 || times[1].Sub(times[0]) < time.Second {
		t.Fatalf("tries at %v: want a second try after Retry-After's 1s", times)
	}

	times = nil
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		times = append(times, time.Now())
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := (&Slack{BaseURL: srv2.URL, Token: "xoxb-t"}).Post(ctx, "C1", "hi")
	if err == nil || !strings.Contains(err.Error(), "deadline") || len(times) != 1 {
		t.Fatalf("got %v after %d tries, want one try and a deadline error", err, len(times))
	}
	if time.Since(start) > time.Second {
		t.Errorf("waited %s for a retry that could not happen in time", time.Since(start))
	}
}

// A notifier that panics is an outcome like one that fails; the others'
// outcomes are kept, and with nothing delivered the evidence says so.
func TestAllAndEvidence(t *testing.T) {
	os := All([]func() []Outcome{
		func() []Outcome { return []Outcome{{Text: "slack ok", Delivered: true}} },
		func() []Outcome { var m map[string]int; m["x"]++; return nil },
	})
	if len(os) != 2 || !os[0].Delivered || !strings.Contains(os[1].Text, "panic") {
		t.Fatalf("got %+v", os)
	}
	if ev := Evidence("incident X", "not notified", os[1:]); ev != "incident X; not notified; "+os[1].Text {
		t.Errorf("nothing delivered: %q", ev)
	}
	if ev := Evidence("incident X", "not notified", os); strings.Contains(ev, "not notified") {
		t.Errorf("delivered, yet %q", ev)
	}
}
