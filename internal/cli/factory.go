package cli

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"rollback/internal/config"
	"rollback/internal/kube"
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
type Workload struct {
	Service string // configured service name, "" for deployment/NAME
	Target  kube.Target
	Context string // kubeconfig context ("" for the current one)
	Client  kubernetes.Interface
}

// Resolve turns a SERVICE argument (a configured service, or
// deployment/NAME as kubectl takes it) into a Deployment and a client.
// Flags win over the config, which wins over the kubeconfig's defaults.
func (f *Factory) Resolve(arg string) (*Workload, error) {
	w := &Workload{Context: f.Context}
	ns := f.Namespace
	name, isRef, err := parseWorkloadArg(arg)
	if err != nil {
		return nil, err
	}
	if isRef {
		w.Target.Name = name
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
			return nil, usagef("read kubeconfig: %v", err)
		}
	}
	w.Target.Namespace = ns
	if isRef {
		// deployment/NAME of a configured service is that service: the
		// same blocks, incidents and settings whichever way it is named.
		w.Service = f.configuredServiceFor(ns, name)
	}
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, usagef("kubeconfig: %v; pass --kubeconfig or set $KUBECONFIG", err)
	}
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "rollback/" + Version
	newClient := f.NewClient
	if newClient == nil {
		newClient = func(rc *rest.Config) (kubernetes.Interface, error) { return kubernetes.NewForConfig(rc) }
	}
	if w.Client, err = newClient(rc); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return w, nil
}

// configuredServiceFor is the configured service whose Deployment is
// ns/name ("" when none, or when there is no rollback.yaml). With ns ""
// a single service naming the Deployment matches.
func (f *Factory) configuredServiceFor(ns, name string) string {
	cfg, err := f.Config()
	if err != nil || cfg == nil {
		return ""
	}
	found := ""
	for _, n := range cfg.ServiceNames() {
		k := cfg.Services[n].Kubernetes
		if k.Name == name && (ns == "" || k.Namespace == ns) {
			if found != "" {
				return "" // ambiguous without a namespace
			}
			found = n
		}
	}
	return found
}

// Key is the workload's canonical service key: the configured service's
// name, else NAMESPACE/deployment/NAME. Blocks, incidents and gates use it.
func (w *Workload) Key() string {
	if w.Service != "" {
		return w.Service
	}
	return w.Target.Namespace + "/deployment/" + w.Target.Name
}

// ServiceKey is the canonical key of a SERVICE argument without asking the
// cluster (for gate, block, unblock in CI): a configured name as it is;
// deployment/NAME as the configured service naming it, else
// NAMESPACE/deployment/NAME (-n, or the kubeconfig's namespace).
func (f *Factory) ServiceKey(arg string) (string, error) {
	// A key as rollback writes it (NAMESPACE/deployment/NAME, shown by
	// status and in incidents) is taken as it is.
	if ns, ref, ok := strings.Cut(arg, "/"); ok && strings.Count(arg, "/") == 2 && objectName.MatchString(ns) {
		if name, isRef, err := parseWorkloadArg(ref); err == nil && isRef {
			if svc := f.configuredServiceFor(ns, name); svc != "" {
				return svc, nil
			}
			return ns + "/deployment/" + name, nil
		}
	}
	name, isRef, err := parseWorkloadArg(arg)
	if err != nil {
		return "", err
	}
	if !isRef {
		return name, nil
	}
	if svc := f.configuredServiceFor(f.Namespace, name); svc != "" {
		return svc, nil
	}
	ns := f.Namespace
	if ns == "" {
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: f.Kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
			&clientcmd.ConfigOverrides{CurrentContext: f.Context})
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	return ns + "/deployment/" + name, nil
}

// parseWorkloadArg splits a SERVICE argument: deployment/NAME (and
// kubectl's other spellings of the kind) is a reference to a Deployment;
// anything else must be a configured service name.
func parseWorkloadArg(arg string) (name string, isRef bool, err error) {
	if arg == "" {
		return "", false, usagef("empty SERVICE: expected a service from rollback.yaml or deployment/NAME")
	}
	kind, name, ok := strings.Cut(arg, "/")
	if !ok {
		if !serviceName.MatchString(arg) {
			return "", false, usagef("invalid SERVICE %q: expected a service name from rollback.yaml (lowercase letters, digits, '-') or deployment/NAME", arg)
		}
		return arg, false, nil
	}
	switch strings.ToLower(kind) {
	case "deployment", "deployments", "deploy", "deployment.apps", "deployments.apps":
	default:
		return "", false, usagef("unsupported kind %q in %q: rollback works on deployments (deployment/NAME)", kind, arg)
	}
	if !objectName.MatchString(name) || len(name) > 253 {
		return "", false, usagef("invalid deployment name %q in %q: expected a lowercase DNS subdomain such as deployment/transaction-service", name, arg)
	}
	return name, true, nil
}

var (
	serviceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	objectName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)
