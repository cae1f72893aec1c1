package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/helm"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/store"
)

// Factory builds what commands need, lazily, from the global flags.
type Factory struct {
	IO  *IOStreams
	Now func() time.Time

	ConfigPath string
	Kubeconfig string
	Context    string
	Namespace  string
	StorePath  string
	// Server is a 'rollback serve' URL (--server): commands work through
	// its API.
	Server string

	// NewClient builds the Kubernetes client; nil means client-go's.
	NewClient func(*rest.Config) (kubernetes.Interface, error)

	cfg       *config.Config
	cfgErr    error
	cfgLoaded bool
}

// Config returns the loaded rollback.yaml, or nil when there is none.
func (f *Factory) Config() (*config.Config, error) {
	if f.cfgLoaded {
		return f.cfg, f.cfgErr
	}
	f.cfgLoaded = true
	path, err := config.Find(f.ConfigPath, f.IO.Getenv)
	if errors.Is(err, config.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		f.cfgErr = usageError{err: err}
		return nil, f.cfgErr
	}
	f.cfg, f.cfgErr = config.Load(path)
	return f.cfg, f.cfgErr
}

// Workload is a resolved SERVICE argument.
type Workload = engine.Workload

// Resolve turns a SERVICE argument (a configured service, or KIND/NAME as
// kubectl takes it) into a workload and a client (engine.Locate; flags win
// over the config, which wins over the kubeconfig's defaults).
func (f *Factory) Resolve(arg string) (*Workload, error) {
	_, _, isRef, err := engine.ParseRef(arg)
	if err != nil {
		return nil, usageError{err: err}
	}
	cfg, err := f.Config()
	if err != nil && !isRef {
		return nil, err
	}
	w, err := engine.Locate(cfg, arg, engine.Where{Namespace: f.Namespace, Context: f.Context, DefaultNamespace: f.kubeconfigNamespace})
	if err != nil {
		return nil, usageError{err: err}
	}
	rc, err := f.clientConfig(w.Context).ClientConfig()
	switch {
	case err == nil:
		rc.QPS, rc.Burst = 50, 100
		rc.UserAgent = "rollback/" + Version
		if w.Client, err = f.newClient(rc); err != nil {
			return nil, err
		}
	case w.Target.Kind != kube.KindLoadBalancer: // a listener needs no cluster
		return nil, usagef("kubeconfig: %v; pass --kubeconfig or set $KUBECONFIG", err)
	}
	if err := f.attach(w); err != nil {
		if w.Target.Kind == kube.KindLoadBalancer {
			if !isRef && cfg != nil {
				return nil, usagef("%s: %v", cfg.Path, err)
			}
			return nil, usageError{err: err}
		}
		return nil, err
	}
	return w, nil
}

func (f *Factory) newClient(rc *rest.Config) (kubernetes.Interface, error) {
	newClient := f.NewClient
	if newClient == nil {
		newClient = kube.NewClients
	}
	cs, err := newClient(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}

// clientFor is the client of a kubeconfig context (a resumed incident's).
func (f *Factory) clientFor(kubeContext string) (kubernetes.Interface, error) {
	return f.clientQPS(kubeContext, 50, 100)
}

// attach gives the workload's target the adapter its kind needs, as the
// engine does for every entry point (engine.Attach).
func (f *Factory) attach(w *engine.Workload) error {
	return (&engine.Engine{Config: f.cfg, Helm: f.helmFor}).Attach(context.Background(), w)
}

// bulkClient is a client for rolling back many workloads at once (a wide
// rollback): each needs a handful of requests, and client-go's rate
// limiter would otherwise queue them behind each other.
func (f *Factory) bulkClient(kubeContext string) (kubernetes.Interface, error) {
	return f.clientQPS(kubeContext, 500, 1000)
}

func (f *Factory) clientQPS(kubeContext string, qps float32, burst int) (kubernetes.Interface, error) {
	if f.Context != "" {
		kubeContext = f.Context
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: f.Kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, usagef("kubeconfig: %v; pass --kubeconfig or set $KUBECONFIG", err)
	}
	rc.QPS, rc.Burst = qps, burst
	rc.UserAgent = "rollback/" + Version
	return f.newClient(rc)
}

// helmFor opens a namespace's Helm releases with the kubeconfig's
// settings (Helm's SDK builds its own clients from them).
func (f *Factory) helmFor(kubeContext, namespace string) (kube.HelmReleases, error) {
	if f.Context != "" {
		kubeContext = f.Context
	}
	kc, kctx, ns := f.Kubeconfig, kubeContext, namespace
	flags := &genericclioptions.ConfigFlags{KubeConfig: &kc, Context: &kctx, Namespace: &ns}
	return helm.New(flags, namespace)
}

// serviceConfig returns the configured service, or nil (KIND/NAME, or no
// rollback.yaml).
func (f *Factory) serviceConfig(name string) *config.Service {
	cfg, err := f.Config()
	if err != nil || cfg == nil || name == "" {
		return nil
	}
	return cfg.Services[name]
}

// engine is the rollback engine on store s, reporting progress to r.
func (f *Factory) engine(s store.Store, r *renderer) *engine.Engine {
	cfg, _ := f.Config()
	e := &engine.Engine{Store: s, Config: cfg, Getenv: f.IO.Getenv, Now: f.Now, StateDir: f.statePath, Client: f.clientFor, Helm: f.helmFor}
	if r != nil {
		e.Events = r.Event
	}
	return e
}

// configuredServiceFor is the configured service whose workload is
// ns/kind/name (engine.ServiceFor).
func (f *Factory) configuredServiceFor(ns string, kind kube.Kind, name string) string {
	cfg, _ := f.Config()
	return engine.ServiceFor(cfg, ns, kind, name)
}

// ServiceKey is the canonical key of a SERVICE argument without asking the
// cluster (for gate, block, unblock in CI): a configured name as it is;
// KIND/NAME as the configured service naming it, else NAMESPACE/KIND/NAME
// (-n, or the kubeconfig's namespace).
func (f *Factory) ServiceKey(arg string) (string, error) {
	// A key as rollback writes it (NAMESPACE/KIND/NAME, shown by status
	// and in incidents) is taken as it is.
	if ns, ref, ok := strings.Cut(arg, "/"); ok && strings.Count(arg, "/") == 2 && engine.ObjectName(ns) {
		if kind, name, isRef, err := parseWorkloadArg(ref); err == nil && isRef {
			if svc := f.configuredServiceFor(ns, kind, name); svc != "" {
				return svc, nil
			}
			return kube.Target{Namespace: ns, Name: name, Kind: kind}.String(), nil
		}
	}
	kind, name, isRef, err := parseWorkloadArg(arg)
	if err != nil {
		return "", err
	}
	if !isRef {
		return name, nil
	}
	if svc := f.configuredServiceFor(f.Namespace, kind, name); svc != "" {
		return svc, nil
	}
	return kube.Target{Namespace: f.namespaceOrDefault(), Name: name, Kind: kind}.String(), nil
}

// namespaceOrDefault is -n, else the kubeconfig context's namespace, else
// "default" (as kubectl).
func (f *Factory) namespaceOrDefault() string {
	if f.Namespace != "" {
		return f.Namespace
	}
	if ns, err := f.kubeconfigNamespace(f.Context); err == nil && ns != "" {
		return ns
	}
	return "default"
}

// clientConfig is the kubeconfig (--kubeconfig, else $KUBECONFIG and
// ~/.kube/config) at a context.
func (f *Factory) clientConfig(kubeContext string) clientcmd.ClientConfig {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: f.Kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext})
}

// kubeconfigNamespace is the context's namespace in the kubeconfig.
func (f *Factory) kubeconfigNamespace(kubeContext string) (string, error) {
	ns, _, err := f.clientConfig(kubeContext).Namespace()
	return ns, err
}

// parseWorkloadArg is engine.ParseRef, its refusal a usage error.
func parseWorkloadArg(arg string) (kind kube.Kind, name string, isRef bool, err error) {
	if kind, name, isRef, err = engine.ParseRef(arg); err != nil {
		err = usageError{err: err}
	}
	return kind, name, isRef, err
}
