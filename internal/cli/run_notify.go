package cli

import (
	"context"
	"fmt"
	"strings"

	"rollback/internal/config"
	"rollback/internal/flags"
	"rollback/internal/notify"
	"rollback/internal/runbook"
)

// announce is Step 1's notification: the Slack incident channel and start
// message, and PagerDuty trigger + acknowledge ("In Progress"). Failures are
// reported in the evidence and never stop the rollback.
func announce(ctx context.Context, f *Factory, sc *runbook.StepContext, svc *config.Service, inc notify.Incident) []string {
	if svc == nil || svc.Notify == nil {
		return []string{"no notifier configured"}
	}
	var out []string
	if sl := svc.Notify.Slack; sl != nil {
		out = append(out, slackPost(ctx, f, sc, sl, inc, "slack-start", notify.StartText(inc, sl.Mentions)))
	}
	if pd := svc.Notify.PagerDuty; pd != nil {
		if pd.RoutingKeyEnv != "" {
			out = append(out, pagerduty(ctx, f, sc, pd, inc, notify.Trigger), pagerduty(ctx, f, sc, pd, inc, notify.Acknowledge))
		}
		out = append(out, pagerdutyStatus(ctx, f, sc, pd, inc, "acknowledged")...)
	}
	for _, wh := range svc.Notify.Webhooks {
		out = append(out, webhookPost(ctx, f, sc, wh, "start", notify.WebhookBody(wh.Format, inc, notify.StartText(inc, nil), nil)))
	}
	return out
}

// conclude is Step 6's: the closing summary and PagerDuty resolve.
func conclude(ctx context.Context, f *Factory, sc *runbook.StepContext, svc *config.Service, inc notify.Incident, sum notify.Summary) []string {
	if svc == nil || svc.Notify == nil {
		return []string{"no notifier configured"}
	}
	var out []string
	if sl := svc.Notify.Slack; sl != nil {
		out = append(out, slackPost(ctx, f, sc, sl, inc, "slack-summary", notify.SummaryText(inc, sum)))
	}
	if pd := svc.Notify.PagerDuty; pd != nil {
		if pd.RoutingKeyEnv != "" {
			out = append(out, pagerduty(ctx, f, sc, pd, inc, notify.Resolve))
		}
		out = append(out, pagerdutyStatus(ctx, f, sc, pd, inc, "resolved")...)
	}
	for _, wh := range svc.Notify.Webhooks {
		out = append(out, webhookPost(ctx, f, sc, wh, "summary", notify.WebhookBody(wh.Format, inc, notify.SummaryText(inc, sum), &sum)))
	}
	return out
}

// webhookPost sends one message to a configured webhook, at most once per
// incident. The URL (which may hold a secret) is never in the evidence.
func webhookPost(ctx context.Context, f *Factory, sc *runbook.StepContext, cfg config.WebhookNotify, what string, body any) string {
	url := cfg.URL
	if cfg.URLEnv != "" {
		if url = f.IO.Getenv(cfg.URLEnv); url == "" {
			return fmt.Sprintf("webhook %s: $%s is not set; nothing sent", cfg.Name, cfg.URLEnv)
		}
	}
	key := "webhook-" + cfg.Name + "-" + what
	_, err := sc.Once(ctx, key, func() (string, error) {
		return what + " sent", (&notify.Webhook{URL: url}).Send(ctx, body)
	})
	if err != nil {
		return fmt.Sprintf("webhook %s: %s failed: %v", cfg.Name, what, err)
	}
	return fmt.Sprintf("webhook %s: %s sent (%s)", cfg.Name, what, cfg.Format)
}

func slackPost(ctx context.Context, f *Factory, sc *runbook.StepContext, cfg *config.SlackNotify, inc notify.Incident, key, text string) string {
	token := f.IO.Getenv(cfg.TokenEnv)
	if token == "" {
		return fmt.Sprintf("slack: $%s is not set; nothing posted", cfg.TokenEnv)
	}
	sl := &notify.Slack{BaseURL: cfg.APIURL, Token: token}
	ch, err := sc.Once(ctx, "slack-channel", func() (string, error) {
		id, name, err := sl.CreateChannel(ctx, notify.ChannelName(inc))
		return id + " #" + name, err
	})
	if err != nil || ch == runbook.Uncertain {
		return fmt.Sprintf("slack: channel not created (%v)", orErr(err, ch))
	}
	id, name, _ := strings.Cut(ch, " ")
	ts, err := sc.Once(ctx, key, func() (string, error) { return sl.Post(ctx, id, text) })
	if err != nil {
		return fmt.Sprintf("slack: %s failed: %v", key, err)
	}
	return fmt.Sprintf("slack %s in %s (%s)", key, name, ts)
}

func pagerduty(ctx context.Context, f *Factory, sc *runbook.StepContext, cfg *config.PagerDutyNotify, inc notify.Incident, action string) string {
	key := f.IO.Getenv(cfg.RoutingKeyEnv)
	if key == "" {
		return fmt.Sprintf("pagerduty: $%s is not set; no %s sent", cfg.RoutingKeyEnv, action)
	}
	pd := &notify.PagerDuty{EventsURL: cfg.EventsURL, RoutingKey: key}
	_, err := sc.Once(ctx, "pagerduty-"+action, func() (string, error) {
		return action + " sent", pd.Send(ctx, action, inc, notify.StartText(inc, nil))
	})
	if err != nil {
		return fmt.Sprintf("pagerduty %s failed: %v", action, err)
	}
	return "pagerduty " + action + " (dedup_key " + notify.DedupKey(inc) + ")"
}

// pagerdutyStatus sets the paging incident's status through the REST API
// (the runbook's "Update incident status in PagerDuty → In Progress" is
// acknowledged), when the run was given one and a token is configured.
func pagerdutyStatus(ctx context.Context, f *Factory, sc *runbook.StepContext, cfg *config.PagerDutyNotify, inc notify.Incident, status string) []string {
	if inc.PagerDutyID == "" {
		return nil
	}
	if cfg.APITokenEnv == "" {
		return []string{"pagerduty incident " + inc.PagerDutyID + ": no apiTokenEnv in rollback.yaml; status not set"}
	}
	token := f.IO.Getenv(cfg.APITokenEnv)
	if token == "" {
		return []string{fmt.Sprintf("pagerduty incident %s: $%s is not set; status not set", inc.PagerDutyID, cfg.APITokenEnv)}
	}
	rest := &notify.PagerDutyREST{BaseURL: cfg.APIURL, Token: token, From: cfg.From}
	_, err := sc.Once(ctx, "pagerduty-rest-"+status, func() (string, error) {
		return status, rest.SetStatus(ctx, inc.PagerDutyID, status)
	})
	if err != nil {
		return []string{fmt.Sprintf("pagerduty incident %s -> %s failed: %v", inc.PagerDutyID, status, err)}
	}
	return []string{"pagerduty incident " + inc.PagerDutyID + " " + status}
}

func orErr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// flagProvider builds the configured flag provider with its token from the
// environment.
func flagProvider(f *Factory, c *config.Flag) (flags.Provider, error) {
	token := ""
	if c.TokenEnv != "" {
		if token = f.IO.Getenv(c.TokenEnv); token == "" {
			return nil, fmt.Errorf("flag %s: $%s is not set", c.Key, c.TokenEnv)
		}
	}
	switch c.Provider {
	case "launchdarkly":
		return &flags.LaunchDarkly{BaseURL: c.URL, Token: token, Project: c.Project, Environment: c.Environment}, nil
	case "unleash":
		return &flags.Unleash{BaseURL: c.URL, Token: token, Project: c.Project, Environment: c.Environment}, nil
	case "flagd":
		return &flags.Flagd{Path: c.Path}, nil
	}
	return nil, fmt.Errorf("flag %s: unsupported provider %q", c.Key, c.Provider)
}
