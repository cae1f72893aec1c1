// Package slackstub is a local stand-in for the two Slack Web API methods
// rollback uses (conversations.create and chat.postMessage), for the demo
// and for trying notifications without a workspace. It follows Slack's
// documented shapes: a bearer token, JSON bodies, {"ok": false, "error":
// ...} answers with HTTP 200, name_taken for an existing channel. Every
// message is written to Log as it arrives.
package slackstub

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Message is one posted message.
type Message struct {
	Channel string
	Text    string
	TS      string
}

// Server is the stand-in.
type Server struct {
	Token string    // the bearer token it accepts
	Log   io.Writer // each message as it arrives (nil: none)

	mu       sync.Mutex
	channels map[string]string // name -> id
	names    map[string]string // id -> name
	messages []Message
}

// Messages returns what was posted, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

func answer(w http.ResponseWriter, v map[string]any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// ServeHTTP serves /api/conversations.create and /api/chat.postMessage.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if s.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.Token {
		answer(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		answer(w, map[string]any{"ok": false, "error": "invalid_json"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.channels == nil {
		s.channels, s.names = map[string]string{}, map[string]string{}
	}
	switch r.URL.Path {
	case "/api/conversations.create":
		name, _ := body["name"].(string)
		if name == "" {
			answer(w, map[string]any{"ok": false, "error": "invalid_name_required"})
			return
		}
		if _, taken := s.channels[name]; taken {
			answer(w, map[string]any{"ok": false, "error": "name_taken"})
			return
		}
		id := "C" + strconv.Itoa(1000+len(s.channels))
		s.channels[name], s.names[id] = id, name
		if s.Log != nil {
			fmt.Fprintf(s.Log, "[slack] channel #%s created\n", name)
		}
		answer(w, map[string]any{"ok": true, "channel": map[string]any{"id": id, "name": name}})
	case "/api/chat.postMessage":
		ch, _ := body["channel"].(string)
		text, _ := body["text"].(string)
		name, ok := s.names[ch]
		if !ok {
			answer(w, map[string]any{"ok": false, "error": "channel_not_found"})
			return
		}
		ts := fmt.Sprintf("%d.%06d", time.Now().Unix(), len(s.messages)+1)
		s.messages = append(s.messages, Message{Channel: name, Text: text, TS: ts})
		if s.Log != nil {
			fmt.Fprintf(s.Log, "[slack] #%s:\n%s\n\n", name, text)
		}
		answer(w, map[string]any{"ok": true, "channel": ch, "ts": ts})
	default:
		answer(w, map[string]any{"ok": false, "error": "unknown_method"})
	}
}
