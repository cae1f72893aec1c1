package gitops

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/rollback-dev/rollback/internal/image"
)

// Repo is where a reconciler reads a workload's manifests.
type Repo struct {
	URL    string `json:"url"`
	Branch string `json:"branch"`
	// Path is the directory the reconciler applies ("" or "." for the
	// repository's root).
	Path string `json:"path,omitempty"`
}

func (r Repo) String() string {
	return fmt.Sprintf("%s (branch %s, path %s)", Redact(r.URL), r.Branch, cmp.Or(strings.Trim(r.Path, "./"), "."))
}

// Auth is the credential for cloning and pushing over HTTP(S): a token as
// the password of a basic-auth user (what GitHub, GitLab and Gitea take).
// It is never written to output, the journal or a process's argv: Git runs
// in-process (go-git).
type Auth struct {
	Username string
	Password string
}

func (a Auth) method() transport.AuthMethod {
	if a.Password == "" {
		return nil
	}
	return &githttp.BasicAuth{Username: cmp.Or(a.Username, "git"), Password: a.Password}
}

// Redact is a repository URL without any user information it carries.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}

// TrailerKey marks a commit as an incident's revert; a run finds its own
// commit by it and never pushes twice.
const TrailerKey = "Rollback-Incident"

// Swap is one container's abandoned (Bad) and restored (Good) image.
type Swap struct {
	Bad, Good image.Ref
}

// RevertRequest is one incident's revert.
type RevertRequest struct {
	Repo     Repo
	Auth     Auth
	Incident string
	// Swaps are the abandoned and the restored image of each container
	// the release changed (the first one names the commit).
	Swaps []Swap
	// Body is the message's explanation: the decision and a link to the
	// incident.
	Body string
	// PushTo is the branch the commit is pushed to ("" for Repo.Branch;
	// rollback/<incident> for a pull request).
	PushTo string
	Author object.Signature
	// TempDir is where the clone goes (removed afterwards; "" for the
	// system's).
	TempDir string
	// MaxCommits bounds the history searched for the release commit and
	// an earlier run's revert (default 500).
	MaxCommits int
	// MaxBytes bounds what the clone may write (default
	// DefaultMaxCloneBytes).
	MaxBytes int64
}

// RevertResult is what a revert did.
type RevertResult struct {
	// Commit is the revert's commit (or the earlier run's, Already), ""
	// when Git had the good version already.
	Commit string `json:"commit,omitempty"`
	Branch string `json:"branch"`
	// Base is the tracked branch's head the commit was made on.
	Base string `json:"base,omitempty"`
	// Reverted is the release commit, when the revert is a 'git revert' of
	// it; empty when fields were edited.
	Reverted string `json:"reverted,omitempty"`
	Edits    []Edit `json:"edits,omitempty"`
	// Already: an earlier run of the incident pushed Commit.
	Already bool `json:"already,omitempty"`
	// Unchanged: Git already names the good version (someone reverted by
	// hand); nothing was pushed.
	Unchanged bool `json:"unchanged,omitempty"`
}

// Summary says what the revert did, in a line.
func (r *RevertResult) Summary() string {
	switch {
	case r.Unchanged:
		return fmt.Sprintf("Git already has the good version at %s (%s): nothing to push", ShortHash(r.Base), r.Branch)
	case r.Already:
		return fmt.Sprintf("revert %s already on %s (pushed by an earlier run)", ShortHash(r.Commit), r.Branch)
	case r.Reverted != "":
		return fmt.Sprintf("pushed %s to %s: git revert of release commit %s", ShortHash(r.Commit), r.Branch, ShortHash(r.Reverted))
	}
	var es []string
	for _, e := range r.Edits {
		es = append(es, e.String())
	}
	return fmt.Sprintf("pushed %s to %s: edited %s", ShortHash(r.Commit), r.Branch, strings.Join(es, "; "))
}

// ShortHash is a commit hash as people read it (12 characters).
func ShortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Sentinel errors of Revert.
var (
	// ErrRejected: the server refused the push for a reason other than a
	// race (a protected branch, a hook); a pull request is the way in.
	ErrRejected = errors.New("push rejected")
	// ErrAuth: the server refused the credentials.
	ErrAuth = errors.New("git authentication failed")
	// ErrNotFound: the repository does not say the bad version where
	// rollback can edit it, nor the good one.
	ErrNotFound = errors.New("the release is not found in Git")
)

// Revert writes the rollback to Git: on a fresh clone of the branch the
// reconciler reads, a 'git revert' of the release commit (the newest one
// that brought the bad image under the path) when no later commit touched
// what it changed; otherwise an edit of exactly the fields naming the bad
// image (EditImages). The commit carries the incident as a trailer. If the
// branch already has a commit with the incident's trailer, nothing is
// pushed again. A push that loses a race is retried on a fresh clone.
func Revert(ctx context.Context, req RevertRequest) (*RevertResult, error) {
	if req.MaxCommits <= 0 {
		req.MaxCommits = 500
	}
	if req.PushTo == "" {
		req.PushTo = req.Repo.Branch
	}
	if len(req.Swaps) == 0 {
		return nil, errors.New("revert: no image to put back")
	}
	if u, err := url.Parse(req.Repo.URL); err == nil && u.User != nil {
		// Credentials in the URL move to the auth, out of every message.
		if p, ok := u.User.Password(); ok && req.Auth.Password == "" {
			req.Auth = Auth{Username: u.User.Username(), Password: p}
		}
		req.Repo.URL = Redact(req.Repo.URL)
	}
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		res, err := revertOnce(ctx, req)
		if !errors.Is(err, git.ErrNonFastForwardUpdate) {
			return res, err
		}
		last = err // someone pushed in between: again, on their commit
	}
	return nil, fmt.Errorf("push to %s: lost the race three times: %w", req.PushTo, last)
}

func revertOnce(ctx context.Context, req RevertRequest) (*RevertResult, error) {
	dir, err := os.MkdirTemp(req.TempDir, "rollback-git-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	repo, err := cloneBounded(ctx, dir, false, req.MaxBytes, &git.CloneOptions{
		URL: req.Repo.URL, Auth: req.Auth.method(), ReferenceName: plumbing.NewBranchReferenceName(req.Repo.Branch), SingleBranch: true,
	})
	if err != nil {
		return nil, gitErr("clone "+req.Repo.String(), err)
	}
	head, err := repo.Head()
	if err != nil {
		return nil, err
	}
	res := &RevertResult{Branch: req.PushTo, Base: head.Hash().String()}
	// An earlier run's commit, on the branch or on the pull request's.
	for _, b := range dedupe(req.Repo.Branch, req.PushTo) {
		h, err := findTrailer(ctx, repo, req, b)
		if err != nil {
			return nil, err
		}
		if h != "" {
			res.Commit, res.Branch, res.Already = h, b, true
			return res, nil
		}
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	headCommit, err := repo.CommitObject(head.Hash())
	if err != nil {
		return nil, err
	}
	release, err := findRelease(ctx, repo, headCommit, req)
	if err != nil {
		return nil, err
	}
	subject := ""
	if release != nil {
		if ok, err := revertCleanly(release, headCommit, wt, req.Repo.Path); err != nil {
			return nil, err
		} else if ok {
			res.Reverted = release.Hash.String()
			subject = fmt.Sprintf("Revert %q", firstLine(release.Message))
		}
	}
	// Whatever the revert left naming the bad image (or all of it, when
	// there was no clean revert) is edited field by field.
	edits, err := editTree(wt, req)
	if err != nil {
		return nil, err
	}
	res.Edits = edits
	if res.Reverted != "" && len(edits) > 0 {
		// The revert did not give the good version back by itself: edit
		// from HEAD instead, so the commit is one idea.
		if err := wt.Reset(&git.ResetOptions{Commit: head.Hash(), Mode: git.HardReset}); err != nil {
			return nil, err
		}
		res.Reverted, subject = "", ""
		if res.Edits, err = editTree(wt, req); err != nil {
			return nil, err
		}
	}
	st, err := wt.Status()
	if err != nil {
		return nil, err
	}
	if st.IsClean() {
		// Nothing names the bad image: Git has the good one already, or
		// the release is written where rollback cannot see it (a base
		// outside the path, a HelmRelease's values, a substitution).
		// Only the first lets the reconciler resume.
		good, err := namesGood(wt, req)
		if err != nil {
			return nil, err
		}
		if !good {
			return nil, fmt.Errorf("%w: nothing under %s names %s or %s; the release is written where rollback does not edit (a base outside the path, the reconciler's own values or images, a substitution): revert it by hand, then 'rollback gitops resume %s'",
				ErrNotFound, req.Repo, req.Swaps[0].Bad.Name+":"+req.Swaps[0].Bad.Version(), req.Swaps[0].Good.Version(), req.Incident)
		}
		res.Unchanged, res.Edits = true, nil
		return res, nil
	}
	if subject == "" {
		subject = fmt.Sprintf("Roll back %s to %s", path.Base(req.Swaps[0].Bad.Name), req.Swaps[0].Good.Version())
	}
	msg := subject + "\n\n"
	if res.Reverted != "" {
		msg += "This reverts commit " + res.Reverted + ".\n\n"
	}
	msg += strings.TrimSpace(req.Body) + "\n\n" + TrailerKey + ": " + req.Incident + "\n"
	sig := req.Author
	if sig.Name == "" {
		sig = object.Signature{Name: "rollback", Email: "rollback@localhost"}
	}
	sig.When = time.Now()
	h, err := wt.Commit(msg, &git.CommitOptions{Author: &sig, Committer: &sig, All: true})
	if err != nil {
		return nil, err
	}
	res.Commit = h.String()
	err = repo.PushContext(ctx, &git.PushOptions{RemoteName: "origin", Auth: req.Auth.method(),
		RefSpecs: []gitconfig.RefSpec{gitconfig.RefSpec(fmt.Sprintf("%s:refs/heads/%s", head.Name(), req.PushTo))}})
	if err != nil {
		return nil, gitErr("push to "+req.PushTo+" of "+Redact(req.Repo.URL), err)
	}
	return res, nil
}

func dedupe(a, b string) []string {
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}

// gitErr says what failed and what to do; a refused push is ErrRejected,
// refused credentials ErrAuth.
func gitErr(what string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, git.ErrNonFastForwardUpdate) || strings.Contains(msg, "non-fast-forward") || strings.Contains(msg, "fetch first") ||
		strings.Contains(msg, "cannot lock ref") || strings.Contains(msg, "failed to update ref"):
		// Someone pushed between the clone and the push.
		return fmt.Errorf("%s: %w", what, git.ErrNonFastForwardUpdate)
	case errors.Is(err, transport.ErrAuthenticationRequired) || errors.Is(err, transport.ErrAuthorizationFailed):
		return fmt.Errorf("%s: %w (%v): give rollback a token that may push (gitops.tokenEnv in rollback.yaml, or the GitRepository's secretRef)", what, ErrAuth, err)
	case strings.Contains(msg, "declined") || strings.Contains(msg, "protected") || strings.Contains(msg, "rejected") || strings.Contains(msg, "not allowed"):
		return fmt.Errorf("%s: %w: %v", what, ErrRejected, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
