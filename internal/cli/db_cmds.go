package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/verify"
)

func newDBPlanCmd(f *Factory) *cobra.Command {
	o := &DBOptions{}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "List the applied migrations to undo, newest first, each with its undo script",
		Example: `  rollback db plan --dir migrations --release v1.2.0
  rollback db plan --dir migrations --to-version 1.1.0 -o json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.open(cmd.Context(), f, true)
			if err != nil {
				return err
			}
			defer s.Close()
			p, _, err := planDB(cmd.Context(), o, s)
			if err != nil {
				return err
			}
			if o.Output != "" {
				return printStructured(f.IO.Out, o.Output, p)
			}
			printDBPlan(f.IO, p)
			return nil
		},
	}
	addDBFlags(cmd, o, true)
	return cmd
}

func planDB(ctx context.Context, o *DBOptions, s *dbSession) (*migrate.Plan, *migrate.Release, error) {
	to, rel, err := o.target(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	p, err := s.Plan(ctx, to)
	return p, rel, err
}

func printDBPlan(s *IOStreams, p *migrate.Plan) {
	if len(p.Steps) == 0 {
		fmt.Fprintf(s.Out, "Nothing to undo: the database is at version %s, the target is %s.\n", orNone(p.From), orNone(p.To))
		return
	}
	fmt.Fprintf(s.Out, "Down migration %s -> %s (%s, history table %s), newest first:\n", orNone(p.From), orNone(p.To), p.Format, p.Table)
	tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	for i, st := range p.Steps {
		fmt.Fprintf(tw, "  %d.\t%s\t%s\tundo: %s\n", i+1, st.VersionText, st.Description, st.Undo.Path)
	}
	tw.Flush()
	fmt.Fprintf(s.Out, "History afterwards: %s.\n", orNone(p.After))
	if len(p.Destroyed) > 0 {
		fmt.Fprintf(s.Out, "What the release destroyed:\n")
		for _, d := range p.Destroyed {
			fmt.Fprintf(s.Out, "  %s %s\n", d.Version, d)
		}
	}
	for _, w := range p.Warnings {
		fmt.Fprintf(s.Out, "warning: %s\n", w)
	}
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

func newDBRecordCmd(f *Factory) *cobra.Command {
	o := &DBOptions{}
	var release string
	cmd := &cobra.Command{
		Use:   "record --release NAME",
		Short: "Before a release migrates: store the schema version and fingerprint it starts from",
		Long: `Store, in the database itself (PostgreSQL: schema "rollback"; MariaDB and
MySQL: table rollback_releases), the current migration version and the
schema fingerprint, under the release's name. On PostgreSQL, before that,
the pending up scripts are read with the PostgreSQL grammar, and what each
statement will destroy (a dropped column or table, a type change, an UPDATE,
DELETE or TRUNCATE) is captured with its table's key into the schema
rollback_capture; 'db undo' merges it back by key after the down script, so
customers' writes since the release are kept. A table without a primary key
(or a unique index on NOT NULL columns) whose data the release destroys is
refused, and nothing is recorded. (On MariaDB and MySQL nothing is captured:
the snapshot before the undo is the copy.) 'db plan',
'db undo' and 'db verify' with --release use it: the target version, and the
schema the undo must restore. Run it in the deploy pipeline right before the
migration step.`,
		Example: "  rollback db record --dir migrations --release v1.2.0",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if release == "" {
				return usagef("--release is required: the name of the release about to migrate (e.g. v1.2.0)")
			}
			s, err := o.open(cmd.Context(), f, true)
			if err != nil {
				return err
			}
			defer s.Close()
			rel, caps, err := s.RecordRelease(cmd.Context(), release)
			if err != nil {
				return err
			}
			if o.Output != "" {
				return printStructured(f.IO.Out, o.Output, struct {
					*migrate.Release
					Captured []migrate.Captured `json:"captured"`
				}{rel, caps})
			}
			for _, c := range caps {
				if c.Note != "" {
					fmt.Fprintf(f.IO.Out, "%s: %s\n", c.Destruction, c.Note)
					continue
				}
				fmt.Fprintf(f.IO.Out, "%s: captured %d row(s) by key into %s\n", c.Destruction, c.Rows, c.Store)
			}
			fmt.Fprintf(f.IO.Out, "Recorded release %s: version %s, schema fingerprint %s (%d objects).\n",
				rel.Name, orNone(rel.Version), rel.Fingerprint.Hash[:12], len(rel.Fingerprint.Lines))
			return nil
		},
	}
	addDBFlags(cmd, o, false)
	cmd.Flags().StringVar(&release, "release", "", "name of the release about to migrate")
	return cmd
}

// DBUndoOptions are the flags of `rollback db undo`.
type DBUndoOptions struct {
	DBOptions
	Snapshot    string
	SnapshotDir string
	Lock        time.Duration
	Statement   time.Duration
	Retries     int
	DryRun      bool
	Yes         bool
}

func newDBUndoCmd(f *Factory) *cobra.Command {
	o := &DBUndoOptions{}
	cmd := &cobra.Command{
		Use:   "undo",
		Short: "Snapshot, then run the down migration, fix the history, verify",
		Long: `Run the planned down migration:
  1. snapshot (pg_dump; mariadb-dump or mysqldump) the tables the undo touches (--snapshot=full: the whole
     database; --snapshot=none only when asked); a failed snapshot stops here;
  2. take the migration tool's lock (golang-migrate's or Flyway's advisory or
     named lock), so the application cannot migrate meanwhile;
  3. PostgreSQL: run every undo script and the history fix in one transaction with
     lock_timeout (--lock-timeout) and statement_timeout; a lock timeout rolls back
     and retries with backoff, any other failure rolls back and leaves schema
     and history exactly as they were. Statements PostgreSQL cannot run in a
     transaction (… CONCURRENTLY) run alone, after a warning, guarded with
     IF [NOT] EXISTS.
     MariaDB and MySQL: run the statements one by one, each journaled before
     and after; a DML statement commits with its journal row; run again after
     a kill or a failure, the undo resumes at the first statement not done.
     Lock waits are cut at --lock-timeout and retried; an ALTER TABLE is tried
     with ALGORITHM=INSTANT, then INPLACE with LOCK=NONE, then as written;
  4. verify that the history shows the target version and, with --release, that
     the schema fingerprint equals the one recorded before the release.`,
		Example: `  rollback db undo --dir migrations --release v1.2.0 --dry-run
  rollback db undo --dir migrations --release v1.2.0 --yes
  rollback db undo --dir migrations --to-version 1.1.0 --snapshot=full --lock-timeout 1s`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error { return runDBUndo(cmd.Context(), f, o) },
	}
	addDBFlags(cmd, &o.DBOptions, true)
	fl := cmd.Flags()
	fl.StringVar(&o.Snapshot, "snapshot", "tables", "what to dump first: tables (those the undo touches), full, or none")
	fl.StringVar(&o.SnapshotDir, "snapshot-dir", "", "where snapshots go (default: the state directory's snapshots/)")
	fl.DurationVar(&o.Lock, "lock-timeout", migrate.DefaultUndoOptions().LockTimeout, "longest wait for any lock per try; queries queue behind the undo's pending lock no longer than this")
	fl.DurationVar(&o.Statement, "statement-timeout", 10*time.Minute, "longest run of any statement")
	fl.IntVar(&o.Retries, "retries", migrate.DefaultUndoOptions().Retries, "tries after a lock timeout, with exponential backoff (up to 5s between tries)")
	fl.BoolVar(&o.DryRun, "dry-run", false, "print the SQL and the checks; change nothing")
	fl.BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

type dbUndoResult struct {
	Plan     *migrate.Plan         `json:"plan"`
	Snapshot *migrate.Snapshot     `json:"snapshot,omitempty"`
	Undo     *migrate.UndoResult   `json:"undo,omitempty"`
	Verify   *migrate.Verification `json:"verify,omitempty"`
	SQL      string                `json:"sql,omitempty"`
}

// ErrVerifyFailed means the database is not where the undo should leave it.
var ErrVerifyFailed = verify.ErrFailed

func runDBUndo(ctx context.Context, f *Factory, o *DBUndoOptions) error {
	mode, err := migrate.ParseSnapshotMode(o.Snapshot)
	if err != nil {
		return usageError{err: err}
	}
	if o.Lock <= 0 || o.Statement <= 0 || o.Retries < 0 {
		return usagef("--lock-timeout and --statement-timeout must be positive and --retries not negative")
	}
	s, err := o.open(ctx, f, true)
	if err != nil {
		return err
	}
	defer s.Close()
	uo := migrate.DefaultUndoOptions()
	uo.LockTimeout, uo.StatementTimeout, uo.Retries, uo.DryRun = o.Lock, o.Statement, o.Retries, o.DryRun
	if !o.DryRun {
		// The migration tool's lock first: the plan, the snapshot and the
		// undo all see a history nobody else changes meanwhile.
		unlock, err := s.Lock(ctx, &uo)
		if err != nil {
			return err
		}
		defer unlock()
	}
	p, rel, err := planDB(ctx, &o.DBOptions, s)
	if err != nil {
		return err
	}
	out := &dbUndoResult{Plan: p}
	if o.DryRun {
		if out.SQL, err = p.Describe(uo); err != nil {
			return err
		}
		if o.Output != "" {
			return printStructured(f.IO.Out, o.Output, out)
		}
		fmt.Fprint(f.IO.Out, out.SQL)
		fmt.Fprintln(f.IO.Out, "-- dry run: nothing was changed")
		return nil
	}
	if len(p.Steps) == 0 {
		printDBPlan(f.IO, p)
		return nil
	}
	if !o.Yes && f.IO.CanPrompt() {
		printDBPlan(&IOStreams{Out: f.IO.ErrOut}, p)
		if !askYes(f.IO, fmt.Sprintf("Down-migrate %s from %s to %s? This destroys data the forward migrations added.", filepath.Base(migrate.SafeDSN(s.DSN)), orNone(p.From), orNone(p.To))) {
			return errAborted
		}
	}
	r := newRenderer(f.IO, f.Now)
	ev := progress.Func(r.Event)
	uo.Log = func(msg string) { ev.Emit(f.Now(), "db-undo", progress.Progress, msg, nil) }
	err = ev.Run(f.Now, "snapshot", func() (string, error) {
		if mode == migrate.SnapshotNone {
			return "skipped (--snapshot=none)", nil
		}
		dir := o.SnapshotDir
		if dir == "" {
			var err error
			if dir, err = f.statePath("snapshots"); err != nil {
				return "", err
			}
		}
		snap, err := s.Snapshot(ctx, p, mode, dir, f.Now())
		if err != nil {
			return "", err
		}
		out.Snapshot = snap
		return fmt.Sprintf("%s (%d bytes, sha256 %s…); restore with: %s", snap.Path, snap.Bytes, snap.SHA256[:12], snap.Restore) + noteOf(snap.Note), nil
	})
	if err != nil {
		return err
	}
	// One use case with the runbook's step (migrate.UndoAndVerify),
	// shown as its two parts.
	var verr error
	err = ev.Run(f.Now, "db-undo", func() (string, error) {
		res, v, err := s.UndoAndVerify(ctx, p, rel, uo)
		out.Undo, out.Verify = res, v
		if errors.Is(err, migrate.ErrVerifyAfterUndo) {
			verr, err = err, nil // the undo is done: the next part fails
		}
		if err != nil {
			return "", err
		}
		return res.Summary(p), nil
	})
	if err != nil {
		return err
	}
	err = ev.Run(f.Now, "db-verify", func() (string, error) {
		if errors.Is(verr, migrate.ErrNotRestored) {
			return "", fmt.Errorf("%w: %s", ErrVerifyFailed, verifySummary(out.Verify))
		}
		if verr != nil {
			return "", verr
		}
		return verifySummary(out.Verify), nil
	})
	if o.Output != "" {
		if perr := printStructured(f.IO.Out, o.Output, out); perr != nil {
			return perr
		}
	} else if err == nil {
		fmt.Fprintf(f.IO.Out, "Down-migrated from %s to %s; history fixed; %s.\n", orNone(p.From), orNone(p.To), verifySummary(out.Verify))
	}
	return err
}

func verifySummary(v *migrate.Verification) string { return v.Summary() }

func newDBVerifyCmd(f *Factory) *cobra.Command {
	o := &DBOptions{}
	cmd := &cobra.Command{
		Use:     "verify",
		Short:   "Check the history shows the target version and the schema equals the recorded one",
		Example: "  rollback db verify --dir migrations --release v1.2.0",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.open(cmd.Context(), f, false)
			if err != nil {
				return err
			}
			defer s.Close()
			to, rel, err := o.target(cmd.Context(), s)
			if err != nil {
				return err
			}
			v, err := s.Verify(cmd.Context(), to, rel)
			if err != nil {
				return err
			}
			if o.Output != "" {
				if err := printStructured(f.IO.Out, o.Output, v); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(f.IO.Out, verifySummary(v))
			}
			if !v.OK {
				return fmt.Errorf("%w: %s", ErrVerifyFailed, verifySummary(v))
			}
			return nil
		},
	}
	addDBFlags(cmd, o, true)
	return cmd
}

// noteOf appends a snapshot's note ("full dump: ...") to its evidence.
func noteOf(note string) string {
	if note == "" {
		return ""
	}
	return "; " + note
}
