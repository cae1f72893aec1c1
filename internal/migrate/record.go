package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Release is what `rollback db record` stores before a release migrates:
// the schema version and fingerprint the release started from. It lives in
// the database itself (schema "rollback"), so every operator sees it and
// it survives the machine that recorded it.
type Release struct {
	Name        string       `json:"release"`
	Format      Format       `json:"format"`
	Version     string       `json:"version"`
	Fingerprint *Fingerprint `json:"fingerprint"`
	RecordedAt  time.Time    `json:"recordedAt"`
}

// ErrNoRecord means no record exists for the release.
var ErrNoRecord = errors.New("no record for this release")

const recordDDL = `CREATE SCHEMA IF NOT EXISTS rollback;
CREATE TABLE IF NOT EXISTS rollback.releases (
	release     text PRIMARY KEY,
	format      text NOT NULL,
	version     text NOT NULL,
	fingerprint jsonb NOT NULL,
	recorded_at timestamptz NOT NULL DEFAULT now()
)`

// Record stores the current version and fingerprint for a release
// (replacing an earlier record of the same release).
func Record(ctx context.Context, db DB, release string, st *State) (*Release, error) {
	fp, err := TakeFingerprint(ctx, db)
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec(ctx, recordDDL); err != nil {
		return nil, fmt.Errorf("create rollback.releases: %w", err)
	}
	b, err := json.Marshal(fp)
	if err != nil {
		return nil, err
	}
	r := &Release{Name: release, Format: st.Format, Version: st.Current.String(), Fingerprint: fp}
	err = db.QueryRow(ctx, `INSERT INTO rollback.releases (release, format, version, fingerprint) VALUES ($1, $2, $3, $4)
		ON CONFLICT (release) DO UPDATE SET format = EXCLUDED.format, version = EXCLUDED.version,
		  fingerprint = EXCLUDED.fingerprint, recorded_at = now()
		RETURNING recorded_at`, release, string(st.Format), r.Version, b).Scan(&r.RecordedAt)
	if err != nil {
		return nil, fmt.Errorf("record release %s: %w", release, err)
	}
	return r, nil
}

// LoadRelease reads the record of a release.
func LoadRelease(ctx context.Context, db DB, release string) (*Release, error) {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('rollback.releases') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("%w %s: nothing was recorded in this database; run 'rollback db record --release %s' before migrating, or pass --to-version", ErrNoRecord, release, release)
	}
	r := &Release{Name: release}
	var fp []byte
	var format string
	err := db.QueryRow(ctx, `SELECT format, version, fingerprint, recorded_at FROM rollback.releases WHERE release = $1`, release).
		Scan(&format, &r.Version, &fp, &r.RecordedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w %s; record it with 'rollback db record --release %s' before migrating, or pass --to-version", ErrNoRecord, release, release)
	}
	if err != nil {
		return nil, err
	}
	r.Format = Format(format)
	r.Fingerprint = &Fingerprint{}
	if err := json.Unmarshal(fp, r.Fingerprint); err != nil {
		return nil, err
	}
	return r, nil
}

// Verification is the result of Verify.
type Verification struct {
	WantVersion string   `json:"wantVersion"`
	GotVersion  string   `json:"gotVersion"`
	SchemaDiff  []string `json:"schemaDiff,omitempty"`
	Fingerprint bool     `json:"fingerprintChecked"`
	OK          bool     `json:"ok"`
}

// Verify checks the history shows want, and, when rel is not nil, that the
// schema fingerprint equals the one recorded before the release.
func Verify(ctx context.Context, db DB, format Format, table string, want Version, rel *Release) (*Verification, error) {
	st, err := ReadState(ctx, db, format, table)
	if err != nil {
		return nil, err
	}
	v := &Verification{WantVersion: want.String(), GotVersion: st.Current.String()}
	v.OK = st.Current.Compare(want) == 0 && !st.Dirty
	if rel != nil {
		fp, err := TakeFingerprint(ctx, db)
		if err != nil {
			return nil, err
		}
		v.Fingerprint = true
		v.SchemaDiff = fp.Diff(rel.Fingerprint)
		if len(v.SchemaDiff) > 0 {
			v.OK = false
		}
	}
	return v, nil
}
