package flags

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/rollback-dev/rollback/internal/outbound"
)

// Unleash turns a feature off in one environment with the admin API:
// POST /api/admin/projects/{project}/features/{feature}/environments/{env}/off,
// and reads it back from GET /api/admin/projects/{project}/features/{feature}.
type Unleash struct {
	BaseURL     string // http://unleash:4242
	Token       string // an admin API token
	Project     string // "default" when empty
	Environment string
	Client      *http.Client
}

var _ Provider = (*Unleash)(nil)

func (u *Unleash) feature(flag string) string {
	p := u.Project
	if p == "" {
		p = "default"
	}
	return strings.TrimRight(u.BaseURL, "/") + "/api/admin/projects/" + url.PathEscape(p) + "/features/" + url.PathEscape(flag)
}

func (u *Unleash) client() *http.Client { return outbound.OrDefault(u.Client) }

// TurnOff implements Provider.
func (u *Unleash) TurnOff(ctx context.Context, flag, _ string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.feature(flag)+"/environments/"+url.PathEscape(u.Environment)+"/off", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", u.Token)
	return do(u.client(), req, "Unleash turn off "+flag, nil)
}

// IsOn implements Provider.
func (u *Unleash) IsOn(ctx context.Context, flag string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.feature(flag), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", u.Token)
	var out struct {
		Environments []struct {
			Name    string `json:"name"`
			Enabled bool   `json:"enabled"`
		} `json:"environments"`
	}
	if err := do(u.client(), req, "Unleash read "+flag, &out); err != nil {
		return false, err
	}
	for _, e := range out.Environments {
		if e.Name == u.Environment {
			return e.Enabled, nil
		}
	}
	return false, fmt.Errorf("Unleash feature %s has no environment %q", flag, u.Environment)
}
