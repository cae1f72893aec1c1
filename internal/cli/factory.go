package cli

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/helm"
	"github.com/rollback-dev/rollback/internal/kinds"
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
// kubectl takes it: deployment/, statefulset/, daemonset/) into a workload
// and a client. Flags win over the config, which wins over the
// kubeconfig's defaults.
func (f *Factory) Resolve(arg string) (*Workload, error) {
	w := &Workload{Context: f.Context}
	ns := f.Namespace
	kind, name, isRef, err := parseWorkloadArg(arg)
	if err != nil {
		return nil, err
	}
	if isRef {
		w.Target.Name, w.Target.Kind = name, kind
	} else {
		cfg, err := f.Config()
		if err != nil {
			return nil, err
		}
		if cfg == nil {
			return nil, usagef("unknown service %q: no rollback.yaml found (looked at --config, $ROLLBACK_CONFIG and ./rollback.yaml); pass deployment/NAME with -n NAMESPACE, or define the service in rollback.yaml", arg)
		}
		svc, ok := cfg.Services[arg]
		if !ok {
			return nil, usagef("unknown service %q in %s; configured services: %s; or pass deployment/NAME with -n NAMESPACE",
				arg, cfg.Path, strings.Join(cfg.ServiceNames(), ", "))
		}
		w.Service = arg
		w.Target.Name = svc.Kubernetes.Name
		if w.Target.Kind, err = kube.ParseKind(svc.Kubernetes.Kind); err != nil {
			return nil, usagef("%s: kubernetes.kind: %v", cfg.Path, err)
		}
		if svc.LoadBalancer != nil {
			// Blue/green at a load balancer: no cluster object, no
			// kubeconfig needed.
			w.Target.Kind, w.Target.Name = kube.KindLoadBalancer, arg
			if err := f.attach(w); err != nil {
				return nil, usagef("%s: %v", cfg.Path, err)
			}
		}
		w.Target.ColorLabel = svc.Kubernetes.ColorLabel
		if w.Context == "" {
			w.Context = svc.Kubernetes.Context
		}
		if ns == "" {
			ns = svc.Kubernetes.Namespace
		}
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: f.Kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
		&clientcmd.ConfigOverrides{CurrentContext: w.Context})
	if ns == "" {
		var err error
		if ns, _, err = cc.Namespace(); err != nil {
			if w.Target.Kind != kube.KindLoadBalancer {
				return nil, usagef("read kubeconfig: %v", err)
			}
			ns = "default"
		}
	}
	w.Target.Namespace = ns
	if isRef {
		// KIND/NAME of a configured service is that service: the same
		// blocks, incidents and settings whichever way it is named.
		w.Service = f.configuredServiceFor(ns, kind, name)
	}
	rc, err := cc.ClientConfig()
	if err != nil {
		if w.Target.Kind == kube.KindLoadBalancer {
			return w, nil
		}
		return nil, usagef("kubeconfig: %v; pass --kubeconfig or set $KUBECONFIG", err)
	}
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "rollback/" + Version
	if w.Client, err = f.newClient(rc); err != nil {
		return nil, err
	}
	if err := f.attach(w); err != nil {
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
// ns/kind/name ("" when none, or when there is no rollback.yaml). With ns
// "" a single service naming the workload matches.
func (f *Factory) configuredServiceFor(ns string, kind kube.Kind, name string) string {
	cfg, err := f.Config()
	if err != nil || cfg == nil {
		return ""
	}
	found := ""
	for _, n := range cfg.ServiceNames() {
		k := cfg.Services[n].Kubernetes
		if kk, err := kube.ParseKind(k.Kind); err != nil || kk != kind {
			continue
		}
		if k.Name == name && (ns == "" || k.Namespace == ns) {
			if found != "" {
				return "" // ambiguous without a namespace
			}
			found = n
		}
	}
	return found
}

// ServiceKey is the canonical key of a SERVICE argument without asking the
// cluster (for gate, block, unblock in CI): a configured name as it is;
// KIND/NAME as the configured service naming it, else NAMESPACE/KIND/NAME
// (-n, or the kubeconfig's namespace).
func (f *Factory) ServiceKey(arg string) (string, error) {
	// A key as rollback writes it (NAMESPACE/KIND/NAME, shown by status
	// and in incidents) is taken as it is.
	if ns, ref, ok := strings.Cut(arg, "/"); ok && strings.Count(arg, "/") == 2 && objectName.MatchString(ns) {
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
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: f.Kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
		&clientcmd.ConfigOverrides{CurrentContext: f.Context})
	if ns, _, err := cc.Namespace(); err == nil && ns != "" {
		return ns
	}
	return "default"
}

// parseWorkloadArg splits a SERVICE argument: KIND/NAME (a kind of the
// table of kinds, in kubectl's spellings) is a reference to a workload;
// anything else must be a configured service name.
func parseWorkloadArg(arg string) (kind kube.Kind, name string, isRef bool, err error) {
	if arg == "" {
		return "", "", false, usagef("empty SERVICE: expected a service from rollback.yaml or KIND/NAME (KIND one of %s)", strings.Join(kinds.Names(), ", "))
	}
	k, name, ok := strings.Cut(arg, "/")
	if !ok {
		if !serviceName.MatchString(arg) {
			return "", "", false, usagef("invalid SERVICE %q: expected a service name from rollback.yaml (lowercase letters, digits, '-') or KIND/NAME such as deployment/NAME", arg)
		}
		return "", arg, false, nil
	}
	if kind, err = kube.ParseKind(k); err != nil {
		return "", "", false, usagef("%v, in %q", err, arg)
	}
	if !objectName.MatchString(name) || len(name) > 253 {
		return "", "", false, usagef("invalid %s name %q in %q: expected a lowercase DNS subdomain such as %s/transaction-service", kind, name, arg, kind)
	}
	return kind, name, true, nil
}

var (
	serviceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	objectName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)
