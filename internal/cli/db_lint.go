package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/migrate"
)

func newDBLintCmd(f *Factory) *cobra.Command {
	var dir, output string
	var strict bool
	cmd := &cobra.Command{
		Use:   "lint [FILE.sql ...]",
		Short: "Check undo scripts with the PostgreSQL grammar: destructive statements, locks, re-run safety",
		Long: `Parse every undo script of --dir (or the files given) with PostgreSQL's own
grammar (libpg_query) and report: destructive statements; UPDATE … SET col =
NULL before DROP COLUMN col (a full-table rewrite the drop makes pointless);
DROP without IF EXISTS; statements that take ACCESS EXCLUSIVE locks; statements
that cannot run in a transaction; migrations without an undo script (errors).
Exits 5 on errors, and on warnings with --strict.`,
		Example: `  rollback db lint --dir migrations
  rollback db lint migrations/rollback/V1_2_0__Undo__add_transaction_category.sql --strict`,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(output)
			if err != nil {
				return err
			}
			var fs []migrate.Finding
			if len(args) > 0 {
				for _, a := range args {
					b, err := os.ReadFile(a)
					if err != nil {
						return usageError{err: err}
					}
					got, err := migrate.LintScript(a, string(b))
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
				if fs, err = migrate.LintSource(src); err != nil {
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
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	return cmd
}
