package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/migrate"
)

func newDBLintCmd(f *Factory) *cobra.Command {
	var dir, output, engine string
	var strict bool
	cmd := &cobra.Command{
		Use:   "lint [FILE.sql ...]",
		Short: "Check undo scripts for the target engine: destructive statements, locks, re-run safety",
		Long: `PostgreSQL (--engine postgres, the default): parse every undo script of --dir
(or the files given) with PostgreSQL's own grammar (libpg_query) and report:
destructive statements; UPDATE … SET col = NULL before DROP COLUMN col (a
full-table rewrite the drop makes pointless); DROP without IF EXISTS;
statements that take ACCESS EXCLUSIVE locks; statements that cannot run in a
transaction.

MariaDB 10.11 (--engine mariadb) or MySQL 8 (--engine mysql): statements that
cannot run online there: a table copy (ALGORITHM=COPY: a column type change,
CONVERT TO CHARACTER SET, a primary key dropped, an AUTO_INCREMENT or STORED
column, a foreign key added with checks on), a shared lock (FULLTEXT, SPATIAL),
a rebuild, LOCK TABLES (an error); scripts of several DDL statements, which
commit one by one.

Both: migrations without an undo script (errors). The engine defaults to the
scheme of $ROLLBACK_DB_DSN or $DATABASE_URL (mariadb://, mysql://), else
postgres. Exits 5 on errors, and on warnings with --strict.`,
		Example: `  rollback db lint --dir migrations
  rollback db lint migrations/rollback/V1_2_0__Undo__add_transaction_category.sql --strict
  rollback db lint --dir migrations --engine mariadb`,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(output)
			if err != nil {
				return err
			}
			switch engine {
			case "":
				dsn, _ := migrate.LookupDSN("", "", f.IO.Getenv)
				engine = migrate.LintEngine(dsn)
			case migrate.LintPostgres, migrate.LintMariaDB, migrate.LintMySQL:
			default:
				return usagef("--engine %q: expected postgres, mariadb or mysql", engine)
			}
			var fs []migrate.Finding
			if len(args) > 0 {
				for _, a := range args {
					b, err := os.ReadFile(a)
					if err != nil {
						return usageError{err: err}
					}
					got, err := migrate.LintScriptFor(a, string(b), engine)
					if err != nil {
						return usageError{err: err}
					}
					fs = append(fs, got...)
				}
			} else {
				src, err := migrate.LoadDir(dir)
				if err != nil {
					return usagef("%v (pass the directory with --dir, or files)", err)
				}
				if fs, err = migrate.LintSourceFor(src, engine); err != nil {
					return usageError{err: err}
				}
			}
			if fs == nil {
				fs = []migrate.Finding{}
			}
			if format != "" {
				if err := printStructured(f.IO.Out, format, fs); err != nil {
					return err
				}
			} else {
				for _, x := range fs {
					fmt.Fprintln(f.IO.Out, x.String())
				}
			}
			errs, warns := 0, 0
			for _, x := range fs {
				switch x.Severity {
				case migrate.SevError:
					errs++
				case migrate.SevWarning:
					warns++
				}
			}
			if format == "" {
				fmt.Fprintf(f.IO.ErrOut, "%d error(s), %d warning(s)\n", errs, warns)
			}
			if errs > 0 || strict && warns > 0 {
				return fmt.Errorf("%w: %d error(s), %d warning(s)", errLintFailed, errs, warns)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "migrations", "directory of migration scripts")
	cmd.Flags().BoolVar(&strict, "strict", false, "fail on warnings too")
	cmd.Flags().StringVar(&engine, "engine", "", "target engine: postgres, mariadb (10.11) or mysql (8); default from $ROLLBACK_DB_DSN's scheme, else postgres")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	return cmd
}
