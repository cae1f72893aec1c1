package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/progress"
)

func newDBDrillCmd(f *Factory) *cobra.Command {
	o := &DBOptions{}
	var keep bool
	var logPath string
	cmd := &cobra.Command{
		Use:   "drill",
		Short: "On a clone of the database, prove each recent and pending migration's undo round trip",
		Long: `The runbook's "test down migration in staging against a copy of prod data":
clone the database (CREATE DATABASE … TEMPLATE, or pg_dump/pg_restore when
others are connected), then on the clone only undo, re-apply and undo every
applied migration newer than --to-version (default: the newest one), and apply
and undo every pending one, proving the schema after each undo equals the
schema before. Reports the data each undo destroys. Results are appended to
the drill log, where 'down migration tested' is looked up later.`,
		Example: `  rollback db drill --dir migrations
  rollback db drill --dir migrations --to-version 1.1.0 -o json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.open(cmd.Context(), f, true)
			if err != nil {
				return err
			}
			s.Close() // the drill clones; our own connection would block TEMPLATE
			var to migrate.Version
			if o.To != "" {
				if to, err = migrate.ParseVersion(o.To); err != nil {
					return usagef("--to-version: %v", err)
				}
			}
			r := newRenderer(f.IO, f.Now)
			ev := progress.Func(r.Event)
			var res *migrate.DrillResult
			err = ev.Run(f.Now, "db-drill", func() (string, error) {
				var err error
				res, err = s.Drill(cmd.Context(), migrate.DrillOptions{To: to, Keep: keep, Now: f.Now,
					Log: func(m string) { ev.Emit(f.Now(), "db-drill", progress.Progress, m, nil) }})
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("%d migration(s) drilled on clone %s", len(res.Steps), res.Clone), nil
			})
			if err != nil {
				return err
			}
			if logPath == "" {
				if logPath, err = f.statePath("drills.jsonl"); err != nil {
					return err
				}
			}
			if err := (migrate.DrillLog{Path: logPath}).Append(res); err != nil {
				return err
			}
			if o.Output != "" {
				if err := printStructured(f.IO.Out, o.Output, res); err != nil {
					return err
				}
			} else {
				for _, st := range res.Steps {
					mark := "pass"
					if !st.Passed {
						mark = "FAIL"
					}
					kind := "pending"
					if st.Applied {
						kind = "applied"
					}
					fmt.Fprintf(f.IO.Out, "%s  %s (%s)", mark, st.Version, kind)
					for _, l := range st.DataLoss {
						fmt.Fprintf(f.IO.Out, "; undo destroys %d row(s) of %s", l.Rows, strings.TrimSuffix(l.Table+"."+l.Column, "."))
					}
					if st.Error != "" {
						fmt.Fprintf(f.IO.Out, "; %s", st.Error)
					}
					for _, d := range st.Diff {
						fmt.Fprintf(f.IO.Out, "\n      %s", d)
					}
					if st.Sample != "" {
						fmt.Fprintf(f.IO.Out, "\n      after the release: %s", st.Sample)
					}
					for _, m := range st.Merged {
						fmt.Fprintf(f.IO.Out, "\n      undo gave back %s", m)
					}
					fmt.Fprintln(f.IO.Out)
				}
			}
			if !res.Passed {
				return fmt.Errorf("%w: a down migration did not restore the schema (see above)", ErrVerifyFailed)
			}
			return nil
		},
	}
	addDBFlags(cmd, o, false)
	cmd.Flags().StringVar(&o.To, "to-version", "", "drill every applied migration newer than this (default: the newest one)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the clone database for inspection")
	cmd.Flags().StringVar(&logPath, "log", "", "drill log (default: the state directory's drills.jsonl)")
	return cmd
}
