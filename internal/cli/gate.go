package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/rollback-dev/rollback/internal/admission"
	"github.com/rollback-dev/rollback/internal/client"
	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/store"
)

// ErrBlocked means the version is blocked (rollback gate).
var ErrBlocked = errors.New("version is blocked")

// openStore opens --store, $ROLLBACK_STORE, or the state directory's SQLite file.
func (f *Factory) openStore(ctx context.Context) (store.Store, error) {
	if c, err := f.remote(); c != nil || err != nil {
		if err != nil {
			return nil, err
		}
		return client.Store{C: c}, nil
	}
	loc := cmp.Or(f.StorePath, f.IO.Getenv("ROLLBACK_STORE"))
	if loc == "" {
		var err error
		if loc, err = f.statePath("rollback.db"); err != nil {
			return nil, err
		}
	}
	return store.Open(ctx, loc)
}

func newBlockCmd(f *Factory) *cobra.Command {
	var reason, incident string
	cmd := &cobra.Command{
		Use:   "block SERVICE VERSION --reason TEXT",
		Short: "Block a version from being deployed (checked by 'rollback gate' and the admission policy)",
		Example: `  rollback block transaction-service v1.2.0 --reason "P1: 5xx spike" --incident INC-20261126-1
  rollback block deployment/transaction-service v1.2.0 --reason "corrupts categories"`,
		Args: exactArgs(2, "SERVICE and VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why %s must not be deployed", args[1])
			}
			key, err := f.ServiceKey(args[0])
			if err != nil {
				return err
			}
			s, err := f.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.SetBlock(cmd.Context(), store.Block{Service: key, Version: args[1], Incident: incident, Reason: reason, At: f.Now()}); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "%s %s is blocked: %s\n", key, args[1], reason)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the version must not be deployed (required)")
	cmd.Flags().StringVar(&incident, "incident", "", "the incident that blocked it")
	return cmd
}

func newUnblockCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:     "unblock SERVICE VERSION",
		Short:   "Allow a blocked version again (once its root cause is resolved)",
		Example: "  rollback unblock transaction-service v1.2.0",
		Args:    exactArgs(2, "SERVICE and VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := f.ServiceKey(args[0])
			if err != nil {
				return err
			}
			s, err := f.openStore(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.DeleteBlock(cmd.Context(), key, args[1]); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return usageError{err: err}
				}
				return err
			}
			fmt.Fprintf(f.IO.Out, "%s %s is no longer blocked\n", key, args[1])
			return nil
		},
	}
}

func newGateCmd(f *Factory) *cobra.Command {
	var policy bool
	cmd := &cobra.Command{
		Use:   "gate SERVICE [VERSION]",
		Short: "For CI: fail when a version is blocked; or render an admission policy that rejects blocked images",
		Long: `'rollback gate SERVICE VERSION' exits 8, naming the incident and the reason,
when the version is blocked ('rollback block', or a rollback that blocked it),
and 0 otherwise: put it in the deploy pipeline before the deploy step.

'rollback gate SERVICE --admission-policy' prints a Kubernetes
ValidatingAdmissionPolicy and its binding that make the API server refuse
Deployments and Pods in the service's namespace using a blocked image (the
service's image repository with a blocked version as tag). Apply it with
kubectl apply -f -.`,
		Example: `  rollback gate transaction-service v1.2.0            # in CI, before deploying
  rollback gate deployment/transaction-service -n payments --admission-policy | kubectl apply -f -`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if policy {
				if len(args) != 1 {
					return usageError{err: fmt.Errorf("gate --admission-policy expects one SERVICE"), showHelp: true}
				}
				return renderPolicy(ctx, f, args[0])
			}
			if len(args) != 2 {
				return usageError{err: fmt.Errorf("gate expects SERVICE and VERSION (or --admission-policy)"), showHelp: true}
			}
			key, err := f.ServiceKey(args[0])
			if err != nil {
				return err
			}
			s, err := f.openStore(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			b, err := s.GetBlock(ctx, key, args[1])
			if errors.Is(err, store.ErrNotFound) {
				fmt.Fprintf(f.IO.Out, "%s %s is not blocked\n", key, args[1])
				return nil
			}
			if err != nil {
				return err
			}
			inc := b.Incident
			if inc == "" {
				inc = "no incident"
			}
			fmt.Fprintf(f.IO.Out, "BLOCKED: %s %s (%s) since %s: %s\n", b.Service, b.Version, inc, b.At.UTC().Format("2006-01-02T15:04:05Z"), b.Reason)
			return fmt.Errorf("%w: %s %s (%s): %s; unblock with 'rollback unblock %s %s' once the root cause is resolved",
				ErrBlocked, b.Service, b.Version, inc, b.Reason, b.Service, b.Version)
		},
	}
	cmd.Flags().BoolVar(&policy, "admission-policy", false, "print a ValidatingAdmissionPolicy and binding rejecting the blocked images")
	return cmd
}

// renderPolicy writes the admission policy for the service's blocks: a
// ValidatingAdmissionPolicy whose blocked images come from a ConfigMap
// parameter (data, never code: no version string can change what the
// policy does), its binding, and that ConfigMap.
func renderPolicy(ctx context.Context, f *Factory, service string) error {
	w, err := f.Resolve(service)
	if err != nil {
		return err
	}
	d, err := w.Client.AppsV1().Deployments(w.Target.Namespace).Get(ctx, w.Target.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("deployment/%s in %s: %w", w.Target.Name, w.Target.Namespace, err)
	}
	s, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	blocks, err := s.ListBlocks(ctx, w.Key())
	if err != nil {
		return err
	}
	var refs []image.Ref
	for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
		if r, err := image.Parse(c.Image); err == nil {
			refs = append(refs, r)
		}
	}
	images, why := admission.BlockedImages(refs, blocks)
	if len(images) == 0 {
		return usagef("no version of %s is blocked; block one with 'rollback block %s VERSION --reason ...'", w.Key(), service)
	}
	name := "rollback-blocked-" + w.Target.Namespace + "-" + w.Target.Name
	msg := fmt.Sprintf("blocked by rollback: %s; see 'rollback gate %s'", strings.Join(why, "; "), w.Key())
	pol, bind, params := admission.Policy(name, w.Target.Namespace, msg, images)
	for i, obj := range []any{pol, bind, params} {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(f.IO.Out, "---")
		}
		f.IO.Out.Write(b)
	}
	return nil
}
