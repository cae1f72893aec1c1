package slackstub

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func call(t *testing.T, url, token, method string, body map[string]any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url+"/api/"+method, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: HTTP %d, %v", method, resp.StatusCode, err)
	}
	return out
}

func TestStandIn(t *testing.T) {
	var log bytes.Buffer
	s := &Server{Token: "xoxb-demo", Log: &log}
	srv := httptest.NewServer(s)
	defer srv.Close()
	if a := call(t, srv.URL, "wrong", "conversations.create", map[string]any{"name": "x"}); a["ok"] != false || a["error"] != "invalid_auth" {
		t.Errorf("bad token: %v", a)
	}
	a := call(t, srv.URL, "xoxb-demo", "conversations.create", map[string]any{"name": "incident-2026-11-26-web"})
	ch, _ := a["channel"].(map[string]any)
	if a["ok"] != true || ch["id"] == "" {
		t.Fatalf("create: %v", a)
	}
	if a := call(t, srv.URL, "xoxb-demo", "conversations.create", map[string]any{"name": "incident-2026-11-26-web"}); a["error"] != "name_taken" {
		t.Errorf("second create: %v", a)
	}
	if a := call(t, srv.URL, "xoxb-demo", "chat.postMessage", map[string]any{"channel": "C9", "text": "x"}); a["error"] != "channel_not_found" {
		t.Errorf("unknown channel: %v", a)
	}
	if a := call(t, srv.URL, "xoxb-demo", "chat.postMessage", map[string]any{"channel": ch["id"], "text": "🔴 Initiating rollback"}); a["ok"] != true || a["ts"] == "" {
		t.Errorf("post: %v", a)
	}
	m := s.Messages()
	if len(m) != 1 || m[0].Channel != "incident-2026-11-26-web" || !strings.Contains(log.String(), "#incident-2026-11-26-web:\n🔴 Initiating rollback") {
		t.Errorf("messages %v, log %q", m, log.String())
	}
}
