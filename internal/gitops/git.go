package gitops

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
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

// editAll applies every swap to a file's content.
func editAll(name string, content []byte, swaps []Swap) ([]byte, []Edit, error) {
	var all []Edit
	for _, sw := range swaps {
		out, es, err := EditImages(name, content, sw.Bad, sw.Good)
		if err != nil {
			return nil, nil, err
		}
		content, all = out, append(all, es...)
	}
	return content, all, nil
}

// mentions says whether content spells any swap's bad version next to its
// repository's name: a file rollback must be able to read.
func mentions(content []byte, swaps []Swap) bool {
	for _, sw := range swaps {
		if bytes.Contains(content, []byte(path.Base(sw.Bad.Name))) && bytes.Contains(content, []byte(sw.Bad.Version())) {
			return true
		}
	}
	return false
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

// findTrailer is the newest commit on branch carrying the incident's
// trailer ("" for none; a branch that does not exist has none).
func findTrailer(ctx context.Context, repo *git.Repository, req RevertRequest, branch string) (string, error) {
	var from plumbing.Hash
	if branch == req.Repo.Branch {
		h, err := repo.Head()
		if err != nil {
			return "", err
		}
		from = h.Hash()
	} else {
		remote, err := repo.Remote("origin")
		if err != nil {
			return "", err
		}
		refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: req.Auth.method()})
		if err != nil {
			return "", gitErr("list "+Redact(req.Repo.URL), err)
		}
		found := false
		for _, r := range refs {
			if r.Name() == plumbing.NewBranchReferenceName(branch) {
				from, found = r.Hash(), true
			}
		}
		if !found {
			return "", nil
		}
		spec := gitconfig.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/remotes/origin/%s", branch, branch))
		if err := repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: req.Auth.method(), RefSpecs: []gitconfig.RefSpec{spec}}); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return "", gitErr("fetch "+branch, err)
		}
	}
	it, err := repo.Log(&git.LogOptions{From: from})
	if err != nil {
		return "", err
	}
	defer it.Close()
	want := "\n" + TrailerKey + ": " + req.Incident + "\n"
	found := ""
	n := 0
	err = it.ForEach(func(c *object.Commit) error {
		if n++; n > req.MaxCommits || ctx.Err() != nil {
			return io.EOF
		}
		if strings.Contains("\n"+c.Message+"\n", want) {
			found = c.Hash.String()
			return io.EOF
		}
		return nil
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return found, ctx.Err()
}

// under says whether a repository path is inside the reconciler's path.
func under(p, dir string) bool {
	dir = strings.Trim(path.Clean("/"+dir), "/")
	return dir == "" || p == dir || strings.HasPrefix(p, dir+"/")
}

func isYAML(p string) bool {
	return strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")
}

// namesBad says whether a file's content names the bad image.
func namesBad(name, content string, req RevertRequest) bool {
	if !isYAML(name) {
		return false
	}
	_, edits, err := editAll(name, []byte(content), req.Swaps[:1])
	return err == nil && len(edits) > 0
}

// findRelease is the newest first-parent commit that brought the bad image
// under the path: a file there names it and did not in the parent.
func findRelease(ctx context.Context, repo *git.Repository, head *object.Commit, req RevertRequest) (*object.Commit, error) {
	c := head
	for n := 0; n < req.MaxCommits && c.NumParents() > 0; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p, err := c.Parent(0)
		if err != nil {
			return nil, err
		}
		changes, err := diff(p, c)
		if err != nil {
			return nil, err
		}
		for _, ch := range changes {
			name := ch.To.Name
			if name == "" || !under(name, req.Repo.Path) {
				continue
			}
			now, _ := fileAt(c, name)
			before, _ := fileAt(p, name)
			if namesBad(name, now, req) && !namesBad(name, before, req) {
				return c, nil
			}
		}
		c = p
	}
	return nil, nil
}

func diff(p, c *object.Commit) (object.Changes, error) {
	pt, err := p.Tree()
	if err != nil {
		return nil, err
	}
	ct, err := c.Tree()
	if err != nil {
		return nil, err
	}
	return object.DiffTree(pt, ct)
}

// fileAt is a regular file's content in a commit ("" and false when absent,
// or a symlink or submodule).
func fileAt(c *object.Commit, name string) (string, bool) {
	f, err := c.File(name)
	if err != nil || !f.Mode.IsFile() || f.Mode == filemode.Symlink {
		return "", false
	}
	s, err := f.Contents()
	return s, err == nil
}

// revertCleanly applies the inverse of release to the worktree when HEAD
// still has every file as release left it (what 'git revert' does without a
// conflict). It reports false, changing nothing, when a later commit
// touched one of them.
func revertCleanly(release, head *object.Commit, wt *git.Worktree, path string) (bool, error) {
	if release.NumParents() != 1 {
		return false, nil // a merge: edit instead of choosing a mainline
	}
	p, err := release.Parent(0)
	if err != nil {
		return false, err
	}
	changes, err := diff(p, release)
	if err != nil {
		return false, err
	}
	type write struct {
		name    string
		content string
		remove  bool
	}
	var writes []write
	for _, ch := range changes {
		for _, name := range dedupe(ch.From.Name, ch.To.Name) {
			if name == "" {
				continue
			}
			if !under(name, path) {
				// The release commit changed more than this service
				// (a monorepo's release of several): revert only ours.
				return false, nil
			}
			atRelease, inRelease := fileAt(release, name)
			atHead, inHead := fileAt(head, name)
			if inRelease != inHead || atRelease != atHead {
				return false, nil // changed since: not a clean revert
			}
			before, inParent := fileAt(p, name)
			if !inParent && inRelease {
				if _, err := release.File(name); err == nil {
					writes = append(writes, write{name: name, remove: true})
				}
				continue
			}
			if !inParent {
				return false, nil // a symlink or submodule: edit instead
			}
			writes = append(writes, write{name: name, content: before})
		}
	}
	fs := wt.Filesystem
	for _, w := range writes {
		if w.remove {
			if _, err := wt.Remove(w.name); err != nil {
				return false, err
			}
			continue
		}
		f, err := fs.OpenFile(w.name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return false, err
		}
		if _, err := io.WriteString(f, w.content); err != nil {
			f.Close()
			return false, err
		}
		if err := f.Close(); err != nil {
			return false, err
		}
		if _, err := wt.Add(w.name); err != nil {
			return false, err
		}
	}
	return true, nil
}

// walkYAML calls fn with each regular YAML file under the path in the
// worktree (symlinks are followed where they point, if that is under the
// path too).
func walkYAML(wt *git.Worktree, dir string, fn func(name string, content []byte, mode os.FileMode) error) error {
	fs := wt.Filesystem
	var visit func(d string) error
	visit = func(d string) error {
		entries, err := fs.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range entries {
			name := path.Join(d, e.Name())
			if d == "" || d == "." {
				name = e.Name()
			}
			switch {
			case name == ".git" || e.Mode()&os.ModeSymlink != 0:
				continue
			case e.IsDir():
				if under(name, dir) || under(dir, name) {
					if err := visit(name); err != nil {
						return err
					}
				}
			case isYAML(name) && under(name, dir):
				f, err := fs.Open(name)
				if err != nil {
					return err
				}
				b, err := io.ReadAll(f)
				f.Close()
				if err != nil {
					return err
				}
				if err := fn(name, b, e.Mode().Perm()); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return visit("")
}

// editTree edits every regular YAML file under the path that names a bad
// image. A file that names one in a way rollback cannot edit is an error,
// never skipped: a reconciler resumed on it would re-apply the release.
func editTree(wt *git.Worktree, req RevertRequest) ([]Edit, error) {
	var edits []Edit
	err := walkYAML(wt, req.Repo.Path, func(name string, b []byte, mode os.FileMode) error {
		out, es, err := editAll(name, b, req.Swaps)
		if err != nil {
			if mentions(b, req.Swaps) {
				return fmt.Errorf("%s names the release in a way rollback cannot edit: %w", name, err)
			}
			return nil // not YAML the reconciler could apply either
		}
		if len(es) == 0 {
			return nil
		}
		w, err := wt.Filesystem.OpenFile(name, os.O_TRUNC|os.O_WRONLY, mode)
		if err != nil {
			return err
		}
		if _, err := w.Write(out); err != nil {
			w.Close()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		if _, err := wt.Add(name); err != nil {
			return err
		}
		edits = append(edits, es...)
		return nil
	})
	return edits, err
}

// namesGood says whether a file under the path names the first swap's good
// image (Git has the good version).
func namesGood(wt *git.Worktree, req RevertRequest) (bool, error) {
	found := false
	back := []Swap{{Bad: req.Swaps[0].Good, Good: req.Swaps[0].Bad}}
	err := walkYAML(wt, req.Repo.Path, func(name string, b []byte, _ os.FileMode) error {
		if _, es, err := editAll(name, b, back); err == nil && len(es) > 0 {
			found = true
		}
		return nil
	})
	return found, err
}

// SourceCheck is what a reconciler's source revision has.
type SourceCheck struct {
	// Contains: the revert commit is in the revision's history.
	Contains bool
	// StillBad lists files under the path that name a bad image at that
	// revision (a later commit released it again).
	StillBad []string
}

// CheckSource says whether revision has commit in its history and, if so,
// whether its tree under the path names a bad image again. A revision
// equal to commit is checked for content too; commit "" (a revert made by
// hand, commit unknown) checks the content only.
func CheckSource(ctx context.Context, repo Repo, auth Auth, revision, commit string, swaps []Swap, tempDir string) (SourceCheck, error) {
	var sc SourceCheck
	if revision == "" {
		return sc, nil
	}
	dir, err := os.MkdirTemp(tempDir, "rollback-git-")
	if err != nil {
		return sc, err
	}
	defer os.RemoveAll(dir)
	r, err := cloneBounded(ctx, dir, true, 0, &git.CloneOptions{URL: repo.URL, Auth: auth.method(),
		ReferenceName: plumbing.NewBranchReferenceName(repo.Branch), SingleBranch: true, NoCheckout: true})
	if err != nil {
		return sc, gitErr("clone "+repo.String(), err)
	}
	rc, err := r.CommitObject(plumbing.NewHash(revision))
	if err != nil {
		return sc, nil // not on the branch (yet)
	}
	if commit != "" && revision != commit {
		c, err := r.CommitObject(plumbing.NewHash(commit))
		if err != nil {
			return sc, nil
		}
		if sc.Contains, err = c.IsAncestor(rc); err != nil || !sc.Contains {
			return sc, err
		}
	}
	sc.Contains = true
	files, err := rc.Files()
	if err != nil {
		return sc, err
	}
	err = files.ForEach(func(f *object.File) error {
		if !under(f.Name, repo.Path) || !isYAML(f.Name) || !f.Mode.IsFile() {
			return nil
		}
		content, err := f.Contents()
		if err != nil {
			return err
		}
		if _, es, err := editAll(f.Name, []byte(content), swaps); err == nil && len(es) > 0 {
			sc.StillBad = append(sc.StillBad, f.Name)
		}
		return nil
	})
	return sc, err
}
