package gittest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Forge is a stand-in for GitHub's and GitLab's pull (merge) request APIs
// over one Server's repository, checking requests against the documented
// shapes: GitHub's POST /repos/{owner}/{repo}/pulls (title, head, base;
// "Authorization: Bearer"), GET .../pulls?head=OWNER:BRANCH&base=&state=,
// GET .../pulls/{number}; GitLab's POST /projects/{id}/merge_requests
// (title, source_branch, target_branch; PRIVATE-TOKEN), GET with
// source_branch/target_branch, GET .../merge_requests/{iid}. It refuses a
// head branch the repository does not have (GitHub's 422), and can fail a
// create after recording it, as a proxy timing out would.
type Forge struct {
	URL   string
	Token string
	git   *Server
	repo  string
	mu    sync.Mutex
	prs   []*PR
	// FailCreateAfterRecord makes the next create record the pull request
	// and answer 502.
	FailCreateAfterRecord bool
	// Bad lists requests that did not match the documented shapes.
	Bad []string
}

// PR is one pull request the stand-in holds.
type PR struct {
	Number      int64
	Title, Body string
	Head, Base  string
	Merged      bool
	MergeCommit string
}

// StartForge serves the stand-in for repository name of git.
func StartForge(t testing.TB, git *Server, name string) *Forge {
	f := &Forge{Token: "forge-" + strings.Repeat("t0k", 4), git: git, repo: name}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.serve(t, w, r) }))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// PRs is what was opened.
func (f *Forge) PRs() []PR {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]PR, len(f.prs))
	for i, p := range f.prs {
		out[i] = *p
	}
	return out
}

// MergePR merges the pull request's branch in the repository, as the
// forge's merge button does.
func (f *Forge) MergePR(t testing.TB, number int64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.prs {
		if p.Number == number {
			p.MergeCommit = f.git.Merge(t, f.repo, p.Head, p.Base)
			p.Merged = true
			return p.MergeCommit
		}
	}
	t.Fatalf("no pull request %d", number)
	return ""
}

func (f *Forge) bad(w http.ResponseWriter, code int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	f.Bad = append(f.Bad, msg)
	http.Error(w, `{"message":`+strconv.Quote(msg)+`}`, code)
}

func (f *Forge) serve(t testing.TB, w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	p := r.URL.EscapedPath()
	switch {
	case strings.HasPrefix(p, "/api/v3/repos/"):
		if r.Header.Get("Authorization") != "Bearer "+f.Token {
			f.bad(w, http.StatusUnauthorized, "github: Authorization: Bearer TOKEN expected")
			return
		}
		f.github(t, w, r, strings.TrimPrefix(p, "/api/v3/repos/"))
	case strings.HasPrefix(p, "/api/v4/projects/"):
		if r.Header.Get("PRIVATE-TOKEN") != f.Token {
			f.bad(w, http.StatusUnauthorized, "gitlab: PRIVATE-TOKEN expected")
			return
		}
		f.gitlab(t, w, r, strings.TrimPrefix(p, "/api/v4/projects/"))
	default:
		f.bad(w, http.StatusNotFound, "no such API: %s %s", r.Method, p)
	}
}

func (f *Forge) find(head, base string) []*PR {
	var out []*PR
	for _, p := range f.prs {
		if (head == "" || p.Head == head) && (base == "" || p.Base == base) {
			out = append(out, p)
		}
	}
	return out
}

func (f *Forge) create(t testing.TB, w http.ResponseWriter, title, body, head, base string) (*PR, bool) {
	if title == "" || head == "" || base == "" {
		f.bad(w, http.StatusUnprocessableEntity, "title, head and base are required")
		return nil, false
	}
	if f.git.Head(t, f.repo, head) == "" {
		f.bad(w, http.StatusUnprocessableEntity, "head branch %q does not exist", head)
		return nil, false
	}
	for _, p := range f.find(head, base) {
		if !p.Merged {
			http.Error(w, `{"message":"A pull request already exists for `+head+`."}`, http.StatusUnprocessableEntity)
			return nil, false
		}
	}
	pr := &PR{Number: int64(len(f.prs) + 1), Title: title, Body: body, Head: head, Base: base}
	f.prs = append(f.prs, pr)
	if f.FailCreateAfterRecord {
		f.FailCreateAfterRecord = false
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return nil, false
	}
	return pr, true
}

func (f *Forge) github(t testing.TB, w http.ResponseWriter, r *http.Request, rest string) {
	parts := strings.Split(rest, "/")
	if len(parts) < 3 || parts[2] != "pulls" {
		f.bad(w, http.StatusNotFound, "github: no such API %s", rest)
		return
	}
	owner := parts[0]
	view := func(p *PR) map[string]any {
		state := "open"
		v := map[string]any{"number": p.Number, "title": p.Title, "html_url": fmt.Sprintf("%s/%s/%s/pull/%d", f.URL, owner, parts[1], p.Number),
			"head": map[string]any{"ref": p.Head}, "base": map[string]any{"ref": p.Base}}
		if p.Merged {
			state = "closed"
			v["merged_at"] = "2026-12-03T00:00:00Z"
			v["merge_commit_sha"] = p.MergeCommit
		}
		v["state"] = state
		return v
	}
	switch {
	case len(parts) == 3 && r.Method == http.MethodGet:
		q := r.URL.Query()
		head := q.Get("head")
		if head != "" {
			o, b, ok := strings.Cut(head, ":")
			if !ok || o != owner {
				f.bad(w, http.StatusUnprocessableEntity, "github: head filter must be OWNER:BRANCH, got %q", head)
				return
			}
			head = b
		}
		var out []map[string]any
		for _, p := range f.find(head, q.Get("base")) {
			if q.Get("state") == "all" || q.Get("state") == "closed" && p.Merged || q.Get("state") != "closed" && !p.Merged {
				out = append(out, view(p))
			}
		}
		json.NewEncoder(w).Encode(out)
	case len(parts) == 3 && r.Method == http.MethodPost:
		var in struct{ Title, Head, Base, Body string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			f.bad(w, http.StatusBadRequest, "github: body is not JSON: %v", err)
			return
		}
		if pr, ok := f.create(t, w, in.Title, in.Body, in.Head, in.Base); ok {
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(view(pr))
		}
	case len(parts) == 4 && r.Method == http.MethodGet:
		n, _ := strconv.ParseInt(parts[3], 10, 64)
		for _, p := range f.prs {
			if p.Number == n {
				v := view(p)
				v["merged"] = p.Merged
				json.NewEncoder(w).Encode(v)
				return
			}
		}
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	default:
		f.bad(w, http.StatusMethodNotAllowed, "github: %s %s", r.Method, rest)
	}
}

func (f *Forge) gitlab(t testing.TB, w http.ResponseWriter, r *http.Request, rest string) {
	id, sub, _ := strings.Cut(rest, "/")
	project, err := url.PathUnescape(id)
	if err != nil || !strings.HasPrefix(sub, "merge_requests") {
		f.bad(w, http.StatusNotFound, "gitlab: no such API %s", rest)
		return
	}
	view := func(p *PR) map[string]any {
		v := map[string]any{"iid": p.Number, "title": p.Title, "source_branch": p.Head, "target_branch": p.Base, "state": "opened",
			"web_url": fmt.Sprintf("%s/%s/-/merge_requests/%d", f.URL, project, p.Number)}
		if p.Merged {
			v["state"], v["merge_commit_sha"] = "merged", p.MergeCommit
		}
		return v
	}
	parts := strings.Split(sub, "/")
	switch {
	case len(parts) == 1 && r.Method == http.MethodGet:
		q := r.URL.Query()
		var out []map[string]any
		for _, p := range f.find(q.Get("source_branch"), q.Get("target_branch")) {
			out = append(out, view(p))
		}
		json.NewEncoder(w).Encode(out)
	case len(parts) == 1 && r.Method == http.MethodPost:
		var in struct {
			Title        string `json:"title"`
			Description  string `json:"description"`
			SourceBranch string `json:"source_branch"`
			TargetBranch string `json:"target_branch"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			f.bad(w, http.StatusBadRequest, "gitlab: body is not JSON: %v", err)
			return
		}
		if pr, ok := f.create(t, w, in.Title, in.Description, in.SourceBranch, in.TargetBranch); ok {
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(view(pr))
		}
	case len(parts) == 2 && r.Method == http.MethodGet:
		n, _ := strconv.ParseInt(parts[1], 10, 64)
		for _, p := range f.prs {
			if p.Number == n {
				json.NewEncoder(w).Encode(view(p))
				return
			}
		}
		http.Error(w, `{"message":"404 Not found"}`, http.StatusNotFound)
	default:
		f.bad(w, http.StatusMethodNotAllowed, "gitlab: %s %s", r.Method, rest)
	}
}
