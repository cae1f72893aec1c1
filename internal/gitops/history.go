package gitops

// Reading a branch's history: an earlier run's revert (its trailer), the
// release commit, and whether it reverts cleanly.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

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
