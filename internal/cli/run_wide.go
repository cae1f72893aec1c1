package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/server"
)

// runWide is `rollback run --selector`: every matching workload of the
// namespace rolled back as one incident.
func runWide(ctx context.Context, f *Factory, o *RunOptions) error {
	format, err := outputFormat(o.Output)
	if err != nil {
		return err
	}
	if o.Parallel <= 0 {
		return usagef("--parallel must be positive, got %d", o.Parallel)
	}
	if o.ToRevision != 0 || o.Decide.Severity != "" || o.DryRun != "none" || o.PagerDutyIncident != "" {
		return usagef("--selector takes --timeout, --parallel, --yes and -o; each workload goes to its own last good revision")
	}
	if c, err := f.remote(); c != nil || err != nil {
		if err != nil {
			return err
		}
		if f.Namespace == "" {
			return usagef("with --server, --selector needs -n NAMESPACE")
		}
		return remoteRun(ctx, f, c, func() (*server.RunAccepted, error) {
			return c.Run(ctx, server.RunRequest{Selector: o.Selector, Namespace: f.Namespace, Timeout: o.Timeout.String()})
		})
	}
	ns := f.namespaceOrDefault()
	cs, err := f.bulkClient("")
	if err != nil {
		return err
	}
	if !o.Yes && f.IO.CanPrompt() {
		if !askYes(f.IO, fmt.Sprintf("Roll back every workload matching %s in %s?", o.Selector, ns)) {
			return engine.ErrAborted
		}
	}
	s, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	pr := newRenderer(f.IO, f.Now)
	out, err := f.engine(s, pr).Wide(ctx, engine.WideRequest{Namespace: ns, Selector: o.Selector, Context: f.Context, Client: cs,
		Parallel: o.Parallel, Timeout: o.Timeout})
	if out == nil {
		return err
	}
	if format != "" {
		if perr := printStructured(f.IO.Out, format, out); perr != nil {
			return perr
		}
	} else {
		tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "WORKLOAD\tSTATE\tFROM\tTO\tERROR")
		for _, it := range out.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Workload, it.State, orNone(it.Bad), orNone(it.Good), it.Error)
		}
		tw.Flush()
		fmt.Fprintf(f.IO.Out, "Incident %s: 'rollback status %s' shows its checklist.\n", out.Incident, out.Incident)
	}
	if err != nil {
		return fmt.Errorf("%w; incident %s is open: 'rollback resume %s' finishes the rest", err, out.Incident, out.Incident)
	}
	return nil
}
