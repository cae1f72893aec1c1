package gitops

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v84/github"
	gitlab "gitlab.com/gitlab-org/api/client-go/v2"
)

// PullRequest is a revert proposed through a forge, for a branch a push
// may not reach.
type PullRequest struct {
	Forge  string `json:"forge"` // github, gitlab
	Number int64  `json:"number"`
	URL    string `json:"url"`
	Head   string `json:"head"`
	Base   string `json:"base"`
}

// PRState is a pull request's state now.
type PRState struct {
	Merged bool
	Closed bool // closed without a merge
	// MergeCommit is the commit the merge made on the base branch.
	MergeCommit string
}

// Forge opens and reads pull (merge) requests.
type Forge interface {
	// Open opens a pull request from head into base, or returns the one
	// already open (or merged) for head: a second run opens none.
	Open(ctx context.Context, head, base, title, body string) (PullRequest, error)
	State(ctx context.Context, pr PullRequest) (PRState, error)
}

// ForgeConfig says which forge and project, and the token.
type ForgeConfig struct {
	Type string // github, gitlab
	// URL is the API's base: "" for github.com's or gitlab.com's; a GitHub
	// Enterprise or self-managed GitLab URL otherwise.
	URL string
	// Project is OWNER/REPO on GitHub, the project's path (GROUP/NAME) or
	// ID on GitLab.
	Project string
	Token   string
	// Timeout bounds each call (default 10s).
	Timeout time.Duration
}

// NewForge is the forge's client.
func NewForge(c ForgeConfig) (Forge, error) {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	hc := &http.Client{Timeout: c.Timeout}
	switch c.Type {
	case "github":
		owner, repo, ok := strings.Cut(c.Project, "/")
		if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
			return nil, fmt.Errorf("gitops.forge.project %q: want OWNER/REPO for GitHub", c.Project)
		}
		cl := github.NewClient(hc)
		if c.Token != "" {
			cl = cl.WithAuthToken(c.Token)
		}
		if c.URL != "" {
			var err error
			if cl, err = cl.WithEnterpriseURLs(c.URL, c.URL); err != nil {
				return nil, fmt.Errorf("gitops.forge.url: %w", err)
			}
		}
		return &githubForge{c: cl, owner: owner, repo: repo}, nil
	case "gitlab":
		if c.Project == "" {
			return nil, errors.New("gitops.forge.project is empty: want the GitLab project's path or ID")
		}
		opts := []gitlab.ClientOptionFunc{gitlab.WithHTTPClient(hc), gitlab.WithCustomRetryMax(1)}
		if c.URL != "" {
			opts = append(opts, gitlab.WithBaseURL(c.URL))
		}
		cl, err := gitlab.NewClient(c.Token, opts...)
		if err != nil {
			return nil, fmt.Errorf("gitlab client: %w", err)
		}
		return &gitlabForge{c: cl, project: c.Project}, nil
	}
	return nil, fmt.Errorf("gitops.forge.type %q: want github or gitlab", c.Type)
}

type githubForge struct {
	c           *github.Client
	owner, repo string
}

var _ Forge = (*githubForge)(nil)

func (g *githubForge) Open(ctx context.Context, head, base, title, body string) (PullRequest, error) {
	prs, _, err := g.c.PullRequests.List(ctx, g.owner, g.repo, &github.PullRequestListOptions{State: "all", Head: g.owner + ":" + head, Base: base})
	if err != nil {
		return PullRequest{}, fmt.Errorf("github: list pull requests of %s/%s: %w", g.owner, g.repo, err)
	}
	for _, p := range prs {
		if p.GetHead().GetRef() == head && (p.GetState() != "closed" || p.GetMerged() || p.MergedAt != nil) {
			return g.pr(p, head, base), nil
		}
	}
	p, _, err := g.c.PullRequests.Create(ctx, g.owner, g.repo, &github.NewPullRequest{Title: &title, Head: &head, Base: &base, Body: &body})
	if err != nil {
		return PullRequest{}, fmt.Errorf("github: open a pull request on %s/%s: %w", g.owner, g.repo, err)
	}
	return g.pr(p, head, base), nil
}

func (g *githubForge) pr(p *github.PullRequest, head, base string) PullRequest {
	return PullRequest{Forge: "github", Number: int64(p.GetNumber()), URL: p.GetHTMLURL(), Head: head, Base: base}
}

func (g *githubForge) State(ctx context.Context, pr PullRequest) (PRState, error) {
	p, _, err := g.c.PullRequests.Get(ctx, g.owner, g.repo, int(pr.Number))
	if err != nil {
		return PRState{}, fmt.Errorf("github: read pull request %s: %w", pr.URL, err)
	}
	return PRState{Merged: p.GetMerged(), Closed: p.GetState() == "closed" && !p.GetMerged(), MergeCommit: p.GetMergeCommitSHA()}, nil
}

type gitlabForge struct {
	c       *gitlab.Client
	project string
}

var _ Forge = (*gitlabForge)(nil)

func (g *gitlabForge) Open(ctx context.Context, head, base, title, body string) (PullRequest, error) {
	mrs, _, err := g.c.MergeRequests.ListProjectMergeRequests(g.project, &gitlab.ListProjectMergeRequestsOptions{SourceBranch: &head, TargetBranch: &base}, gitlab.WithContext(ctx))
	if err != nil {
		return PullRequest{}, fmt.Errorf("gitlab: list merge requests of %s: %w", g.project, err)
	}
	for _, m := range mrs {
		if m.State == "opened" || m.State == "merged" {
			return PullRequest{Forge: "gitlab", Number: m.IID, URL: m.WebURL, Head: head, Base: base}, nil
		}
	}
	m, _, err := g.c.MergeRequests.CreateMergeRequest(g.project, &gitlab.CreateMergeRequestOptions{Title: &title, Description: &body, SourceBranch: &head, TargetBranch: &base}, gitlab.WithContext(ctx))
	if err != nil {
		return PullRequest{}, fmt.Errorf("gitlab: open a merge request on %s: %w", g.project, err)
	}
	return PullRequest{Forge: "gitlab", Number: m.IID, URL: m.WebURL, Head: head, Base: base}, nil
}

func (g *gitlabForge) State(ctx context.Context, pr PullRequest) (PRState, error) {
	m, _, err := g.c.MergeRequests.GetMergeRequest(g.project, pr.Number, nil, gitlab.WithContext(ctx))
	if err != nil {
		return PRState{}, fmt.Errorf("gitlab: read merge request %s: %w", pr.URL, err)
	}
	// A fast-forward merge makes no merge commit; a squash makes its own.
	commit := m.MergeCommitSHA
	if commit == "" {
		commit = m.SquashCommitSHA
	}
	if commit == "" {
		commit = m.SHA
	}
	return PRState{Merged: m.State == "merged", Closed: m.State == "closed", MergeCommit: commit}, nil
}
