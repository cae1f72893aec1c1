package gitops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// DefaultMaxCloneBytes bounds what one clone may write to disk.
const DefaultMaxCloneBytes = 1 << 30

// ErrTooLarge: the clone wrote more than its bound.
var ErrTooLarge = errors.New("the clone passed its size bound")

// boundedFS is a file system that fails writes once the bytes written
// through it (and every file system it roots) pass max: a huge or hostile
// repository fills no disk during an incident.
type boundedFS struct {
	billy.Filesystem
	written *atomic.Int64
	max     int64
}

func (b boundedFS) wrap(f billy.File, err error) (billy.File, error) {
	if err != nil {
		return nil, err
	}
	return boundedFile{File: f, fs: b}, nil
}

func (b boundedFS) Create(name string) (billy.File, error) { return b.wrap(b.Filesystem.Create(name)) }

func (b boundedFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	return b.wrap(b.Filesystem.OpenFile(name, flag, perm))
}

func (b boundedFS) TempFile(dir, prefix string) (billy.File, error) {
	return b.wrap(b.Filesystem.TempFile(dir, prefix))
}

func (b boundedFS) Chroot(path string) (billy.Filesystem, error) {
	fs, err := b.Filesystem.Chroot(path)
	if err != nil {
		return nil, err
	}
	return boundedFS{Filesystem: fs, written: b.written, max: b.max}, nil
}

type boundedFile struct {
	billy.File
	fs boundedFS
}

func (f boundedFile) Write(p []byte) (int, error) {
	if f.fs.written.Add(int64(len(p))) > f.fs.max {
		return 0, fmt.Errorf("%w (%d bytes)", ErrTooLarge, f.fs.max)
	}
	return f.File.Write(p)
}

// cloneBounded clones into dir, writing at most max bytes (0: the
// default); bare leaves no worktree.
func cloneBounded(ctx context.Context, dir string, bare bool, max int64, o *git.CloneOptions) (*git.Repository, error) {
	if max <= 0 {
		max = DefaultMaxCloneBytes
	}
	root := boundedFS{Filesystem: osfs.New(dir), written: new(atomic.Int64), max: max}
	if bare {
		return git.CloneContext(ctx, filesystem.NewStorage(root, cache.NewObjectLRUDefault()), nil, o)
	}
	dot, err := root.Chroot(".git")
	if err != nil {
		return nil, err
	}
	return git.CloneContext(ctx, filesystem.NewStorage(dot, cache.NewObjectLRUDefault()), root, o)
}
