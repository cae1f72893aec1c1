// Package notify tells people about a rollback, as the runbook's Steps 1 and
// 6 say: a Slack incident channel with the start message and the closing
// summary (Slack Web API, or an incoming webhook), a generic JSON webhook,
// and PagerDuty (Events API v2 trigger/acknowledge/resolve with one
// dedup_key per incident). Failures are retried with backoff and reported;
// callers never let them block a recovery step.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/outbound"
)

// Incident is what the messages talk about.
type Incident struct {
	ID          string
	Service     string
	BadVersion  string
	GoodVersion string
	Date        time.Time
	// PagerDutyID is the PagerDuty incident that paged on-call, if known.
	PagerDutyID string
}

// Summary is the runbook's closing message.
type Summary struct {
	TimeToRecover time.Duration `json:"-"`
	ErrorRate     string        `json:"errorRate"`     // e.g. "0.000% (limit 0.100%)"
	DownMigration string        `json:"downMigration"` // "applied ✅", "not needed"
	SmokeTests    string        `json:"smokeTests"`    // "✅ all passing"
	PIRDue        time.Time     `json:"pirDue"`
	Blocked       bool          `json:"blocked"`
}

// Webhook payload formats.
const (
	FormatSlack = "slack" // a Slack incoming webhook: {"text": ...}
	FormatJSON  = "json"  // a generic webhook: Event
)

// Event is the generic JSON webhook's body.
type Event struct {
	Event         string   `json:"event"` // rollback.started, rollback.completed
	Incident      string   `json:"incident"`
	Service       string   `json:"service"`
	BadVersion    string   `json:"badVersion"`
	GoodVersion   string   `json:"goodVersion"`
	Text          string   `json:"text"`
	TimeToRecover float64  `json:"timeToRecoverSeconds,omitempty"`
	Summary       *Summary `json:"summary,omitempty"`
}

// WebhookBody is what a webhook of the format receives: the start message
// (sum nil) or the closing summary.
func WebhookBody(format string, inc Incident, text string, sum *Summary) any {
	if format == FormatSlack {
		return map[string]string{"text": text}
	}
	e := Event{Event: "rollback.started", Incident: inc.ID, Service: inc.Service, BadVersion: inc.BadVersion, GoodVersion: inc.GoodVersion, Text: text}
	if sum != nil {
		e.Event, e.Summary, e.TimeToRecover = "rollback.completed", sum, sum.TimeToRecover.Seconds()
	}
	return e
}

// StartText is the runbook's Step 1 message, with the roles tagged.
func StartText(inc Incident, mentions []string) string {
	s := fmt.Sprintf("🔴 Initiating rollback of %s %s → %s", inc.Service, inc.BadVersion, inc.GoodVersion)
	if len(mentions) > 0 {
		s += "\n" + strings.Join(mentions, " ")
	}
	return s
}

// SummaryText is the runbook's Step 6 message.
func SummaryText(inc Incident, s Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "✅ Rollback complete\nService: %s\nRolled back: %s → %s\n", inc.Service, inc.BadVersion, inc.GoodVersion)
	fmt.Fprintf(&b, "Time to recover: %s\n", humanDuration(s.TimeToRecover))
	fmt.Fprintf(&b, "Error rate: %s\nDB down-migration: %s\nInflight smoke tests: %s\n", s.ErrorRate, s.DownMigration, s.SmokeTests)
	fmt.Fprintf(&b, "Root cause investigation ongoing — PIR within 48 hours (due %s).\n", s.PIRDue.UTC().Format("2006-01-02 15:04 MST"))
	if s.Blocked {
		fmt.Fprintf(&b, "Deployment of %s blocked until root cause resolved.\n", inc.BadVersion)
	}
	return b.String()
}

// humanDuration is the runbook's "12 minutes", or seconds under a minute.
func humanDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%d seconds", int(d.Round(time.Second).Seconds()))
	}
	m := int(d.Round(time.Minute).Minutes())
	if m == 1 {
		return "1 minute"
	}
	return fmt.Sprintf("%d minutes", m)
}

var channelChars = regexp.MustCompile(`[^a-z0-9_-]+`)

// ChannelName is incident-YYYY-MM-DD-<service> under Slack's rules:
// lowercase, only a-z 0-9 - _, at most 80 characters.
func ChannelName(inc Incident) string {
	name := "incident-" + inc.Date.UTC().Format("2006-01-02") + "-" + strings.ToLower(inc.Service)
	name = channelChars.ReplaceAllString(name, "-")
	name = strings.Trim(name, "-_")
	if len(name) > 80 {
		name = strings.TrimRight(name[:80], "-_")
	}
	return name
}

// retryParams fills in the default attempts (4) and first backoff (500ms).
func retryParams(attempts int, backoff time.Duration) (int, time.Duration) {
	if attempts <= 0 {
		attempts = 4
	}
	if backoff <= 0 {
		backoff = 500 * time.Millisecond
	}
	return attempts, backoff
}

// Retry calls fn until it succeeds, its error is permanent, or attempts
// run out, waiting base, 2·base, 4·base… between tries, or as long as the
// server asked (an *outbound.RetryLater, from Retry-After). A wait that
// would end past ctx's deadline is not begun: the last error is returned
// at once, saying so.
func Retry(ctx context.Context, attempts int, base time.Duration, fn func() error) error {
	var err error
	for i := 0; i < attempts; i++ {
		if err = fn(); err == nil {
			return nil
		}
		var p permanent
		if asPermanent(err, &p) {
			return err
		}
		if i+1 < attempts {
			wait := base << i
			var rl *outbound.RetryLater
			if errors.As(err, &rl) && rl.After > wait {
				wait = rl.After
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return fmt.Errorf("after %d attempt(s), the next in %s would pass the step's deadline: %w", i+1, wait.Round(time.Millisecond), err)
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("after %d attempt(s): %w (last error: %v)", i+1, ctx.Err(), err)
			case <-t.C:
			}
		}
	}
	return fmt.Errorf("after %d attempts: %w", attempts, err)
}

type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

func asPermanent(err error, p *permanent) bool {
	for err != nil {
		if q, ok := err.(permanent); ok {
			*p = q
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// postJSON sends v as JSON; 5xx and 429 are retryable, other 4xx permanent.
func postJSON(ctx context.Context, c *http.Client, url string, headers map[string]string, v any, out any) error {
	return sendJSON(ctx, c, http.MethodPost, url, headers, v, out)
}

func sendJSON(ctx context.Context, c *http.Client, method, url string, headers map[string]string, v any, out any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return permanent{err}
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return permanent{err}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := outbound.OrDefault(c).Do(req)
	if err != nil {
		return outbound.Scrub(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		err := fmt.Errorf("HTTP %d from %s", resp.StatusCode, hostOf(url))
		if after, ok := outbound.RetryAfter(resp.Header, time.Now()); ok {
			return &outbound.RetryLater{Err: err, After: after}
		}
		return err
	}
	if resp.StatusCode/100 != 2 {
		return permanent{fmt.Errorf("HTTP %d from %s: %s", resp.StatusCode, hostOf(url), trim(string(b)))}
	}
	if out != nil && len(b) > 0 {
		// The request was taken (2xx): retrying because its answer is
		// unreadable would repeat the side effect.
		if err := json.Unmarshal(b, out); err != nil {
			return permanent{fmt.Errorf("answer from %s: %w", hostOf(url), err)}
		}
	}
	return nil
}

// hostOf keeps secrets in webhook URLs' paths out of messages.
func hostOf(url string) string { return outbound.Host(url) }

func trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
