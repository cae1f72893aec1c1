// Package engine is rollback's application layer: the use cases every entry
// point shares. It plans a rollback, walks the decision it is given, opens
// the incident, executes (or resumes) the journaled runbook with the
// service held, and rolls back on a detector's breach. The command line
// (internal/cli) and a long-running server call it; it never imports them.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// Engine runs rollbacks against one store.
type Engine struct {
	Store  store.Store
	Config *config.Config // nil without a rollback.yaml
	Getenv func(string) string
	Now    func() time.Time
	// StateDir returns rollback's directory for name (snapshots), created.
	StateDir func(name string) (string, error)
	// Holder names this process to a second run (host:pid by default).
	Holder string
	// LeaseTTL is how long a run's lease outlives its last renewal
	// (default the executor's, a minute): a server sets it short so
	// another replica resumes a dead one's run soon.
	LeaseTTL time.Duration
	// Events receives progress; may be nil.
	Events progress.Func
	// Client returns the Kubernetes client for a kubeconfig context; a
	// resumed incident uses the context it recorded.
	Client func(kubeContext string) (kubernetes.Interface, error)
	// Helm returns a namespace's Helm releases for a kubeconfig context
	// (nil: Helm-managed workloads are undone as plain workloads).
	Helm func(kubeContext, namespace string) (kube.HelmReleases, error)
}

// Workload is what a rollback acts on: a workload of a cluster, and the
// configured service it is, if any.
type Workload struct {
	Service string // configured service name, "" for KIND/NAME
	Target  kube.Target
	Context string // kubeconfig context ("" for the current one)
	Client  kubernetes.Interface
}

// Key is the workload's canonical service key: the configured service's
// name, else NAMESPACE/KIND/NAME. Blocks, incidents and gates use it.
func (w *Workload) Key() string {
	if w.Service != "" {
		return w.Service
	}
	return w.Target.String()
}

// LeaseKey is the name the run's lease and lock hold: the workload itself,
// however it was named.
func (w *Workload) LeaseKey() string { return w.Target.String() }

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) getenv(k string) string {
	if e.Getenv != nil {
		return e.Getenv(k)
	}
	return os.Getenv(k)
}

// service is the configured service, or nil.
func (e *Engine) service(name string) *config.Service {
	if e.Config == nil || name == "" {
		return nil
	}
	return e.Config.Services[name]
}

// Executor is a runbook executor on the engine's store.
func (e *Engine) Executor() *runbook.Executor {
	holder := e.Holder
	if holder == "" {
		holder = HolderName()
	}
	return &runbook.Executor{Store: e.Store, Holder: holder, Now: e.Now, Events: e.Events, LeaseTTL: e.LeaseTTL}
}

// HolderName is this process as a lease holder: host:pid.
func HolderName() string {
	h, _ := os.Hostname()
	return h + ":" + strconv.Itoa(os.Getpid())
}

// Hold takes the service for ex, taking over a lease left by a dead run of
// this machine.
func Hold(ctx context.Context, ex *runbook.Executor, service string) (func(), error) {
	if ex.Holds(service) {
		return func() {}, nil
	}
	release, err := ex.Hold(ctx, service)
	var le *store.LeaseError
	if errors.As(err, &le) && deadLocalHolder(le.Lease.Holder) {
		_ = ex.Store.ReleaseLease(ctx, le.Lease.Service, le.Lease.Holder)
		release, err = ex.Hold(ctx, service)
	}
	return release, err
}

// deadLocalHolder: the lease was held by a process of this host that no
// longer runs (a run killed before it could release it).
func deadLocalHolder(holder string) bool {
	host, pid, ok := strings.Cut(holder, ":")
	me, _ := os.Hostname()
	n, err := strconv.Atoi(pid)
	if !ok || host != me || err != nil || n <= 0 {
		return false
	}
	return syscall.Kill(n, 0) != nil
}

// ErrOpenIncident: the service has an unfinished rollback incident.
var ErrOpenIncident = errors.New("an earlier rollback is unfinished")

// OpenIncident is the service's open incident, or nil.
func (e *Engine) OpenIncident(ctx context.Context, service string) (*store.Incident, error) {
	incs, err := e.Store.ListIncidents(ctx, service)
	if err != nil {
		return nil, err
	}
	for i := range incs {
		if incs[i].Status == store.StatusOpen {
			return &incs[i], nil
		}
	}
	return nil, nil
}

// PlanRollback reads the workload's history and chooses the target revision
// (see kube.PlanUndo). Read-only. For a blue/green Service the standby
// colour must be able to take the traffic, or the plan is refused before
// anything is recorded.
func PlanRollback(ctx context.Context, w *Workload, toRevision int64) (*kube.Plan, error) {
	h, err := kube.GetHistory(ctx, w.Client, w.Target)
	if err != nil {
		return nil, err
	}
	return PlanRollbackFrom(ctx, w, h, toRevision)
}

// PlanRollbackFrom is PlanRollback from a history already read.
func PlanRollbackFrom(ctx context.Context, w *Workload, h *kube.History, toRevision int64) (*kube.Plan, error) {
	p, err := kube.PlanUndo(h, toRevision)
	if err != nil || !h.BlueGreen() || p.NoOp {
		return p, err
	}
	if err := kube.CheckStandby(ctx, w.Client, h, p.To); err != nil {
		return nil, err
	}
	return p, nil
}

func openIncidentError(open *store.Incident, key string) error {
	return fmt.Errorf("%w: incident %s for %s is still open (opened %s); finish it with 'rollback resume %s' (or pass --resume), see 'rollback status %s'; if it was finished by hand, 'rollback close %s --reason ...'",
		ErrOpenIncident, open.ID, key, open.OpenedAt.UTC().Format(time.RFC3339), open.ID, open.ID, open.ID)
}

// CloseByHand closes an incident whose run will not be finished (a person
// did the rest by hand), holding its service's lease while it does: a
// live run of the service refuses it (ErrLeaseHeld, saying who runs).
// changed is false when the incident was closed already.
func (e *Engine) CloseByHand(ctx context.Context, id, reason, by string) (inc *store.Incident, changed bool, err error) {
	key := ""
	if w, err := e.wideOf(ctx, id); err != nil {
		return nil, false, err
	} else if w != nil {
		key = WideService(w.Namespace, w.Selector)
		if sel, err := labels.Parse(w.Selector); err == nil {
			key = WideService(w.Namespace, sel.String())
		}
	} else if t, err := e.target(ctx, id); err == nil {
		key = kube.Target{Namespace: t.Namespace, Name: t.Name, Kind: t.Kind}.String()
	}
	if key != "" { // an incident that never planned a target holds nothing
		release, err := Hold(ctx, e.Executor(), key)
		if err != nil {
			return nil, false, err
		}
		defer release()
	}
	return incident.CloseByHand(ctx, e.Store, id, reason, by, e.now())
}

// Attach gives a workload's clients the adapter its kind works through: a
// load balancer's listener API (from the service's loadBalancer config),
// a namespace's Helm releases (for the workload's kubeconfig context).
// The CLI, the server and resume build workloads with it, so no caller
// knows which kinds need what; the target stays an identity.
func (e *Engine) Attach(ctx context.Context, w *Workload) error {
	lb, hr := kube.AdaptersOf(w.Client)
	switch w.Target.Of() {
	case kube.KindLoadBalancer:
		if lb != nil {
			return nil
		}
		svc := e.service(w.Service)
		if w.Service == "" {
			return fmt.Errorf("%s: a load balancer's listener is rolled back as the service that configures it (loadBalancer: in rollback.yaml); pass the service's name", w.Target.Ref())
		}
		if svc == nil || svc.LoadBalancer == nil {
			return fmt.Errorf("%s: no loadBalancer configured for service %q in rollback.yaml", w.Target.Ref(), w.Service)
		}
		lb, err := NewLoadBalancer(ctx, svc.LoadBalancer)
		if err != nil {
			return fmt.Errorf("services.%s.loadBalancer: %w", w.Service, err)
		}
		w.Client = kube.WithAdapters(w.Client, lb, nil)
	case kube.KindHelm:
		if hr != nil {
			return nil
		}
		if e.Helm == nil {
			return fmt.Errorf("%s: no Helm client", w.Target.Ref())
		}
		hr, err := e.Helm(w.Context, w.Target.Namespace)
		if err != nil {
			return err
		}
		w.Client = kube.WithAdapters(w.Client, nil, hr)
	}
	return nil
}
