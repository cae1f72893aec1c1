package flags

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/rollback-dev/rollback/internal/outbound"
)

// LaunchDarkly turns flags off through the REST API v2 with a semantic
// patch: PATCH /api/v2/flags/{projectKey}/{flagKey}, Content-Type
// application/json; domain-model=launchdarkly.semanticpatch, body
// {"environmentKey", "comment", "instructions": [{"kind": "turnFlagOff"}]}.
// The Authorization header is the bare access token. Project and
// environment are separate settings (the runbook's curl puts "production"
// where the project key belongs).
type LaunchDarkly struct {
	BaseURL     string // https://app.launchdarkly.com
	Token       string
	Project     string
	Environment string
	Client      *http.Client
}

var _ Provider = (*LaunchDarkly)(nil)

func (l *LaunchDarkly) url(flag string) string {
	base := strings.TrimRight(l.BaseURL, "/")
	if base == "" {
		base = "https://app.launchdarkly.com"
	}
	return base + "/api/v2/flags/" + url.PathEscape(l.Project) + "/" + url.PathEscape(flag)
}

func (l *LaunchDarkly) client() *http.Client { return outbound.OrDefault(l.Client) }

// TurnOff implements Provider.
func (l *LaunchDarkly) TurnOff(ctx context.Context, flag, comment string) error {
	body, err := json.Marshal(map[string]any{
		"environmentKey": l.Environment,
		"comment":        comment,
		"instructions":   []map[string]string{{"kind": "turnFlagOff"}},
	})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, l.url(flag), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", l.Token)
	req.Header.Set("Content-Type", "application/json; domain-model=launchdarkly.semanticpatch")
	return do(l.client(), req, "LaunchDarkly turn off "+flag, nil)
}

// IsOn implements Provider: GET the flag for the environment.
func (l *LaunchDarkly) IsOn(ctx context.Context, flag string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.url(flag)+"?env="+url.QueryEscape(l.Environment), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", l.Token)
	var out struct {
		Environments map[string]struct {
			On bool `json:"on"`
		} `json:"environments"`
	}
	if err := do(l.client(), req, "LaunchDarkly read "+flag, &out); err != nil {
		return false, err
	}
	env, ok := out.Environments[l.Environment]
	if !ok {
		return false, fmt.Errorf("LaunchDarkly flag %s has no environment %q", flag, l.Environment)
	}
	return env.On, nil
}

// do sends req and decodes a JSON answer into out (when not nil). Error
// bodies are quoted, never the request's headers.
func do(c *http.Client, req *http.Request, what string, out any) error {
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, outbound.Scrub(err))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, msg)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}
