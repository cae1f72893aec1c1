// Package gittest serves Git repositories over HTTP for tests through the
// real 'git http-backend' (Debian's git) behind net/http/cgi, as a forge
// would: anyone may clone, a push needs the token (any user name), a
// branch can be protected (a pre-receive hook declines pushes to it over
// HTTP), and a test makes its own commits and merges beside the code under
// test, through the same repository.
package gittest

import (
	"encoding/base64"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Server is a local Git server.
type Server struct {
	URL   string
	Root  string
	Token string
	// PushDelay makes each push wait before it is taken (a slow forge).
	PushDelay atomic.Int64
	// OnPush, when set, runs after a push is in the repository and before
	// the pusher hears so (a test kills the pusher there).
	OnPush  func()
	pushes  atomic.Int64
	fetches atomic.Int64
}

// Start serves an empty root until the test ends. It fails the test when
// git or its http-backend is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git is needed for the Git server (scripts/install-deps.sh installs it): %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend: %v", err)
	}
	s := &Server{Root: t.TempDir(), Token: "tok-" + strings.Repeat("s3cr3t", 3)}
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + s.Root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		push := strings.HasSuffix(r.URL.Path, "/git-receive-pack") || r.URL.Query().Get("service") == "git-receive-pack"
		if push {
			_, pass, ok := r.BasicAuth()
			if !ok || pass != s.Token {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			if strings.HasSuffix(r.URL.Path, "/git-receive-pack") {
				s.pushes.Add(1)
				time.Sleep(time.Duration(s.PushDelay.Load()))
			}
			// REMOTE_USER tells the hooks that the push came over HTTP;
			// the token goes no further.
			r.Header.Del("Authorization")
			hh := *h
			hh.Env = append(append([]string(nil), h.Env...), "REMOTE_USER=rollback")
			if s.OnPush != nil && strings.HasSuffix(r.URL.Path, "/git-receive-pack") {
				rec := httptest.NewRecorder()
				hh.ServeHTTP(rec, r)
				s.OnPush()
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				_, _ = w.Write(rec.Body.Bytes())
				return
			}
			hh.ServeHTTP(w, r)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			s.fetches.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Pushes is how many pushes reached the server (counted as they arrive,
// before PushDelay).
func (s *Server) Pushes() int64 { return s.pushes.Load() }

// Fetches is how many fetches (clones included) reached the server.
func (s *Server) Fetches() int64 { return s.fetches.Load() }

// AuthHeader is the header a client pushing with the token sends.
func (s *Server) AuthHeader() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("rollback:"+s.Token))
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=dev", "-c", "user.email=dev@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Create makes an empty bare repository and returns its URL.
func (s *Server) Create(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(s.Root, name+".git")
	git(t, s.Root, "init", "--bare", "-b", "main", dir)
	git(t, dir, "config", "http.receivepack", "true")
	return s.URL + "/" + name + ".git"
}

// Protect makes branch protected: pushes to it over HTTP are declined.
func (s *Server) Protect(t testing.TB, name, branch string) {
	t.Helper()
	hook := filepath.Join(s.Root, name+".git", "hooks", "pre-receive")
	script := `#!/bin/sh
[ -z "$REMOTE_USER" ] && exit 0
while read old new ref; do
  if [ "$ref" = "refs/heads/` + branch + `" ]; then
    echo "GL-HOOK-ERR: You are not allowed to push code to protected branches on this project." >&2
    exit 1
  fi
done
`
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// Commit writes files (a nil content removes the file) on branch as a
// developer would (not over HTTP) and returns the commit.
func (s *Server) Commit(t testing.TB, name, branch string, files map[string]*string, msg string) string {
	t.Helper()
	work := t.TempDir()
	bare := filepath.Join(s.Root, name+".git")
	git(t, work, "init", "-q", "-b", branch)
	git(t, work, "remote", "add", "origin", bare)
	if strings.Contains(git(t, work, "ls-remote", "origin", "refs/heads/"+branch), branch) {
		git(t, work, "fetch", "-q", "origin", branch)
		git(t, work, "reset", "-q", "--hard", "FETCH_HEAD")
	}
	for f, c := range files {
		p := filepath.Join(work, f)
		if c == nil {
			git(t, work, "rm", "-q", f)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(*c), 0o644); err != nil {
			t.Fatal(err)
		}
		git(t, work, "add", f)
	}
	git(t, work, "commit", "-q", "-m", msg)
	git(t, work, "push", "-q", "origin", "HEAD:refs/heads/"+branch)
	return git(t, work, "rev-parse", "HEAD")
}

// Merge merges branch from into into (a merge commit, as a forge's merge
// button makes) and returns the merge commit.
func (s *Server) Merge(t testing.TB, name, from, into string) string {
	t.Helper()
	work := t.TempDir()
	git(t, work, "clone", "-q", "-b", into, filepath.Join(s.Root, name+".git"), ".")
	git(t, work, "fetch", "-q", "origin", from)
	git(t, work, "merge", "-q", "--no-ff", "-m", "Merge branch '"+from+"'", "FETCH_HEAD")
	git(t, work, "push", "-q", "origin", "HEAD:refs/heads/"+into)
	return git(t, work, "rev-parse", "HEAD")
}

// Commit is one commit of a branch's history.
type Commit struct {
	Hash    string
	Message string
}

// Log is branch's history, newest first.
func (s *Server) Log(t testing.TB, name, branch string) []Commit {
	t.Helper()
	out := git(t, filepath.Join(s.Root, name+".git"), "log", "--format=%H%x00%B%x01", branch)
	var cs []Commit
	for _, rec := range strings.Split(out, "\x01") {
		h, m, ok := strings.Cut(strings.TrimSpace(rec), "\x00")
		if ok {
			cs = append(cs, Commit{Hash: h, Message: m})
		}
	}
	return cs
}

// Head is branch's newest commit ("" when there is no such branch).
func (s *Server) Head(t testing.TB, name, branch string) string {
	t.Helper()
	cmd := exec.Command("git", "rev-parse", "--verify", "-q", "refs/heads/"+branch)
	cmd.Dir = filepath.Join(s.Root, name+".git")
	out, _ := cmd.Output()
	return strings.TrimSpace(string(out))
}

// Read is a file's content on branch.
func (s *Server) Read(t testing.TB, name, branch, file string) string {
	t.Helper()
	cmd := exec.Command("git", "show", branch+":"+file)
	cmd.Dir = filepath.Join(s.Root, name+".git")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git show %s:%s: %v", branch, file, err)
	}
	return string(out)
}

// Str is a file content for Commit.
func Str(s string) *string { return &s }
