// Package migrate plans and runs database down migrations on PostgreSQL:
// it reads migration directories (Flyway and golang-migrate layouts) and
// history tables, plans which applied migrations to undo, snapshots what
// the undo touches, runs the undo in one transaction under lock_timeout
// with golang-migrate's advisory lock, fixes the history in the same
// transaction, and verifies the schema against a recorded fingerprint.
package migrate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Format of a migration directory.
type Format string

// Supported formats.
const (
	Flyway        Format = "flyway"
	GolangMigrate Format = "golang-migrate"
)

// Kind of a migration file.
type Kind string

// File kinds.
const (
	KindVersioned  Kind = "versioned"   // Flyway V<ver>__<desc>.sql, golang-migrate <n>_<name>.up.sql
	KindUndo       Kind = "undo"        // Flyway Teams U<ver>__<desc>.sql, golang-migrate .down.sql
	KindManualUndo Kind = "manual-undo" // the runbook's rollback/V<ver>__Undo__<desc>.sql
	KindRepeatable Kind = "repeatable"  // Flyway R__<desc>.sql
)

// Version is a migration version: dot- or underscore-separated numbers.
type Version struct {
	parts []uint64
}

// ParseVersion accepts "1.2.0", "1_2_0" or "20240101120000".
func ParseVersion(s string) (Version, error) {
	if s == "" {
		return Version{}, errors.New("empty version")
	}
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '_' })
	if len(fields) != strings.Count(s, ".")+strings.Count(s, "_")+1 {
		return Version{}, fmt.Errorf("invalid version %q: expected numbers separated by single '.' or '_'", s)
	}
	v := Version{parts: make([]uint64, len(fields))}
	for i, f := range fields {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("invalid version %q: %q is not a number", s, f)
		}
		v.parts[i] = n
	}
	return v, nil
}

// MustVersion is ParseVersion for constants in tests and examples.
func MustVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String is Flyway's normalized form, 1.2.0.
func (v Version) String() string {
	s := make([]string, len(v.parts))
	for i, p := range v.parts {
		s[i] = strconv.FormatUint(p, 10)
	}
	return strings.Join(s, ".")
}

// key is the version without trailing zero parts: 1.0 and 1 are one version.
func (v Version) key() string {
	n := len(v.parts)
	for n > 1 && v.parts[n-1] == 0 {
		n--
	}
	return Version{parts: v.parts[:n]}.String()
}

// IsZero reports whether v is the empty version.
func (v Version) IsZero() bool { return len(v.parts) == 0 }

// Compare orders versions numerically part by part; 1.2 == 1.2.0.
func (v Version) Compare(o Version) int {
	n := max(len(v.parts), len(o.parts))
	for i := 0; i < n; i++ {
		var a, b uint64
		if i < len(v.parts) {
			a = v.parts[i]
		}
		if i < len(o.parts) {
			b = o.parts[i]
		}
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
	}
	return 0
}

// File is one migration script.
type File struct {
	Path        string  `json:"path"`
	Kind        Kind    `json:"kind"`
	Version     Version `json:"-"`
	Description string  `json:"description"`
}

// Name is the file's base name.
func (f *File) Name() string { return filepath.Base(f.Path) }

var (
	flywayRe     = regexp.MustCompile(`^([VU])([0-9][0-9._]*)__(.+)\.sql$`)
	repeatableRe = regexp.MustCompile(`^R__(.+)\.sql$`)
	manualUndoRe = regexp.MustCompile(`^V([0-9][0-9._]*)__Undo__(.+)\.sql$`)
	golangRe     = regexp.MustCompile(`^([0-9]+)_(.+)\.(up|down)\.sql$`)
)

// ParseName classifies a migration file name. inRollbackDir is true for
// files under a rollback/ directory, where V<ver>__Undo__<desc>.sql is the
// runbook's manual undo script.
func ParseName(name string, inRollbackDir bool) (*File, Format, error) {
	if inRollbackDir {
		m := manualUndoRe.FindStringSubmatch(name)
		if m == nil {
			return nil, "", fmt.Errorf("%s: not an undo script name: expected V<version>__Undo__<description>.sql in a rollback/ directory", name)
		}
		v, err := ParseVersion(m[1])
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", name, err)
		}
		return &File{Path: name, Kind: KindManualUndo, Version: v, Description: desc(m[2])}, Flyway, nil
	}
	if m := golangRe.FindStringSubmatch(name); m != nil {
		v, err := ParseVersion(m[1])
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", name, err)
		}
		k := KindVersioned
		if m[3] == "down" {
			k = KindUndo
		}
		return &File{Path: name, Kind: k, Version: v, Description: desc(m[2])}, GolangMigrate, nil
	}
	if m := repeatableRe.FindStringSubmatch(name); m != nil {
		return &File{Path: name, Kind: KindRepeatable, Description: desc(m[1])}, Flyway, nil
	}
	if m := flywayRe.FindStringSubmatch(name); m != nil {
		v, err := ParseVersion(m[2])
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", name, err)
		}
		k := KindVersioned
		if m[1] == "U" {
			k = KindUndo
		}
		if strings.TrimSpace(m[3]) == "" || strings.HasPrefix(m[3], "_") {
			return nil, "", fmt.Errorf("%s: empty description: expected %s<version>__<description>.sql", name, m[1])
		}
		return &File{Path: name, Kind: k, Version: v, Description: desc(m[3])}, Flyway, nil
	}
	return nil, "", fmt.Errorf("%s: not a migration file name: expected Flyway V<version>__<description>.sql, U<version>__<description>.sql or R__<description>.sql, or golang-migrate <version>_<name>.up.sql / .down.sql", name)
}

func desc(s string) string { return strings.ReplaceAll(s, "_", " ") }

// Migration is one version with its forward and undo scripts.
type Migration struct {
	Version     Version
	Description string
	Up          *File
	Undo        *File
}

// Source is a loaded migration directory.
type Source struct {
	Dir        string
	Format     Format
	Migrations []*Migration // ascending by version
	Repeatable []*File
	Warnings   []string
}

// Find returns the migration with version v, or nil.
func (s *Source) Find(v Version) *Migration {
	for _, m := range s.Migrations {
		if m.Version.Compare(v) == 0 {
			return m
		}
	}
	return nil
}

// LoadDir reads a migration directory: its .sql files and, for Flyway, a
// rollback/ subdirectory with manual undo scripts. Bad names, mixed
// layouts and duplicate versions are errors naming the files.
func LoadDir(dir string) (*Source, error) {
	s := &Source{Dir: dir}
	var errs []error
	byVersion := map[string]*Migration{}
	add := func(path string, inRollback bool) {
		f, format, err := ParseName(filepath.Base(path), inRollback)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Dir(path), err))
			return
		}
		f.Path = path
		if s.Format == "" {
			s.Format = format
		} else if s.Format != format {
			errs = append(errs, fmt.Errorf("%s: a %s file in a %s directory; keep one layout per directory", path, format, s.Format))
			return
		}
		if f.Kind == KindRepeatable {
			s.Repeatable = append(s.Repeatable, f)
			return
		}
		key := f.Version.key()
		m := byVersion[key]
		if m == nil {
			m = &Migration{Version: f.Version, Description: f.Description}
			byVersion[key] = m
		}
		switch f.Kind {
		case KindVersioned:
			if m.Up != nil {
				errs = append(errs, fmt.Errorf("duplicate version %s: %s and %s", key, m.Up.Path, path))
				return
			}
			m.Up, m.Description = f, f.Description
		case KindUndo, KindManualUndo:
			if m.Undo != nil {
				errs = append(errs, fmt.Errorf("two undo scripts for version %s: %s and %s", key, m.Undo.Path, path))
				return
			}
			m.Undo = f
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			if e.Name() == "rollback" {
				sub, err := os.ReadDir(p)
				if err != nil {
					return nil, err
				}
				for _, se := range sub {
					if !se.IsDir() && strings.HasSuffix(se.Name(), ".sql") {
						add(filepath.Join(p, se.Name()), true)
					}
				}
			}
			continue
		}
		if strings.HasSuffix(e.Name(), ".sql") {
			add(p, false)
		}
	}
	for _, m := range byVersion {
		if m.Up == nil {
			errs = append(errs, fmt.Errorf("%s: an undo script for version %s, which has no forward migration", m.Undo.Path, m.Version))
			continue
		}
		if m.Undo == nil {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s has no undo script", m.Up.Path))
		}
		s.Migrations = append(s.Migrations, m)
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, errors.Join(errs...)
	}
	sort.Slice(s.Migrations, func(i, j int) bool { return s.Migrations[i].Version.Compare(s.Migrations[j].Version) < 0 })
	sort.Strings(s.Warnings)
	if s.Format == "" {
		return nil, fmt.Errorf("%s: no migration files found", dir)
	}
	return s, nil
}
