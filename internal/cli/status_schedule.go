package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/rollback-dev/rollback/internal/schedule"
	"github.com/rollback-dev/rollback/internal/store"
)

// scheduleTimeout bounds reading what is deployed for the schedule.
const scheduleTimeout = 10 * time.Second

// testingSchedule is the runbook's testing schedule per configured
// service: the server's with --server, else from the store, the cluster
// (the deployed release) and the migrations directory.
func testingSchedule(ctx context.Context, f *Factory, s store.Store) ([]schedule.Item, error) {
	if c, err := f.remote(); c != nil || err != nil {
		if err != nil {
			return nil, err
		}
		return c.Schedule(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, scheduleTimeout)
	defer cancel()
	return f.engine(s, nil).Schedule(ctx, f.resolveAny)
}

func printSchedule(f *Factory, items []schedule.Item) {
	if len(items) == 0 {
		return
	}
	fmt.Fprintln(f.IO.Out, "\nRollback testing schedule:")
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tTEST\tHOW OFTEN\tLAST RUN\tNEXT DUE\tSTATE")
	for _, it := range items {
		last := "never"
		if it.Last != nil {
			res := "passed"
			if !it.Last.OK {
				res = "failed"
			}
			last = it.Last.At.UTC().Format(time.RFC3339) + " " + res
		}
		rule := it.Rule
		if it.Subject != "" {
			rule += " (" + it.Subject + ")"
		}
		due := "next " + it.Rule
		if !it.Due.IsZero() {
			due = it.Due.UTC().Format(time.RFC3339)
		}
		state := it.State
		if it.Note != "" {
			state += ": " + it.Note
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.Service, it.Kind, rule, last, due, state)
	}
	tw.Flush()
}
