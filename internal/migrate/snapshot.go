package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// SnapshotMode says what to dump before an undo.
type SnapshotMode string

// Snapshot modes.
const (
	SnapshotTables SnapshotMode = "tables" // the tables the undo touches (default)
	SnapshotFull   SnapshotMode = "full"   // the whole database
	SnapshotNone   SnapshotMode = "none"   // only when asked
)

// ParseSnapshotMode accepts tables, full or none.
func ParseSnapshotMode(s string) (SnapshotMode, error) {
	switch m := SnapshotMode(s); m {
	case SnapshotTables, SnapshotFull, SnapshotNone:
		return m, nil
	}
	return "", fmt.Errorf("invalid --snapshot %q: expected tables, full or none", s)
}

// Snapshot is a dump taken before an undo.
type Snapshot struct {
	Path    string   `json:"path"`
	SHA256  string   `json:"sha256"`
	Bytes   int64    `json:"bytes"`
	Tables  []string `json:"tables,omitempty"`
	Restore string   `json:"restoreCommand"`
	// Note says why a tables snapshot became a full one.
	Note string `json:"note,omitempty"`
}

// ErrSnapshot means the snapshot failed; the undo must not run.
var ErrSnapshot = errors.New("snapshot failed")

// ErrOpaque means the undo scripts hold a statement whose reach the
// grammar does not show (see StmtInfo.Opaque); the error names it.
var ErrOpaque = errors.New("cannot tell which tables the undo touches")

// TouchedTables lists the tables the plan's undo scripts name, found with
// the PostgreSQL grammar. It returns ErrOpaque, naming the statement, when
// one of them may change tables it does not name.
func (p *Plan) TouchedTables() ([]string, error) {
	seen := map[string]bool{}
	for _, s := range p.Steps {
		infos, err := AnalyzeScript(s.Undo.Path, s.Script)
		if err != nil {
			return nil, err
		}
		for _, in := range infos {
			if in.Opaque {
				return nil, fmt.Errorf("%w: %s:%d %s", ErrOpaque, in.File, in.Line, in.Kind)
			}
			for _, t := range in.Tables {
				if t != p.Table && t != "public."+p.Table {
					seen[t] = true
				}
			}
		}
	}
	var out []string
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}

// TakeSnapshot dumps (pg_dump, custom format) the tables the undo touches
// or the whole database into dir, writes NAME.sha256 beside it, and returns
// the exact restore command. Tables that do not exist (an undo's
// IF EXISTS) are skipped by pg_dump's pattern matching.
func TakeSnapshot(ctx context.Context, dsn string, p *Plan, mode SnapshotMode, dir string, now time.Time) (*Snapshot, error) {
	if mode == SnapshotNone {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	name := fmt.Sprintf("before-undo-%s-to-%s-%s.dump", p.From, p.To, now.UTC().Format("20060102T150405Z"))
	s := &Snapshot{Path: filepath.Join(dir, name)}
	args := []string{"--format=custom", "--no-owner", "--file", s.Path}
	if mode == SnapshotTables {
		tables, err := p.TouchedTables()
		switch {
		case err != nil:
			// When the grammar cannot tell what the undo touches, a
			// partial dump could miss what it destroys: dump everything.
			mode, s.Note = SnapshotFull, "full dump: "+err.Error()
		case len(tables) == 0:
			mode, s.Note = SnapshotFull, "full dump: the undo scripts name no tables"
		}
		s.Tables = tables
	}
	if mode == SnapshotTables {
		for _, t := range s.Tables {
			args = append(args, "--table", t)
		}
	}
	// The dump is production data: readable by its owner only. pg_dump
	// keeps the mode of a file that exists.
	if f, err := os.OpenFile(s.Path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	} else {
		f.Close()
	}
	conn, env, err := childConn(dsn, "")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if !pgDumpAvailable() {
		// No client tools (the container image): the data through the
		// driver, so the undo still has its snapshot.
		var tables []string
		if mode == SnapshotTables {
			tables = s.Tables
		}
		s.Path = strings.TrimSuffix(s.Path, ".dump") + ".csv.tar"
		_ = os.Remove(filepath.Join(dir, name))
		name = filepath.Base(s.Path)
		found, restore, err := nativeSnapshot(ctx, dsn, tables, s.Path)
		if err != nil {
			_ = os.Remove(s.Path)
			return nil, fmt.Errorf("%w: without pg_dump: %v", ErrSnapshot, err)
		}
		s.Tables, s.Restore = found, "sha256sum -c "+s.Path+".sha256 && "+restore
		s.Note = strings.TrimPrefix(s.Note+"; data only (pg_dump not installed): CSV per table, copied in one transaction", "; ")
		return finishSnapshot(s, name)
	}
	args = append(args, "--dbname", conn)
	cmd := exec.CommandContext(ctx, "pg_dump", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.Remove(s.Path)
		return nil, fmt.Errorf("%w: pg_dump: %v: %s", ErrSnapshot, err, Redact(string(out), dsn))
	}
	// The restore command shows the connection without credentials: the
	// operator supplies the password (PGPASSWORD or ~/.pgpass) as usual.
	s.Restore = fmt.Sprintf("sha256sum -c %s.sha256 && pg_restore --clean --if-exists --single-transaction --dbname %q %s",
		s.Path, conn, s.Path)
	return finishSnapshot(s, name)
}

// finishSnapshot checksums the snapshot and writes NAME.sha256 beside it.
func finishSnapshot(s *Snapshot, name string) (*Snapshot, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	defer f.Close()
	h := sha256.New()
	if s.Bytes, err = io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	s.SHA256 = hex.EncodeToString(h.Sum(nil))
	if err := os.WriteFile(s.Path+".sha256", []byte(s.SHA256+"  "+name+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	return s, nil
}
