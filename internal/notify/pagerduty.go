package notify

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// PagerDuty sends Events API v2 events (POST /v2/enqueue) with one
// dedup_key per incident: trigger, acknowledge (the runbook's "In
// Progress"), resolve.
type PagerDuty struct {
	EventsURL  string // https://events.pagerduty.com/v2/enqueue
	RoutingKey string
	Client     *http.Client
	Attempts   int
	Backoff    time.Duration
}

// Event actions.
const (
	Trigger     = "trigger"
	Acknowledge = "acknowledge"
	Resolve     = "resolve"
)

// Send sends one event for the incident (summary is used on trigger).
func (p *PagerDuty) Send(ctx context.Context, action string, inc Incident, summary string) error {
	url := p.EventsURL
	if url == "" {
		url = "https://events.pagerduty.com/v2/enqueue"
	}
	ev := map[string]any{"routing_key": p.RoutingKey, "event_action": action, "dedup_key": DedupKey(inc)}
	if action == Trigger {
		ev["payload"] = map[string]any{
			"summary":  summary,
			"source":   inc.Service,
			"severity": "critical",
			"custom_details": map[string]string{
				"incident": inc.ID, "bad_version": inc.BadVersion, "good_version": inc.GoodVersion,
			},
		}
	}
	attempts, backoff := retryParams(p.Attempts, p.Backoff)
	var ans struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}
	err := Retry(ctx, attempts, backoff, func() error { return postJSON(ctx, p.Client, url, nil, ev, &ans) })
	if err != nil {
		return fmt.Errorf("pagerduty %s: %w", action, err)
	}
	if ans.Status != "" && ans.Status != "success" {
		return fmt.Errorf("pagerduty %s: %s %s", action, ans.Status, ans.Message)
	}
	return nil
}

// DedupKey is the incident's stable PagerDuty key.
func DedupKey(inc Incident) string {
	return "rollback-" + strings.ToLower(inc.ID)
}

// PagerDutyREST updates an incident's status through the REST API:
// PUT /incidents/{id} with {"incident": {"type": "incident_reference",
// "status": ...}}, Authorization "Token token=...", and a From header
// naming a PagerDuty user's email.
type PagerDutyREST struct {
	BaseURL  string // https://api.pagerduty.com
	Token    string
	From     string
	Client   *http.Client
	Attempts int
	Backoff  time.Duration
}

// SetStatus sets status (acknowledged, resolved) on incident id.
func (p *PagerDutyREST) SetStatus(ctx context.Context, id, status string) error {
	base := strings.TrimRight(p.BaseURL, "/")
	if base == "" {
		base = "https://api.pagerduty.com"
	}
	headers := map[string]string{
		"Authorization": "Token token=" + p.Token,
		"Accept":        "application/vnd.pagerduty+json;version=2",
		"From":          p.From,
	}
	body := map[string]any{"incident": map[string]any{"type": "incident_reference", "status": status}}
	attempts, backoff := retryParams(p.Attempts, p.Backoff)
	err := Retry(ctx, attempts, backoff, func() error {
		return sendJSON(ctx, p.Client, http.MethodPut, base+"/incidents/"+id, headers, body, nil)
	})
	if err != nil {
		return fmt.Errorf("pagerduty incident %s -> %s: %w", id, status, err)
	}
	return nil
}
