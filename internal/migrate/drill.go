package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DataLoss is what an undo destroys: rows with values in a dropped column,
// or rows of a dropped table.
type DataLoss struct {
	Table  string `json:"table"`
	Column string `json:"column,omitempty"`
	Rows   int64  `json:"rows"`
}

// DrillStep is the round trip of one migration on the clone.
type DrillStep struct {
	Version string `json:"version"`
	// Applied is true for a migration the database had (undo, re-apply,
	// undo); false for a pending one (apply, undo).
	Applied  bool       `json:"applied"`
	Passed   bool       `json:"passed"`
	Diff     []string   `json:"schemaDiff,omitempty"`
	DataLoss []DataLoss `json:"dataLoss,omitempty"`
	// Merged is, for a pending migration that destroys data, what its
	// capture gave back after the forward migration, a sample of new
	// writes (inserts and deletes) and the undo; Sample says what was
	// written.
	Merged   []Merged `json:"merged,omitempty"`
	Sample   string   `json:"sample,omitempty"`
	Error    string   `json:"error,omitempty"`
	UndoHash string   `json:"undoSha256"`
}

// DrillResult is a whole drill.
type DrillResult struct {
	Database string      `json:"database"`
	Clone    string      `json:"clone"`
	CloneBy  string      `json:"cloneMethod"`
	Steps    []DrillStep `json:"steps"`
	Passed   bool        `json:"passed"`
	At       time.Time   `json:"at"`
	Seconds  float64     `json:"seconds"`
}

// DrillOptions configure Drill.
type DrillOptions struct {
	// To: applied migrations newer than To are drilled (zero: the newest
	// applied one only). Pending migrations are always drilled.
	To   Version
	Keep bool // keep the clone database
	Log  func(string)
	Now  func() time.Time
}

// drillTarget is what the drill's round trips need of a database clone;
// each engine has one (pgDrill, and MySQL's).
type drillTarget interface {
	fingerprint(ctx context.Context) (*Fingerprint, error)
	undoPlan(ctx context.Context, p *Plan, o UndoOptions) (*UndoResult, error)
	run(ctx context.Context, path string) error
	// dataLoss counts, before an undo runs, the rows it destroys.
	dataLoss(ctx context.Context, s *Step) ([]DataLoss, error)
	// forwardAndBack runs a pending migration (forward) and its undo
	// (back), with whatever checks the engine makes around them.
	forwardAndBack(ctx context.Context, m *Migration, ds *DrillStep, forward func() error, back func() (*UndoResult, error)) error
}

// roundTrips proves, on the clone, each applied step of plan (newest
// first: undo, re-apply, undo) and each pending migration of src (oldest
// first: apply, undo) restore the schema they started from.
func roundTrips(ctx context.Context, db drillTarget, src *Source, st *State, plan *Plan, res *DrillResult, logf func(string, ...any), uo UndoOptions) error {
	res.Passed = true
	for i, s := range plan.Steps {
		one := &Plan{Format: plan.Format, Table: plan.Table, From: s.VersionText, Steps: []*Step{s}, after: plan.after}
		if i+1 < len(plan.Steps) {
			one.after = plan.Steps[i+1].Version
		}
		ds := DrillStep{Version: s.VersionText, Applied: true, UndoHash: hashString(s.Script)}
		err := func() error {
			before, err := db.fingerprint(ctx)
			if err != nil {
				return err
			}
			if ds.DataLoss, err = db.dataLoss(ctx, s); err != nil {
				return err
			}
			if _, err := db.undoPlan(ctx, one, uo); err != nil {
				return fmt.Errorf("undo: %w", err)
			}
			if err := db.run(ctx, s.Up.Path); err != nil {
				return fmt.Errorf("re-apply %s after the undo: %w", s.Up.Name(), err)
			}
			again, err := db.fingerprint(ctx)
			if err != nil {
				return err
			}
			ds.Diff = again.Diff(before)
			if _, err := db.undoPlan(ctx, one, uo); err != nil {
				return fmt.Errorf("second undo: %w", err)
			}
			return nil
		}()
		finishStep(res, &ds, err)
		logf("version %s (applied): undo, re-apply, undo: %s", s.VersionText, verdict(ds))
	}
	// The applied round trips end undone: put those migrations back,
	// oldest first, so pending ones are drilled on the schema they will
	// meet.
	pending := false
	for _, m := range src.Migrations {
		pending = pending || m.Version.Compare(st.Current) > 0
	}
	if pending {
		for i := len(plan.Steps) - 1; i >= 0; i-- {
			if err := db.run(ctx, plan.Steps[i].Up.Path); err != nil {
				return fmt.Errorf("drill: re-applying %s before the pending migrations: %w", plan.Steps[i].Up.Name(), err)
			}
		}
	}
	// Pending migrations, oldest first: apply, undo, compare, re-apply.
	for _, m := range src.Migrations {
		if m.Version.Compare(st.Current) <= 0 {
			continue
		}
		ds := DrillStep{Version: m.Version.String()}
		if m.Undo == nil {
			ds.Error = fmt.Sprintf("%s has no undo script", m.Up.Path)
			finishStep(res, &ds, nil)
			continue
		}
		undo, err := os.ReadFile(m.Undo.Path)
		if err != nil {
			return err
		}
		s := &Step{Version: m.Version, VersionText: m.Version.String(), Up: m.Up, Undo: m.Undo, Script: string(undo), Statements: Split(string(undo))}
		ds.UndoHash = hashString(s.Script)
		err = func() error {
			before, err := db.fingerprint(ctx)
			if err != nil {
				return err
			}
			one := &Plan{Format: st.Format, Table: st.Table, Steps: []*Step{s}, after: st.Current}
			err = db.forwardAndBack(ctx, m, &ds,
				func() error {
					if err := db.run(ctx, m.Up.Path); err != nil {
						return fmt.Errorf("apply %s: %w", m.Up.Name(), err)
					}
					return nil
				},
				func() (*UndoResult, error) {
					r, err := db.undoPlan(ctx, one, uo)
					if err != nil {
						return nil, fmt.Errorf("undo: %w", err)
					}
					return r, nil
				})
			if err != nil {
				return err
			}
			after, err := db.fingerprint(ctx)
			if err != nil {
				return err
			}
			ds.Diff = after.Diff(before)
			return db.run(ctx, m.Up.Path) // later pending migrations build on it
		}()
		finishStep(res, &ds, err)
		logf("version %s (pending): apply, undo: %s", ds.Version, verdict(ds))
	}
	return nil
}

func finishStep(res *DrillResult, ds *DrillStep, err error) {
	if err != nil {
		ds.Error = err.Error()
	}
	ds.Passed = ds.Error == "" && len(ds.Diff) == 0
	res.Passed = res.Passed && ds.Passed
	res.Steps = append(res.Steps, *ds)
}

func verdict(ds DrillStep) string {
	switch {
	case ds.Error != "":
		return "FAILED: " + ds.Error
	case len(ds.Diff) > 0:
		return fmt.Sprintf("FAILED: the schema differs after the round trip:\n  %s", strings.Join(ds.Diff, "\n  "))
	}
	return "schema restored"
}

func hashString(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// DrillLog keeps drill results in a JSON-lines file, so "down migration
// tested" is a fact later commands can check.
type DrillLog struct{ Path string }

// Append records a drill.
func (l DrillLog) Append(r *DrillResult) error {
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(l.Path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	return err
}

// Tested reports whether the undo script with this content passed a drill
// on the named database, and when.
func (l DrillLog) Tested(database, version, undoScript string) (bool, time.Time, error) {
	b, err := os.ReadFile(l.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, err
	}
	want := hashString(undoScript)
	var when time.Time
	ok := false
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r DrillResult
		if json.Unmarshal([]byte(line), &r) != nil || r.Database != database {
			continue
		}
		for _, s := range r.Steps {
			if s.Version == version && s.UndoHash == want && s.Passed {
				ok, when = true, r.At
			}
		}
	}
	return ok, when, nil
}

// drillTo is the version a drill's applied round trips go back to: to, or
// by default the one below the newest applied migration (only the newest
// is drilled).
func drillTo(st *State, to Version) Version {
	if !to.IsZero() || len(st.Applied) == 0 {
		return to
	}
	for _, a := range st.Applied {
		if a.Version.Compare(st.Current) < 0 && a.Version.Compare(to) > 0 {
			to = a.Version
		}
	}
	return to
}
