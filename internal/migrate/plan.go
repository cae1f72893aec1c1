package migrate

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// ErrUnsafe means a down migration cannot safely run; the wrapped reason
// is a fact the rollback decision uses ("can we safely down-migrate?").
var ErrUnsafe = errors.New("cannot safely down-migrate")

// Step undoes one applied migration.
type Step struct {
	Version     Version     `json:"-"`
	VersionText string      `json:"version"`
	Description string      `json:"description"`
	Up          *File       `json:"up"`
	Undo        *File       `json:"undo"`
	Script      string      `json:"-"`
	Statements  []Statement `json:"-"`
}

// Plan is an ordered down migration, newest first.
type Plan struct {
	Format Format `json:"format"`
	Table  string `json:"table"`
	From   string `json:"fromVersion"`
	To     string `json:"toVersion"`
	// After is the version the history shows when done ("" = none).
	After    string   `json:"afterVersion"`
	Steps    []*Step  `json:"steps"`
	Warnings []string `json:"warnings,omitempty"`

	// Captured lists what the release destroyed and 'rollback db record'
	// captured, by step version: the undo merges it back.
	Captured []*Captured `json:"captured,omitempty"`
	// Destroyed is what the undone steps' up scripts destroyed, each with
	// its capture or why there is none.
	Destroyed []Destroyed `json:"destroyed,omitempty"`

	// Engine is the database engine the plan runs on ("" for
	// PostgreSQL; "MariaDB 10.11.9" or "MySQL 8.0.36").
	Engine string `json:"engine,omitempty"`

	to       Version
	after    Version
	captures map[string][]*Captured
	my       *MySQL
}

// PlanUndo lists the applied migrations newer than to, newest first, each
// with its undo script. It refuses (ErrUnsafe) when an undo is missing, the
// database is dirty, or a migration failed.
func PlanUndo(src *Source, st *State, to Version) (*Plan, error) {
	p := &Plan{Format: st.Format, Table: st.Table, From: st.Current.String(), To: to.String(), to: to}
	if src.Format != st.Format {
		return nil, fmt.Errorf("the migrations in %s are %s files but the history is %s's", src.Dir, src.Format, st.Format)
	}
	if st.Dirty {
		return nil, fmt.Errorf("%w: the database is dirty at version %s (a golang-migrate migration failed half-way); repair the schema by hand, then 'migrate force VERSION'", ErrUnsafe, st.Current)
	}
	if len(st.Failed) > 0 {
		f := st.Failed[len(st.Failed)-1]
		return nil, fmt.Errorf("%w: migration %s (%s, installed_rank %d) failed; repair it ('flyway repair') before undoing", ErrUnsafe, f.VersionText, f.Script, f.Rank)
	}
	if to.Compare(st.Current) > 0 {
		return nil, fmt.Errorf("target version %s is newer than the database's version %s: nothing to undo; did you mean a lower --to-version?", to, st.Current)
	}
	var applied []Applied
	if st.Format == GolangMigrate {
		// golang-migrate records only the newest version: every migration
		// of the directory up to it is applied.
		for _, m := range src.Migrations {
			if m.Version.Compare(st.Current) <= 0 {
				applied = append(applied, Applied{Version: m.Version, VersionText: m.Version.String()})
			}
		}
		if !st.Current.IsZero() && src.Find(st.Current) == nil {
			return nil, fmt.Errorf("%w: the database is at version %s, which is not a migration in %s", ErrUnsafe, st.Current, src.Dir)
		}
		if !to.IsZero() && src.Find(to) == nil {
			return nil, fmt.Errorf("target version %s is not a migration in %s (versions: %s)", to, src.Dir, versionList(src))
		}
	} else {
		applied = append(applied, st.Applied...)
	}
	// Newest first: by installed_rank for Flyway (out-of-order applies
	// undo in reverse of how they ran), by version for golang-migrate.
	sort.SliceStable(applied, func(i, j int) bool {
		if applied[i].Rank != applied[j].Rank {
			return applied[i].Rank > applied[j].Rank
		}
		return applied[i].Version.Compare(applied[j].Version) > 0
	})
	var missing []string
	for _, a := range applied {
		if a.Version.Compare(to) <= 0 {
			if a.Version.Compare(p.after) > 0 {
				p.after = a.Version
			}
			continue
		}
		m := src.Find(a.Version)
		if m == nil {
			missing = append(missing, fmt.Sprintf("version %s (%s) is applied but has no migration file in %s", a.VersionText, a.Script, src.Dir))
			continue
		}
		if m.Undo == nil {
			uv := underscore(strings.ReplaceAll(m.Version.String(), ".", " "))
			hint := fmt.Sprintf("write U%s__%s.sql or rollback/V%s__Undo__%s.sql", uv, underscore(m.Description), uv, underscore(m.Description))
			if src.Format == GolangMigrate {
				hint = "write " + strings.TrimSuffix(m.Up.Name(), ".up.sql") + ".down.sql"
			}
			missing = append(missing, fmt.Sprintf("%s (version %s) has no undo script: %s", m.Up.Path, a.VersionText, hint))
			continue
		}
		up, err := os.ReadFile(m.Up.Path)
		if err != nil {
			return nil, err
		}
		if a.Checksum != nil && FlywayChecksum(up) != *a.Checksum {
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s changed after it was applied (history checksum %d, file checksum %d): the undo may not match what ran", m.Up.Path, *a.Checksum, FlywayChecksum(up)))
		}
		undo, err := os.ReadFile(m.Undo.Path)
		if err != nil {
			return nil, err
		}
		vt := a.VersionText
		if vt == "" {
			vt = m.Version.String()
		}
		p.Steps = append(p.Steps, &Step{Version: m.Version, VersionText: vt, Description: m.Description, Up: m.Up, Undo: m.Undo,
			Script: string(undo), Statements: Split(string(undo))})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnsafe, joinLines(missing))
	}
	p.After = p.after.String()
	return p, nil
}

func versionList(src *Source) string {
	s := ""
	for i, m := range src.Migrations {
		if i > 0 {
			s += ", "
		}
		s += m.Version.String()
	}
	return s
}

func underscore(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == ' ' {
			b[i] = '_'
		}
	}
	return string(b)
}

func joinLines(xs []string) string {
	if len(xs) == 1 {
		return xs[0]
	}
	s := ""
	for _, x := range xs {
		s += "\n  - " + x
	}
	return s
}
