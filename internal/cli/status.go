package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/store"
)

func newStatusCmd(f *Factory) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [INCIDENT]",
		Short: "Incidents and reviews due; or one incident's checklist with evidence and timings",
		Long: `Without INCIDENT: the open incidents, and closed ones whose post-incident
review is due (within 24 hours) or overdue (48 hours after closing); then
the runbook's rollback testing schedule per configured service (dry run
every release, migration drill every migration, chaos drill quarterly, fire
drill semi-annually): last run and next due ('rollback serve' runs them;
-o json leaves it out, GET /api/v1/schedule has it).
With INCIDENT: the runbook's 11-item checklist, each item with its status,
evidence, how long it took and whether it overran its budget, and the time
to recover.`,
		Example: `  rollback status
  rollback status INC-20261126-1 -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(output)
			if err != nil {
				return err
			}
			if len(args) > 1 {
				return usagef("status takes at most one INCIDENT")
			}
			s, err := f.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			if len(args) == 1 {
				return incidentStatus(cmd.Context(), f, s, args[0], format)
			}
			return listStatus(cmd.Context(), f, s, format)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	return cmd
}

func loadIncident(ctx context.Context, s store.Store, id string) (*store.Incident, []store.Event, error) {
	inc, err := s.GetIncident(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, usagef("no incident %s in the store; 'rollback status' lists them", id)
	}
	if err != nil {
		return nil, nil, err
	}
	evs, err := s.Events(ctx, id)
	return inc, evs, err
}

func incidentStatus(ctx context.Context, f *Factory, s store.Store, id, format string) error {
	inc, evs, err := loadIncident(ctx, s, id)
	if err != nil {
		return err
	}
	items := incident.Checklist(inc, evs)
	ttr, recovered := incident.TimeToRecover(inc, evs)
	if format != "" {
		v := map[string]any{"incident": inc, "checklist": items, "reviewDue": incident.ReviewDue(inc), "review": incident.ReviewState(inc, evs, f.Now())}
		if recovered {
			v["timeToRecoverSeconds"] = ttr.Seconds()
		}
		return printStructured(f.IO.Out, format, v)
	}
	fmt.Fprintf(f.IO.Out, "%s  %s  %s → %s  %s, opened %s\n", inc.ID, inc.Service, orNone(inc.BadVersion), orNone(inc.GoodVersion), inc.Status, inc.OpenedAt.UTC().Format(time.RFC3339))
	if p := incident.ReconcilerPaused(evs); p != "" {
		fmt.Fprintf(f.IO.Out, "WARNING: GitOps reconciler paused: %s\n", p)
	}
	if recovered {
		fmt.Fprintf(f.IO.Out, "time to recover: %s\n", fmtDur(ttr))
	}
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tITEM\tSTATUS\tTOOK\tEVIDENCE")
	for i, it := range items {
		took := ""
		if it.Took > 0 {
			took = fmtDur(it.Took)
		}
		if it.Overrun != "" {
			took += " OVER BUDGET"
		}
		fmt.Fprintf(tw, "%d.\t%s\t%s\t%s\t%s\n", i+1, it.Text, it.Status, took, it.Evidence)
	}
	tw.Flush()
	fmt.Fprintf(f.IO.Out, "post-incident review: %s (due %s)\n", incident.ReviewState(inc, evs, f.Now()), incident.ReviewDue(inc).UTC().Format(time.RFC3339))
	return nil
}

func listStatus(ctx context.Context, f *Factory, s store.Store, format string) error {
	incs, err := s.ListIncidents(ctx, "")
	if err != nil {
		return err
	}
	type row struct {
		ID, Service, Status, Review string
		Due                         time.Time
		GitOpsPaused                string `json:",omitempty"`
	}
	rows := []row{}
	for i := range incs {
		inc := &incs[i]
		evs, err := s.Events(ctx, inc.ID)
		if err != nil {
			return err
		}
		review := incident.ReviewState(inc, evs, f.Now())
		paused := incident.ReconcilerPaused(evs)
		if inc.Status != store.StatusOpen && review != "due" && review != "overdue" && paused == "" {
			continue
		}
		rows = append(rows, row{inc.ID, inc.Service, string(inc.Status), review, incident.ReviewDue(inc), paused})
	}
	if format != "" {
		return printStructured(f.IO.Out, format, rows)
	}
	defer func() {
		if items, err := testingSchedule(ctx, f, s); err == nil {
			printSchedule(f, items)
		} else {
			fmt.Fprintf(f.IO.ErrOut, "warning: the testing schedule: %v\n", err)
		}
	}()
	if len(rows) == 0 {
		fmt.Fprintln(f.IO.Out, "No open incidents and no reviews due.")
		return nil
	}
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INCIDENT\tSERVICE\tSTATUS\tREVIEW\tREVIEW DUE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Service, r.Status, r.Review, r.Due.UTC().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.GitOpsPaused != "" {
			fmt.Fprintf(f.IO.Out, "WARNING: %s paused a GitOps reconciler: %s\n", r.ID, r.GitOpsPaused)
		}
	}
	return nil
}

func newReportCmd(f *Factory) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "report INCIDENT",
		Short: "Write a post-incident review draft in Markdown (due 48 hours after close)",
		Example: `  rollback report INC-20261126-1 > pir.md
  rollback report INC-20261126-1 --file pir.md`,
		Args: exactArgs(1, "one INCIDENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			inc, evs, err := loadIncident(cmd.Context(), s, args[0])
			if err != nil {
				return err
			}
			md := incident.Report(inc, evs, f.Now())
			if file == "" {
				_, err = fmt.Fprint(f.IO.Out, md)
				return err
			}
			if err := os.WriteFile(file, []byte(md), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.ErrOut, "review draft written to %s (due %s)\n", file, incident.ReviewDue(inc).UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "write the draft to this file instead of standard output")
	return cmd
}

func newCloseCmd(f *Factory) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "close INCIDENT --reason TEXT",
		Short: "Close an incident whose run will not finish (the rest was done by hand), so the service can be rolled back again",
		Long: `A 'rollback run' whose incident is still open refuses a new run of the
service and names the incident: finish it with 'rollback resume INCIDENT'
(or 'rollback run --resume'). When it cannot or need not finish (for
example verification keeps failing and the team took over by hand), close it
with a reason; who closed it and why are journaled and appear in the report.`,
		Example: `  rollback close INC-20261126-1 --reason "metrics verified by hand in Grafana; Prometheus was down"`,
		Args:    exactArgs(1, "one INCIDENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why %s is closed without finishing its run", args[0])
			}
			if c, err := f.remote(); c != nil || err != nil {
				if err != nil {
					return err
				}
				if err := c.Close(cmd.Context(), args[0], reason); err != nil {
					return err
				}
				fmt.Fprintf(f.IO.Out, "%s closed by hand on the server: %s\n", args[0], reason)
				return nil
			}
			s, err := f.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			if _, _, err := loadIncident(cmd.Context(), s, args[0]); err != nil {
				return err
			}
			// Refused while a run holds the incident's service (it would
			// finish what the person says is done).
			_, changed, err := f.engine(s, nil).CloseByHand(cmd.Context(), args[0], reason, whoAmI())
			if err != nil {
				return err
			}
			if !changed {
				fmt.Fprintf(f.IO.Out, "%s is already closed\n", args[0])
				return nil
			}
			fmt.Fprintf(f.IO.Out, "%s closed by hand: %s\n", args[0], reason)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the incident is closed without finishing its run (required)")
	return cmd
}
