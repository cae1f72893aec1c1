package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/migrate"
)

// DBOptions are the flags every `rollback db` command shares.
type DBOptions struct {
	DSN string
	// DSNEnv is the service's database.dsnEnv, when a service is known.
	DSNEnv  string
	Dir     string
	Format  string
	Table   string
	To      string
	Release string
	Output  string
}

func newDBCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Database down migrations on PostgreSQL, MariaDB and MySQL: plan, record, undo, verify, drill, lint",
		Long: `Down-migrate a database the way the runbook's Step 3 says, but ordered,
locked and verified: plan which applied migrations to undo (newest first, each
with its undo script), snapshot what the undo touches, run it while holding
the migration tool's lock, fix the history, and verify version and schema
fingerprint.

PostgreSQL (postgres://): the whole undo and the history fix in one
transaction under lock_timeout with retries.

MariaDB and MySQL (mariadb:// or mysql://, then user:pass@tcp(host:3306)/db as
golang-migrate writes it, or user:pass@host:3306/db): DDL commits statement by
statement there, so each statement is journaled (table rollback_undo_journal)
before and after it runs; a killed or failed undo resumes at the next
statement and never repeats a finished one (a statement caught half-way is
judged from information_schema); the history is fixed after the last
statement. Lock waits are cut at --lock-timeout (the server itself only counts
whole seconds) and the long transaction that blocks the ALTER is named;
ALTER TABLE is tried with ALGORITHM=INSTANT, then INPLACE with LOCK=NONE.

Migrations are read from --dir: Flyway (V<ver>__<desc>.sql, U<ver>__<desc>.sql,
R__<desc>.sql, and the runbook's rollback/V<ver>__Undo__<desc>.sql) or
golang-migrate (<n>_<name>.up.sql / .down.sql).

The connection string comes from --dsn, else $ROLLBACK_DB_DSN, else
$DATABASE_URL (the run looks in the same order, with the service's
database.dsnEnv before $ROLLBACK_DB_DSN). Passwords are never printed.`,
		Example: `  export ROLLBACK_DB_DSN=postgres://app@db:5432/payments
  rollback db record --dir migrations --release v1.2.0     # before deploying v1.2.0
  rollback db plan --dir migrations --release v1.2.0
  rollback db undo --dir migrations --release v1.2.0 --dry-run
  rollback db undo --dir migrations --to-version 1.1.0 --yes
  rollback db drill --dir migrations
  rollback db lint --dir migrations
  rollback db undo --dsn 'mysql://app@tcp(db:3306)/payments' --dir migrations --release v1.2.0 --yes`,
	}
	cmd.AddCommand(newDBPlanCmd(f), newDBRecordCmd(f), newDBUndoCmd(f), newDBVerifyCmd(f), newDBDrillCmd(f), newDBLintCmd(f))
	return cmd
}

// addDBFlags registers the shared flags; target adds --to-version and --release.
func addDBFlags(cmd *cobra.Command, o *DBOptions, target bool) {
	fl := cmd.Flags()
	fl.StringVar(&o.DSN, "dsn", "", "connection string: postgres://…, mariadb://… or mysql://… (default $ROLLBACK_DB_DSN, then $DATABASE_URL)")
	fl.StringVar(&o.Dir, "dir", "migrations", "directory of migration scripts")
	fl.StringVar(&o.Format, "format", "auto", "migration layout: auto (from --dir), flyway or golang-migrate")
	fl.StringVar(&o.Table, "table", "", "history table (default flyway_schema_history or schema_migrations)")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	if target {
		fl.StringVar(&o.To, "to-version", "", "version the abandoned release started from: undo everything newer")
		fl.StringVar(&o.Release, "release", "", "take the target version from the record 'rollback db record --release' made")
	}
}

// dbSession is what a db command works with: the one database pipeline
// (migrate.Provider) the run uses too.
type dbSession = migrate.Provider

// open resolves the database: the connection string in migrate.DSNSources'
// order, the layout (--format, or from --dir) and the history table.
func (o *DBOptions) open(ctx context.Context, f *Factory, needSource bool) (*dbSession, error) {
	if _, err := outputFormat(o.Output); err != nil {
		return nil, err
	}
	dsn, _ := migrate.LookupDSN(o.DSN, o.DSNEnv, f.IO.Getenv)
	p, err := migrate.Open(ctx, migrate.ProviderOptions{DSN: dsn, Dir: o.Dir, Format: o.Format, Table: o.Table, NeedSource: needSource})
	if errors.Is(err, migrate.ErrBadOptions) || errors.Is(err, migrate.ErrNoDSN) {
		return nil, usageError{err: err}
	}
	return p, err
}

// target resolves --to-version or --release to a version (and the record).
func (o *DBOptions) target(ctx context.Context, s *dbSession) (migrate.Version, *migrate.Release, error) {
	switch {
	case o.To != "" && o.Release != "":
		return migrate.Version{}, nil, usagef("pass --to-version or --release, not both")
	case o.To != "":
		if o.To == "0" {
			return migrate.Version{}, nil, nil
		}
		v, err := migrate.ParseVersion(o.To)
		if err != nil {
			return v, nil, usagef("--to-version: %v", err)
		}
		return v, nil, nil
	case o.Release != "":
		return s.Release(ctx, o.Release)
	}
	return migrate.Version{}, nil, usagef("which version should the database go back to? pass --to-version VERSION or --release NAME (recorded with 'rollback db record')")
}

// ErrNoStateDir: neither $XDG_STATE_HOME nor $HOME is set, and rollback
// will not fall back to a shared directory (such as /tmp) that another
// user could create first.
var ErrNoStateDir = errors.New("no state directory: set $XDG_STATE_HOME or $HOME, or pass --store (and --snapshot-dir, --drill-log) explicitly")

// statePath is name in rollback's state directory ($XDG_STATE_HOME/rollback,
// else ~/.local/state/rollback), created 0700.
func (f *Factory) statePath(name string) (string, error) {
	dir := ""
	if d := f.IO.Getenv("XDG_STATE_HOME"); d != "" {
		dir = filepath.Join(d, "rollback")
	} else if h := f.IO.Getenv("HOME"); h != "" {
		dir = filepath.Join(h, ".local", "state", "rollback")
	} else {
		return "", usageError{err: ErrNoStateDir}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	return filepath.Join(dir, name), nil
}
