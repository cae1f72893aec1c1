package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DSNSources is the one order in which every command and the run look for
// a database's connection string: an explicit --dsn, the variable the
// service's database.dsnEnv names, $ROLLBACK_DB_DSN, $DATABASE_URL.
const DSNSources = "--dsn, the service's database.dsnEnv, $ROLLBACK_DB_DSN, $DATABASE_URL"

// LookupDSN finds the connection string in DSNSources' order and says
// where it came from ("" when nowhere).
func LookupDSN(flag, dsnEnv string, getenv func(string) string) (dsn, from string) {
	if flag != "" {
		return flag, "--dsn"
	}
	for _, env := range []string{dsnEnv, "ROLLBACK_DB_DSN", "DATABASE_URL"} {
		if env == "" {
			continue
		}
		if v := getenv(env); v != "" {
			return v, "$" + env
		}
	}
	return "", ""
}

// ErrNoDSN: no connection string in any of DSNSources.
var ErrNoDSN = errors.New("no database connection string: pass --dsn, set the service's database.dsnEnv variable, $ROLLBACK_DB_DSN or $DATABASE_URL (e.g. postgres://user@host:5432/db)")

// ProviderOptions say where a database and its migrations are.
type ProviderOptions struct {
	DSN    string
	Dir    string // migration scripts
	Format string // auto (from Dir), flyway or golang-migrate
	Table  string // history table ("" for the layout's default)
	// NeedSource loads Dir even when Format is given.
	NeedSource bool
}

// Provider is one database with its migration source, layout and history
// table, resolved once; plan, snapshot, undo, verify and drill all take
// them from here.
type Provider struct {
	DSN string
	// Conn is PostgreSQL's connection; My, a MariaDB or MySQL database
	// (the DSN's scheme chooses).
	Conn   *pgx.Conn
	My     *MySQL
	Source *Source // nil when not loaded
	Format Format
	Table  string
}

// ErrBadOptions is a ProviderOptions mistake (wrapped with what).
var ErrBadOptions = errors.New("invalid database options")

// Open resolves the layout and connects. Errors never carry the password.
func Open(ctx context.Context, o ProviderOptions) (*Provider, error) {
	p := &Provider{DSN: o.DSN, Table: o.Table}
	format := o.Format
	if format == "" {
		format = "auto"
	}
	if o.NeedSource || format == "auto" {
		src, err := LoadDir(o.Dir)
		if err != nil {
			return nil, fmt.Errorf("%w: %v (the directory of migration scripts)", ErrBadOptions, err)
		}
		p.Source, p.Format = src, src.Format
	}
	switch format {
	case "auto":
	case string(Flyway), string(GolangMigrate):
		if p.Source != nil && string(p.Source.Format) != format {
			return nil, fmt.Errorf("%w: format %s, but %s holds %s files", ErrBadOptions, format, o.Dir, p.Source.Format)
		}
		p.Format = Format(format)
	default:
		return nil, fmt.Errorf("%w: format %q: expected auto, flyway or golang-migrate", ErrBadOptions, format)
	}
	if p.DSN == "" {
		return nil, ErrNoDSN
	}
	if IsMySQL(p.DSN) {
		my, err := openMySQL(ctx, p.DSN)
		if errors.Is(err, ErrBadOptions) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %s", SafeDSN(p.DSN), Redact(err.Error(), p.DSN))
		}
		p.My = my
		return p, nil
	}
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %s", SafeDSN(p.DSN), Redact(err.Error(), p.DSN))
	}
	p.Conn = conn
	return p, nil
}

// Close closes the connection.
func (p *Provider) Close() {
	if p != nil && p.Conn != nil {
		p.Conn.Close(context.Background())
	}
	if p != nil && p.My != nil {
		p.My.close()
	}
}

// State reads the history table.
func (p *Provider) State(ctx context.Context) (*State, error) {
	if p.My != nil {
		return p.My.state(ctx, p.Format, p.Table)
	}
	return ReadState(ctx, p.Conn, p.Format, p.Table)
}

// Plan plans undoing every applied migration newer than to.
func (p *Provider) Plan(ctx context.Context, to Version) (*Plan, error) {
	st, err := p.State(ctx)
	if err != nil {
		return nil, err
	}
	plan, err := PlanUndo(p.Source, st, to)
	if err != nil {
		return nil, err
	}
	if p.My != nil {
		plan.mysql(p.My)
		return plan, nil
	}
	return plan, plan.LoadCaptures(ctx, p.Conn)
}

// PlanFrom plans undoing every applied migration newer than to from a
// state already read (captures are loaded by the undo).
func (p *Provider) PlanFrom(st *State, to Version) (*Plan, error) {
	plan, err := PlanUndo(p.Source, st, to)
	if err == nil && p.My != nil {
		plan.mysql(p.My)
	}
	return plan, err
}

// Verify checks the history is at want and, with a release record, that
// the schema equals the one recorded before the release.
func (p *Provider) Verify(ctx context.Context, want Version, rel *Release) (*Verification, error) {
	if p.My != nil {
		return p.My.verify(ctx, p.Format, p.Table, want, rel)
	}
	return Verify(ctx, p.Conn, p.Format, p.Table, want, rel)
}

// RecordRelease is 'rollback db record': before the release migrates,
// capture (keyed) what its pending up scripts will destroy, then store
// the version and schema fingerprint it starts from. A refusal (a table
// without a key) records nothing.
func (p *Provider) RecordRelease(ctx context.Context, release string) (*Release, []Captured, error) {
	st, err := p.State(ctx)
	if err != nil {
		return nil, nil, err
	}
	if p.My != nil {
		if _, err := PlanUndo(p.Source, st, st.Current); err != nil {
			return nil, nil, err
		}
		rel, err := p.My.record(ctx, release, st)
		return rel, nil, err
	}
	caps, err := Capture(ctx, p.Conn, release, p.Source, st)
	if err != nil {
		return nil, nil, err
	}
	rel, err := Record(ctx, p.Conn, release, st)
	return rel, caps, err
}

// PendingMerges counts the captures whose step was undone and whose merge
// has not finished (a kill stopped it): Undo finishes them.
func (p *Provider) PendingMerges(ctx context.Context) (int, error) {
	if p.My != nil {
		return 0, nil // no captures on MySQL
	}
	caps, err := pendingMerges(ctx, p.Conn)
	return len(caps), err
}

// Lock takes the migration tool's lock until unlock; o.Locked is set.
func (p *Provider) Lock(ctx context.Context, o *UndoOptions) (unlock func(), err error) {
	if p.My != nil {
		unlock, err = p.My.lock(ctx, p.Format, p.Table, *o)
	} else {
		unlock, err = LockMigrations(ctx, p.Conn, p.Format, p.Table, *o)
	}
	if err == nil {
		o.Locked = true
	}
	return unlock, err
}

// Release is the target of undoing release: the version it started from,
// as 'rollback db record --release' stored it (ErrNoRecord when none).
func (p *Provider) Release(ctx context.Context, release string) (Version, *Release, error) {
	var rel *Release
	var err error
	if p.My != nil {
		rel, err = p.My.loadRelease(ctx, release)
	} else {
		rel, err = LoadRelease(ctx, p.Conn, release)
	}
	if err != nil {
		return Version{}, nil, err
	}
	if rel.Version == "" {
		return Version{}, rel, nil
	}
	v, err := ParseVersion(rel.Version)
	return v, rel, err
}

// Summary is a verification in one line (with the schema diff, if any).
func (v *Verification) Summary() string {
	if v == nil {
		return "not verified"
	}
	none := func(s string) string {
		if s == "" {
			return "none"
		}
		return s
	}
	msg := fmt.Sprintf("history at version %s (want %s)", none(v.GotVersion), none(v.WantVersion))
	switch {
	case !v.Fingerprint:
		msg += "; schema fingerprint not checked (no --release record)"
	case len(v.SchemaDiff) == 0:
		msg += "; schema equals the one recorded before the release"
	default:
		msg += "; schema differs from the recorded one:\n  " + strings.Join(v.SchemaDiff, "\n  ")
	}
	return msg
}

// Snapshot saves what the plan's undo touches (or the whole database) to
// dir before the undo.
func (p *Provider) Snapshot(ctx context.Context, plan *Plan, mode SnapshotMode, dir string, now time.Time) (*Snapshot, error) {
	if p.My != nil {
		return p.My.snapshot(ctx, p.DSN, plan, mode, dir, now)
	}
	return TakeSnapshot(ctx, p.DSN, plan, mode, dir, now)
}

// Undo runs the plan's undo scripts and fixes the history (see Undo).
func (p *Provider) Undo(ctx context.Context, plan *Plan, o UndoOptions) (*UndoResult, error) {
	if p.My != nil {
		return p.My.undo(ctx, plan, o)
	}
	return Undo(ctx, p.Conn, plan, o)
}

// ErrVerifyAfterUndo wraps what went wrong after the undo had run, while
// verifying it (the undo itself is done); ErrNotRestored is a database
// that verification found not where the undo should leave it.
var (
	ErrVerifyAfterUndo = errors.New("verify after the undo")
	ErrNotRestored     = errors.New("the database is not where the undo should leave it")
)

// UndoAndVerify is the down migration as the runbook's step and 'rollback
// db undo' both run it (the caller holds the migration tool's lock and has
// taken any snapshot): the plan undone under o, then the history verified
// at the plan's After version and, with the release's record, the schema
// against it. An error after the undo ran wraps ErrVerifyAfterUndo (and
// ErrNotRestored for a failed verification, returned with what it saw).
func (p *Provider) UndoAndVerify(ctx context.Context, plan *Plan, rel *Release, o UndoOptions) (*UndoResult, *Verification, error) {
	res, err := p.Undo(ctx, plan, o)
	if err != nil || o.DryRun {
		return res, nil, err
	}
	var want Version
	if plan.After != "" {
		if want, err = ParseVersion(plan.After); err != nil {
			return res, nil, fmt.Errorf("%w: %w", ErrVerifyAfterUndo, err)
		}
	}
	v, err := p.Verify(ctx, want, rel)
	if err != nil {
		return res, nil, fmt.Errorf("%w: %w", ErrVerifyAfterUndo, err)
	}
	if !v.OK {
		return res, v, fmt.Errorf("%w: %w: %s", ErrVerifyAfterUndo, ErrNotRestored, v.Summary())
	}
	return res, v, nil
}

// Drill runs the undo/redo/undo round trip on a clone (see Drill).
func (p *Provider) Drill(ctx context.Context, o DrillOptions) (*DrillResult, error) {
	if IsMySQL(p.DSN) {
		// A connection of its own: the caller may have closed the
		// provider's (PostgreSQL's clone by TEMPLATE needs that).
		my, err := openMySQL(ctx, p.DSN)
		if err != nil {
			return nil, err
		}
		defer my.close()
		return my.drill(ctx, p.DSN, p.Source, p.Format, p.Table, o)
	}
	return Drill(ctx, p.DSN, p.Source, p.Format, p.Table, o)
}
