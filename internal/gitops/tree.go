package gitops

// The files under the reconciler's path: the edits that put the good images
// back, whether Git names the good version, and what a source revision has.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

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

// walkYAML calls fn with each regular YAML file under the path in the
// worktree. Symlinks are skipped: the file one points to is edited where
// it lives, if that is under the path.
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
