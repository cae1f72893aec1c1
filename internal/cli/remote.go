package cli

import (
	"cmp"
	"context"
	"fmt"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-dev/rollback/internal/client"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/server"
	"github.com/rollback-dev/rollback/internal/store"
)

// remote is the --server client, or nil without --server.
func (f *Factory) remote() (*client.Client, error) {
	url := cmp.Or(f.Server, f.IO.Getenv("ROLLBACK_SERVER"))
	if url == "" {
		return nil, nil
	}
	c, err := client.New(url, f.IO.Getenv("ROLLBACK_SERVER_TOKEN"))
	if err != nil {
		return nil, usageError{err: err}
	}
	return c, nil
}

// remoteRun is `rollback run --server`: the server runs it; the command
// follows the incident until its run ends and prints its checklist.
func remoteRun(ctx context.Context, f *Factory, c *client.Client, start func() (*server.RunAccepted, error)) error {
	acc, err := start()
	if err != nil {
		return err
	}
	if acc.Incident == "" {
		if acc.Error != "" {
			return fmt.Errorf("server: %s", acc.Error)
		}
		fmt.Fprintf(f.IO.Out, "The server accepted the rollback of %s; 'rollback status --server ...' shows its incident.\n", acc.Service)
		return nil
	}
	fmt.Fprintf(f.IO.ErrOut, "%s  incident %s opened on the server; following it\n", f.Now().UTC().Format(time.RFC3339), acc.Incident)
	v, err := c.Wait(ctx, acc.Incident, time.Second, 10*time.Second)
	if v != nil {
		printChecklist(f, v)
	}
	if err != nil {
		return fmt.Errorf("%w; 'rollback resume %s --server ...' continues it", err, acc.Incident)
	}
	if v.Incident.Status != store.StatusClosed {
		return fmt.Errorf("incident %s is %s", acc.Incident, v.Incident.Status)
	}
	return nil
}

// printChecklist is an incident's checklist, as 'rollback status ID'.
func printChecklist(f *Factory, v *incident.View) {
	inc := v.Incident
	fmt.Fprintf(f.IO.Out, "%s  %s  %s → %s  %s\n", inc.ID, inc.Service, orNone(inc.BadVersion), orNone(inc.GoodVersion), inc.Status)
	for i, it := range v.Checklist {
		fmt.Fprintf(f.IO.Out, "%2d. %-55s %-12s %s\n", i+1, it.Text, it.Status, it.Evidence)
	}
}

func newApproveCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "approve INCIDENT",
		Short: "Run a proposed rollback (opened by an alert for a service without automation.auto) as your decision",
		Long: `A firing alert for a service without automation.auto opens a proposed
incident with the decision flowchart's answer. 'rollback approve' runs it:
the new incident's rationale records who approved which proposal.`,
		Example: `  rollback approve INC-20261127-3 --server https://rollback.example.com
  rollback approve INC-20261127-3            # against the local store`,
		Args: exactArgs(1, "one INCIDENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := f.remote()
			if err != nil {
				return err
			}
			if c != nil {
				return remoteRun(ctx, f, c, func() (*server.RunAccepted, error) { return c.Approve(ctx, args[0]) })
			}
			s, err := f.openStore(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			prop, _, err := loadIncident(ctx, s, args[0])
			if err != nil {
				return err
			}
			w, err := f.resolveAny(ctx, prop.Service)
			if err != nil {
				return err
			}
			out, err := f.engine(s, newRenderer(f.IO, f.Now)).Approve(ctx, args[0], "cli:"+whoAmI(), w, nil)
			if err != nil {
				return err
			}
			printResumed(f, out)
			return nil
		},
	}
}

func newDeclineCmd(f *Factory) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     "decline INCIDENT --reason TEXT",
		Short:   "End a proposed rollback without rolling back",
		Example: `  rollback decline INC-20261127-3 --reason "hotfix deploying in 5 minutes"`,
		Args:    exactArgs(1, "one INCIDENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why %s is not rolled back", args[0])
			}
			c, err := f.remote()
			if err != nil {
				return err
			}
			if c != nil {
				err = c.Decline(ctx, args[0], reason)
			} else {
				var s store.Store
				if s, err = f.openStore(ctx); err != nil {
					return err
				}
				defer s.Close()
				err = f.engine(s, nil).Decline(ctx, args[0], "cli:"+whoAmI(), reason)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "%s declined: %s\n", args[0], reason)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the proposal is not rolled back (required)")
	return cmd
}

// whoAmI is the person at the keyboard: user@host:pid.
func whoAmI() string {
	by := engine.HolderName()
	if u, err := user.Current(); err == nil {
		by = u.Username + "@" + by
	}
	return by
}
