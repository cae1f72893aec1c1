// Package flagstest has stand-ins for the flag services rollback turns
// flags off in, checking requests against the vendors' documented shapes.
package flagstest

import (
	"encoding/json"
	"net/http"
	"sync"
)

// LaunchDarkly is LaunchDarkly's REST API for one flag (transaction-category
// in Project): a semantic-patch PATCH whose one instruction is turnFlagOff
// turns it off in its environment, a GET reads it per environment; every
// request needs Token. With Hold set, the first PATCH is held unanswered
// until Hold is closed and never applied (it was in flight when its
// sender died); Arrived, if set, is closed when it arrives.
type LaunchDarkly struct {
	Token, Project string
	Hold, Arrived  chan struct{}

	mu       sync.Mutex
	state    map[string]bool
	comments []string
	patches  int
}

// NewLaunchDarkly is a flag that is on in production and staging.
func NewLaunchDarkly(token, project string) *LaunchDarkly {
	return &LaunchDarkly{Token: token, Project: project, state: map[string]bool{"production": true, "staging": true}}
}

// On is the flag's state in env.
func (l *LaunchDarkly) On(env string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state[env]
}

// Patches is how many well-formed PATCHes arrived (held ones too).
func (l *LaunchDarkly) Patches() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.patches
}

// Comments are the applied PATCHes' comments.
func (l *LaunchDarkly) Comments() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.comments...)
}

func (l *LaunchDarkly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != l.Token {
		http.Error(w, `{"code":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	if r.URL.Path != "/api/v2/flags/"+l.Project+"/transaction-category" {
		http.Error(w, `{"code":"not_found"}`, http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodPatch:
		if r.Header.Get("Content-Type") != "application/json; domain-model=launchdarkly.semanticpatch" {
			http.Error(w, `{"code":"invalid_request","message":"not a semantic patch"}`, http.StatusBadRequest)
			return
		}
		var body struct {
			EnvironmentKey string `json:"environmentKey"`
			Comment        string `json:"comment"`
			Instructions   []struct {
				Kind string `json:"kind"`
			} `json:"instructions"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Instructions) != 1 || body.Instructions[0].Kind != "turnFlagOff" {
			http.Error(w, `{"code":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		l.mu.Lock()
		if _, ok := l.state[body.EnvironmentKey]; !ok {
			l.mu.Unlock()
			http.Error(w, `{"code":"invalid_request","message":"unknown environment"}`, http.StatusBadRequest)
			return
		}
		l.patches++
		held := l.patches == 1 && l.Hold != nil
		if held && l.Arrived != nil {
			close(l.Arrived)
		}
		l.mu.Unlock()
		if held {
			<-l.Hold
			http.Error(w, "", http.StatusServiceUnavailable)
			return
		}
		l.mu.Lock()
		l.state[body.EnvironmentKey] = false
		l.comments = append(l.comments, body.Comment)
		l.mu.Unlock()
		_, _ = w.Write([]byte(`{"key":"transaction-category"}`))
	case http.MethodGet:
		l.mu.Lock()
		envs := map[string]any{}
		for k, v := range l.state {
			envs[k] = map[string]any{"on": v}
		}
		l.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"key": "transaction-category", "environments": envs})
	default:
		http.Error(w, "", http.StatusMethodNotAllowed)
	}
}
