package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Slack posts through the Web API with a bot token: conversations.create
// for the incident channel, chat.postMessage for the messages.
type Slack struct {
	BaseURL string // https://slack.com/api
	Token   string // xoxb-...
	Client  *http.Client
	// Attempts and Backoff bound retries (default 4, 500ms).
	Attempts int
	Backoff  time.Duration
}

// slackAnswer holds the fields rollback reads. "channel" is an object in
// conversations.create's answer and the channel id (a string) in
// chat.postMessage's, so it is decoded per method.
type slackAnswer struct {
	OK         bool            `json:"ok"`
	Error      string          `json:"error"`
	TS         string          `json:"ts"`
	RawChannel json.RawMessage `json:"channel"`
	Channel    struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"-"`
}

func (s *Slack) call(ctx context.Context, method string, body any) (*slackAnswer, error) {
	base := strings.TrimRight(s.BaseURL, "/")
	if base == "" {
		base = "https://slack.com/api"
	}
	var ans slackAnswer
	attempts, backoff := retryParams(s.Attempts, s.Backoff)
	err := Retry(ctx, attempts, backoff, func() error {
		ans = slackAnswer{}
		if err := postJSON(ctx, s.Client, base+"/"+method, map[string]string{"Authorization": "Bearer " + s.Token}, body, &ans); err != nil {
			return err
		}
		switch {
		case ans.OK:
			if len(ans.RawChannel) > 0 && ans.RawChannel[0] == '{' {
				// The call succeeded: a body we cannot read is not retried
				// (that would post twice).
				if err := json.Unmarshal(ans.RawChannel, &ans.Channel); err != nil {
					return permanent{fmt.Errorf("slack %s: answer: %w", method, err)}
				}
			}
			return nil
		case ans.Error == "ratelimited" || ans.Error == "internal_error" || ans.Error == "service_unavailable":
			return fmt.Errorf("slack %s: %s", method, ans.Error)
		}
		return permanent{fmt.Errorf("slack %s: %s", method, ans.Error)}
	})
	return &ans, err
}

// CreateChannel creates the incident channel, adding -2, -3… when the
// name is taken, and returns its id and name.
func (s *Slack) CreateChannel(ctx context.Context, name string) (id, created string, err error) {
	for i := 1; i <= 20; i++ {
		try := name
		if i > 1 {
			suffix := fmt.Sprintf("-%d", i)
			if len(try)+len(suffix) > 80 {
				try = try[:80-len(suffix)]
			}
			try += suffix
		}
		ans, err := s.call(ctx, "conversations.create", map[string]any{"name": try, "is_private": false})
		if err == nil {
			return ans.Channel.ID, ans.Channel.Name, nil
		}
		if ans.Error != "name_taken" {
			return "", "", err
		}
	}
	return "", "", fmt.Errorf("slack conversations.create: %s and its suffixed names are taken", name)
}

// Post posts text to a channel id and returns the message ts.
func (s *Slack) Post(ctx context.Context, channel, text string) (string, error) {
	ans, err := s.call(ctx, "chat.postMessage", map[string]any{"channel": channel, "text": text})
	if err != nil {
		return "", err
	}
	return ans.TS, nil
}

// Webhook posts {"text": ...} (a Slack incoming webhook) or any JSON (a
// generic webhook) to a URL, with retries.
type Webhook struct {
	URL      string
	Client   *http.Client
	Attempts int
	Backoff  time.Duration
}

// Send posts v as JSON.
func (w *Webhook) Send(ctx context.Context, v any) error {
	attempts, backoff := retryParams(w.Attempts, w.Backoff)
	return Retry(ctx, attempts, backoff, func() error { return postJSON(ctx, w.Client, w.URL, nil, v, nil) })
}
