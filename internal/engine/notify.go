package engine

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/flags"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/notify"
	"github.com/rollback-dev/rollback/internal/outbound"
	"github.com/rollback-dev/rollback/internal/runbook"
)

// notifiedEvidence is a communication step's evidence: what was
// delivered, or incident.NotNotified with the reasons when nothing was.
func notifiedEvidence(head string, ns []notify.Outcome) string {
	return notify.Evidence(head, incident.NotNotified, ns)
}

// announce is Step 1's notification: the Slack incident channel and start
// message, and PagerDuty trigger + acknowledge ("In Progress"). Failures are
// reported in the evidence and never stop the rollback.
func (e *Engine) announce(ctx context.Context, sc *runbook.StepContext, svc *config.Service, inc notify.Incident) []notify.Outcome {
	if svc == nil || svc.Notify == nil {
		return []notify.Outcome{{Text: "no notifier configured (notify: in rollback.yaml)"}}
	}
	client := outbound.Client(svc.Notify.Timeout)
	var fns []func() []notify.Outcome
	if sl := svc.Notify.Slack; sl != nil {
		fns = append(fns, func() []notify.Outcome {
			return []notify.Outcome{e.slackPost(ctx, sc, client, sl, inc, "slack-start", notify.StartText(inc, sl.Mentions))}
		})
	}
	if pd := svc.Notify.PagerDuty; pd != nil {
		fns = append(fns, func() []notify.Outcome {
			var out []notify.Outcome
			if pd.RoutingKeyEnv != "" {
				out = append(out, e.pagerduty(ctx, sc, client, pd, inc, notify.Trigger), e.pagerduty(ctx, sc, client, pd, inc, notify.Acknowledge))
			}
			return append(out, e.pagerdutyStatus(ctx, sc, client, pd, inc, "acknowledged")...)
		})
	}
	for _, wh := range svc.Notify.Webhooks {
		fns = append(fns, func() []notify.Outcome {
			return []notify.Outcome{e.webhookPost(ctx, sc, client, wh, "start", notify.WebhookBody(wh.Format, inc, notify.StartText(inc, nil), nil))}
		})
	}
	return notify.All(fns)
}

// conclude is Step 6's: the closing summary and PagerDuty resolve.
func (e *Engine) conclude(ctx context.Context, sc *runbook.StepContext, svc *config.Service, inc notify.Incident, sum notify.Summary) []notify.Outcome {
	if svc == nil || svc.Notify == nil {
		return []notify.Outcome{{Text: "no notifier configured (notify: in rollback.yaml)"}}
	}
	client := outbound.Client(svc.Notify.Timeout)
	var fns []func() []notify.Outcome
	if sl := svc.Notify.Slack; sl != nil {
		fns = append(fns, func() []notify.Outcome {
			return []notify.Outcome{e.slackPost(ctx, sc, client, sl, inc, "slack-summary", notify.SummaryText(inc, sum))}
		})
	}
	if pd := svc.Notify.PagerDuty; pd != nil {
		fns = append(fns, func() []notify.Outcome {
			var out []notify.Outcome
			if pd.RoutingKeyEnv != "" {
				out = append(out, e.pagerduty(ctx, sc, client, pd, inc, notify.Resolve))
			}
			return append(out, e.pagerdutyStatus(ctx, sc, client, pd, inc, "resolved")...)
		})
	}
	for _, wh := range svc.Notify.Webhooks {
		fns = append(fns, func() []notify.Outcome {
			return []notify.Outcome{e.webhookPost(ctx, sc, client, wh, "summary", notify.WebhookBody(wh.Format, inc, notify.SummaryText(inc, sum), &sum))}
		})
	}
	return notify.All(fns)
}

// webhookPost sends one message to a configured webhook, at most once per
// incident. The URL (which may hold a secret) is never in the evidence.
func (e *Engine) webhookPost(ctx context.Context, sc *runbook.StepContext, client *http.Client, cfg config.WebhookNotify, what string, body any) notify.Outcome {
	url := cfg.URL
	if cfg.URLEnv != "" {
		if url = e.getenv(cfg.URLEnv); url == "" {
			return notify.Outcome{Text: fmt.Sprintf("webhook %s: $%s is not set; nothing sent", cfg.Name, cfg.URLEnv)}
		}
	}
	key := "webhook-" + cfg.Name + "-" + what
	ev, err := sc.Once(ctx, key, func() (string, error) {
		return what + " sent", (&notify.Webhook{URL: url, Client: client}).Send(ctx, body)
	})
	if err != nil {
		return notify.Outcome{Text: fmt.Sprintf("webhook %s: %s failed: %v", cfg.Name, what, redactURL(err, url))}
	}
	if ev == runbook.Uncertain {
		return notify.Outcome{Text: fmt.Sprintf("webhook %s: %s %s", cfg.Name, what, ev)}
	}
	return notify.Outcome{Text: fmt.Sprintf("webhook %s: %s sent (%s)", cfg.Name, what, cfg.Format), Delivered: true}
}

func (e *Engine) slackPost(ctx context.Context, sc *runbook.StepContext, client *http.Client, cfg *config.SlackNotify, inc notify.Incident, key, text string) notify.Outcome {
	token := e.getenv(cfg.TokenEnv)
	if token == "" {
		return notify.Outcome{Text: fmt.Sprintf("slack: $%s is not set; nothing posted", cfg.TokenEnv)}
	}
	sl := &notify.Slack{BaseURL: cfg.APIURL, Token: token, Client: client}
	ch, err := sc.Once(ctx, "slack-channel", func() (string, error) {
		id, name, err := sl.CreateChannel(ctx, notify.ChannelName(inc))
		return id + " #" + name, err
	})
	if err != nil || ch == runbook.Uncertain {
		return notify.Outcome{Text: fmt.Sprintf("slack: channel not created (%v)", orErr(err, ch))}
	}
	id, name, _ := strings.Cut(ch, " ")
	ts, err := sc.Once(ctx, key, func() (string, error) { return sl.Post(ctx, id, text) })
	if err != nil {
		return notify.Outcome{Text: fmt.Sprintf("slack: %s failed: %v", key, err)}
	}
	if ts == runbook.Uncertain {
		return notify.Outcome{Text: fmt.Sprintf("slack %s in %s: %s", key, name, ts)}
	}
	return notify.Outcome{Text: fmt.Sprintf("slack %s in %s (%s)", key, name, ts), Delivered: true}
}

func (e *Engine) pagerduty(ctx context.Context, sc *runbook.StepContext, client *http.Client, cfg *config.PagerDutyNotify, inc notify.Incident, action string) notify.Outcome {
	key := e.getenv(cfg.RoutingKeyEnv)
	if key == "" {
		return notify.Outcome{Text: fmt.Sprintf("pagerduty: $%s is not set; no %s sent", cfg.RoutingKeyEnv, action)}
	}
	pd := &notify.PagerDuty{EventsURL: cfg.EventsURL, RoutingKey: key, Client: client}
	// An event under the incident's dedup_key sets the alert's state
	// (PagerDuty merges a repeated trigger into the open alert, and a
	// repeated acknowledge or resolve changes nothing): an interrupted send
	// is sent again. The one case it is not a no-op: a trigger repeated
	// after someone resolved the alert in PagerDuty pages again, which
	// beats no page at all.
	_, err := sc.Converge(ctx, "pagerduty-"+action, func() (string, error) {
		return action + " sent", pd.Send(ctx, action, inc, notify.StartText(inc, nil))
	})
	if err != nil {
		return notify.Outcome{Text: fmt.Sprintf("pagerduty %s failed: %v", action, err)}
	}
	return notify.Outcome{Text: "pagerduty " + action + " (dedup_key " + notify.DedupKey(inc) + ")", Delivered: true}
}

// pagerdutyStatus sets the paging incident's status through the REST API
// (the runbook's "Update incident status in PagerDuty → In Progress" is
// acknowledged), when the run was given one and a token is configured.
func (e *Engine) pagerdutyStatus(ctx context.Context, sc *runbook.StepContext, client *http.Client, cfg *config.PagerDutyNotify, inc notify.Incident, status string) []notify.Outcome {
	if inc.PagerDutyID == "" {
		return nil
	}
	if cfg.APITokenEnv == "" {
		return []notify.Outcome{{Text: "pagerduty incident " + inc.PagerDutyID + ": no apiTokenEnv in rollback.yaml; status not set"}}
	}
	token := e.getenv(cfg.APITokenEnv)
	if token == "" {
		return []notify.Outcome{{Text: fmt.Sprintf("pagerduty incident %s: $%s is not set; status not set", inc.PagerDutyID, cfg.APITokenEnv)}}
	}
	rest := &notify.PagerDutyREST{BaseURL: cfg.APIURL, Token: token, From: cfg.From, Client: client}
	// Setting a status is a PUT of a state: an interrupted one is sent again.
	_, err := sc.Converge(ctx, "pagerduty-rest-"+status, func() (string, error) {
		return status, rest.SetStatus(ctx, inc.PagerDutyID, status)
	})
	if err != nil {
		return []notify.Outcome{{Text: fmt.Sprintf("pagerduty incident %s -> %s failed: %v", inc.PagerDutyID, status, err)}}
	}
	return []notify.Outcome{{Text: "pagerduty incident " + inc.PagerDutyID + " " + status, Delivered: true}}
}

// redactURL removes a secret-bearing URL from an error's text, whatever
// wrapped it.
func redactURL(err error, url string) string {
	msg := err.Error()
	if url != "" {
		msg = strings.ReplaceAll(msg, url, outbound.Host(url))
	}
	return msg
}

func orErr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// flagProvider builds the configured flag provider with its token from the
// environment.
func (e *Engine) flagProvider(c *config.Flag) (flags.Provider, error) {
	token := ""
	if c.TokenEnv != "" {
		if token = e.getenv(c.TokenEnv); token == "" {
			return nil, fmt.Errorf("flag %s: $%s is not set", c.Key, c.TokenEnv)
		}
	}
	switch c.Provider {
	case "launchdarkly":
		return &flags.LaunchDarkly{BaseURL: c.URL, Token: token, Project: c.Project, Environment: c.Environment, Client: outbound.Client(flagRequestTimeout(c))}, nil
	case "unleash":
		return &flags.Unleash{BaseURL: c.URL, Token: token, Project: c.Project, Environment: c.Environment, Client: outbound.Client(flagRequestTimeout(c))}, nil
	case "flagd":
		return &flags.Flagd{Path: c.Path}, nil
	}
	return nil, fmt.Errorf("flag %s: unsupported provider %q", c.Key, c.Provider)
}

// flagStepDeadline is the flag step's deadline: flag.timeout, or a minute.
func flagStepDeadline(svc *config.Service, _ time.Duration) time.Duration {
	if svc != nil && svc.Flag != nil && svc.Flag.Timeout > 0 {
		return svc.Flag.Timeout
	}
	return time.Minute
}

// flagRequestTimeout bounds one request to the flag service, so turning
// off and reading back both fit the step.
func flagRequestTimeout(c *config.Flag) time.Duration {
	if c.Timeout > 0 {
		return min(c.Timeout/2, outbound.DefaultTimeout)
	}
	return outbound.DefaultTimeout
}

// notifyDeadline is a communication step's deadline: notify.deadline, or
// the runbook's 2 minutes.
func notifyDeadline(svc *config.Service, _ time.Duration) time.Duration {
	if svc != nil && svc.Notify != nil && svc.Notify.Deadline > 0 {
		return svc.Notify.Deadline
	}
	return incident.BudgetDeclare
}
