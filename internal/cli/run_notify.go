package cli

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"rollback/internal/config"
	"rollback/internal/flags"
	"rollback/internal/incident"
	"rollback/internal/notify"
	"rollback/internal/outbound"
	"rollback/internal/runbook"
)

// notice is one notification's outcome for the step's evidence.
type notice struct {
	text      string
	delivered bool
}

// notifyAll runs the notifiers side by side (a hung one costs its own
// timeout, not the others') and returns their outcomes in order.
func notifyAll(fns []func() []notice) []notice {
	out := make([][]notice, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A notifier's bug is evidence like its failures: it must not
			// take the process (and the rollback beside it) down.
			defer func() {
				if r := recover(); r != nil {
					out[i] = []notice{{text: fmt.Sprintf("notifier failed: panic: %v", r)}}
				}
			}()
			out[i] = fn()
		}()
	}
	wg.Wait()
	var all []notice
	for _, o := range out {
		all = append(all, o...)
	}
	return all
}

// notifiedEvidence is a communication step's evidence: what was delivered,
// or incident.NotNotified with the reasons when nothing was.
func notifiedEvidence(head string, ns []notice) string {
	parts := []string{head}
	delivered := false
	for _, n := range ns {
		delivered = delivered || n.delivered
	}
	if !delivered {
		parts = append(parts, incident.NotNotified)
	}
	for _, n := range ns {
		parts = append(parts, n.text)
	}
	return strings.Join(parts, "; ")
}

// announce is Step 1's notification: the Slack incident channel and start
// message, and PagerDuty trigger + acknowledge ("In Progress"). Failures are
// reported in the evidence and never stop the rollback.
func announce(ctx context.Context, f *Factory, sc *runbook.StepContext, svc *config.Service, inc notify.Incident) []notice {
	if svc == nil || svc.Notify == nil {
		return []notice{{text: "no notifier configured (notify: in rollback.yaml)"}}
	}
	client := outbound.Client(svc.Notify.Timeout)
	var fns []func() []notice
	if sl := svc.Notify.Slack; sl != nil {
		fns = append(fns, func() []notice {
			return []notice{slackPost(ctx, f, sc, client, sl, inc, "slack-start", notify.StartText(inc, sl.Mentions))}
		})
	}
	if pd := svc.Notify.PagerDuty; pd != nil {
		fns = append(fns, func() []notice {
			var out []notice
			if pd.RoutingKeyEnv != "" {
				out = append(out, pagerduty(ctx, f, sc, client, pd, inc, notify.Trigger), pagerduty(ctx, f, sc, client, pd, inc, notify.Acknowledge))
			}
			return append(out, pagerdutyStatus(ctx, f, sc, client, pd, inc, "acknowledged")...)
		})
	}
	for _, wh := range svc.Notify.Webhooks {
		fns = append(fns, func() []notice {
			return []notice{webhookPost(ctx, f, sc, client, wh, "start", notify.WebhookBody(wh.Format, inc, notify.StartText(inc, nil), nil))}
		})
	}
	return notifyAll(fns)
}

// conclude is Step 6's: the closing summary and PagerDuty resolve.
func conclude(ctx context.Context, f *Factory, sc *runbook.StepContext, svc *config.Service, inc notify.Incident, sum notify.Summary) []notice {
	if svc == nil || svc.Notify == nil {
		return []notice{{text: "no notifier configured (notify: in rollback.yaml)"}}
	}
	client := outbound.Client(svc.Notify.Timeout)
	var fns []func() []notice
	if sl := svc.Notify.Slack; sl != nil {
		fns = append(fns, func() []notice {
			return []notice{slackPost(ctx, f, sc, client, sl, inc, "slack-summary", notify.SummaryText(inc, sum))}
		})
	}
	if pd := svc.Notify.PagerDuty; pd != nil {
		fns = append(fns, func() []notice {
			var out []notice
			if pd.RoutingKeyEnv != "" {
				out = append(out, pagerduty(ctx, f, sc, client, pd, inc, notify.Resolve))
			}
			return append(out, pagerdutyStatus(ctx, f, sc, client, pd, inc, "resolved")...)
		})
	}
	for _, wh := range svc.Notify.Webhooks {
		fns = append(fns, func() []notice {
			return []notice{webhookPost(ctx, f, sc, client, wh, "summary", notify.WebhookBody(wh.Format, inc, notify.SummaryText(inc, sum), &sum))}
		})
	}
	return notifyAll(fns)
}

// webhookPost sends one message to a configured webhook, at most once per
// incident. The URL (which may hold a secret) is never in the evidence.
func webhookPost(ctx context.Context, f *Factory, sc *runbook.StepContext, client *http.Client, cfg config.WebhookNotify, what string, body any) notice {
	url := cfg.URL
	if cfg.URLEnv != "" {
		if url = f.IO.Getenv(cfg.URLEnv); url == "" {
			return notice{text: fmt.Sprintf("webhook %s: $%s is not set; nothing sent", cfg.Name, cfg.URLEnv)}
		}
	}
	key := "webhook-" + cfg.Name + "-" + what
	ev, err := sc.Once(ctx, key, func() (string, error) {
		return what + " sent", (&notify.Webhook{URL: url, Client: client}).Send(ctx, body)
	})
	if err != nil {
		return notice{text: fmt.Sprintf("webhook %s: %s failed: %v", cfg.Name, what, redactURL(err, url))}
	}
	if ev == runbook.Uncertain {
		return notice{text: fmt.Sprintf("webhook %s: %s %s", cfg.Name, what, ev)}
	}
	return notice{text: fmt.Sprintf("webhook %s: %s sent (%s)", cfg.Name, what, cfg.Format), delivered: true}
}

func slackPost(ctx context.Context, f *Factory, sc *runbook.StepContext, client *http.Client, cfg *config.SlackNotify, inc notify.Incident, key, text string) notice {
	token := f.IO.Getenv(cfg.TokenEnv)
	if token == "" {
		return notice{text: fmt.Sprintf("slack: $%s is not set; nothing posted", cfg.TokenEnv)}
	}
	sl := &notify.Slack{BaseURL: cfg.APIURL, Token: token, Client: client}
	ch, err := sc.Once(ctx, "slack-channel", func() (string, error) {
		id, name, err := sl.CreateChannel(ctx, notify.ChannelName(inc))
		return id + " #" + name, err
	})
	if err != nil || ch == runbook.Uncertain {
		return notice{text: fmt.Sprintf("slack: channel not created (%v)", orErr(err, ch))}
	}
	id, name, _ := strings.Cut(ch, " ")
	ts, err := sc.Once(ctx, key, func() (string, error) { return sl.Post(ctx, id, text) })
	if err != nil {
		return notice{text: fmt.Sprintf("slack: %s failed: %v", key, err)}
	}
	if ts == runbook.Uncertain {
		return notice{text: fmt.Sprintf("slack %s in %s: %s", key, name, ts)}
	}
	return notice{text: fmt.Sprintf("slack %s in %s (%s)", key, name, ts), delivered: true}
}

func pagerduty(ctx context.Context, f *Factory, sc *runbook.StepContext, client *http.Client, cfg *config.PagerDutyNotify, inc notify.Incident, action string) notice {
	key := f.IO.Getenv(cfg.RoutingKeyEnv)
	if key == "" {
		return notice{text: fmt.Sprintf("pagerduty: $%s is not set; no %s sent", cfg.RoutingKeyEnv, action)}
	}
	pd := &notify.PagerDuty{EventsURL: cfg.EventsURL, RoutingKey: key, Client: client}
	ev, err := sc.Once(ctx, "pagerduty-"+action, func() (string, error) {
		return action + " sent", pd.Send(ctx, action, inc, notify.StartText(inc, nil))
	})
	if err != nil {
		return notice{text: fmt.Sprintf("pagerduty %s failed: %v", action, err)}
	}
	if ev == runbook.Uncertain {
		return notice{text: "pagerduty " + action + ": " + ev}
	}
	return notice{text: "pagerduty " + action + " (dedup_key " + notify.DedupKey(inc) + ")", delivered: true}
}

// pagerdutyStatus sets the paging incident's status through the REST API
// (the runbook's "Update incident status in PagerDuty → In Progress" is
// acknowledged), when the run was given one and a token is configured.
func pagerdutyStatus(ctx context.Context, f *Factory, sc *runbook.StepContext, client *http.Client, cfg *config.PagerDutyNotify, inc notify.Incident, status string) []notice {
	if inc.PagerDutyID == "" {
		return nil
	}
	if cfg.APITokenEnv == "" {
		return []notice{{text: "pagerduty incident " + inc.PagerDutyID + ": no apiTokenEnv in rollback.yaml; status not set"}}
	}
	token := f.IO.Getenv(cfg.APITokenEnv)
	if token == "" {
		return []notice{{text: fmt.Sprintf("pagerduty incident %s: $%s is not set; status not set", inc.PagerDutyID, cfg.APITokenEnv)}}
	}
	rest := &notify.PagerDutyREST{BaseURL: cfg.APIURL, Token: token, From: cfg.From, Client: client}
	ev, err := sc.Once(ctx, "pagerduty-rest-"+status, func() (string, error) {
		return status, rest.SetStatus(ctx, inc.PagerDutyID, status)
	})
	if err != nil {
		return []notice{{text: fmt.Sprintf("pagerduty incident %s -> %s failed: %v", inc.PagerDutyID, status, err)}}
	}
	if ev == runbook.Uncertain {
		return []notice{{text: "pagerduty incident " + inc.PagerDutyID + " " + status + ": " + ev}}
	}
	return []notice{{text: "pagerduty incident " + inc.PagerDutyID + " " + status, delivered: true}}
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
func flagProvider(f *Factory, c *config.Flag) (flags.Provider, error) {
	token := ""
	if c.TokenEnv != "" {
		if token = f.IO.Getenv(c.TokenEnv); token == "" {
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
func flagStepDeadline(svc *config.Service) time.Duration {
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
func notifyDeadline(svc *config.Service) time.Duration {
	if svc != nil && svc.Notify != nil && svc.Notify.Deadline > 0 {
		return svc.Notify.Deadline
	}
	return runbook.BudgetDeclare
}
