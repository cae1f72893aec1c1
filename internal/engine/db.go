package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// Database opens the service's database: the connection string in
// migrate.DSNSources' order (dsnFlag first), the migration layout and
// history table from its database section.
func (e *Engine) Database(ctx context.Context, svc *config.Service, dsnFlag string) (*migrate.Provider, error) {
	if svc == nil || svc.Database == nil {
		return nil, fmt.Errorf("no database configured (database: in rollback.yaml): %w", runbook.ErrSkip)
	}
	c := svc.Database
	dsn, _ := migrate.LookupDSN(dsnFlag, c.DSNEnv, e.getenv)
	if dsn == "" {
		return nil, fmt.Errorf("database: %w", migrate.ErrNoDSN)
	}
	return migrate.Open(ctx, migrate.ProviderOptions{DSN: dsn, Dir: c.Dir, Format: c.Format, NeedSource: true})
}

// dbRun is a service's database prepared for the snapshot or the undo.
type dbRun struct {
	p    *migrate.Provider
	plan *migrate.Plan
	rel  *migrate.Release
	to   migrate.Version
	// unlock releases the migration lock prepareDB took, if any.
	unlock func()
}

func (d *dbRun) close() {
	if d.unlock != nil {
		d.unlock()
	}
	d.p.Close()
}

// prepareDB plans the down migration of the abandoned release: its target
// is the version 'rollback db record --release BAD' stored at deploy time.
// It skips (ErrSkip, with the reason) when the service has no database, no
// record, or the migration has not run (or was already undone).
//
// With lock, the migration tool's lock is taken before planning and kept
// until close, and lock.Locked is set for the undo.
func (e *Engine) prepareDB(ctx context.Context, svc *config.Service, inc *store.Incident, lock *migrate.UndoOptions) (*dbRun, error) {
	p, err := e.Database(ctx, svc, "")
	if err != nil {
		return nil, err
	}
	d := &dbRun{p: p, unlock: func() {}}
	fail := func(err error) (*dbRun, error) { d.close(); return nil, err }
	if lock != nil {
		if d.unlock, err = p.Lock(ctx, lock); err != nil {
			return fail(err)
		}
	}
	if d.to, d.rel, err = p.Release(ctx, inc.BadVersion); err != nil {
		if errors.Is(err, migrate.ErrNoRecord) {
			return fail(fmt.Errorf("no release record for %s (run 'rollback db record --release %s' before migrating): %w", inc.BadVersion, inc.BadVersion, runbook.ErrSkip))
		}
		return fail(err)
	}
	st, err := p.State(ctx)
	if err != nil {
		return fail(err)
	}
	if d.plan, err = p.PlanFrom(st, d.to); err != nil {
		return fail(err)
	}
	if len(d.plan.Steps) == 0 {
		if n, err := p.PendingMerges(ctx); err != nil {
			return fail(err)
		} else if n > 0 {
			// The down migration ran; a kill stopped the merge of what
			// the release destroyed: the undo finishes it.
			return d, nil
		}
		v, err := p.Verify(ctx, d.to, d.rel)
		if err == nil && v.OK {
			return fail(fmt.Errorf("database at %s, where %s started: nothing to undo (%s): %w", orNone(st.Current.String()), inc.BadVersion, v.Summary(), runbook.ErrSkip))
		}
		return fail(fmt.Errorf("database at %s, where %s started: nothing to undo: %w", orNone(st.Current.String()), inc.BadVersion, runbook.ErrSkip))
	}
	return d, nil
}
