package engine

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kinds"
	"github.com/rollback-dev/rollback/internal/kube"
)

// ErrBadRef is a SERVICE argument that names nothing rollback can act on:
// a malformed one, or a service rollback.yaml does not configure.
var ErrBadRef = errors.New("bad SERVICE")

// ParseRef splits a SERVICE argument: KIND/NAME (a kind of the table of
// kinds, in kubectl's spellings) is a reference to a workload; anything
// else must be a configured service's name.
func ParseRef(arg string) (kind kube.Kind, name string, isRef bool, err error) {
	if arg == "" {
		return "", "", false, fmt.Errorf("%w: empty; expected a service from rollback.yaml or KIND/NAME (KIND one of %s)", ErrBadRef, strings.Join(kinds.Names(), ", "))
	}
	k, name, ok := strings.Cut(arg, "/")
	if !ok {
		if !serviceName.MatchString(arg) {
			return "", "", false, fmt.Errorf("%w %q: expected a service name from rollback.yaml (lowercase letters, digits, '-') or KIND/NAME such as deployment/NAME", ErrBadRef, arg)
		}
		return "", arg, false, nil
	}
	if kind, err = kube.ParseKind(k); err != nil {
		return "", "", false, fmt.Errorf("%w: %v, in %q", ErrBadRef, err, arg)
	}
	if !ObjectName(name) {
		return "", "", false, fmt.Errorf("%w: invalid %s name %q in %q: expected a lowercase DNS subdomain such as %s/transaction-service", ErrBadRef, kind, name, arg, kind)
	}
	return kind, name, true, nil
}

// ObjectName says whether s is a Kubernetes object name (a lowercase DNS
// subdomain of at most 253 characters).
func ObjectName(s string) bool { return len(s) <= 253 && objectName.MatchString(s) }

var (
	serviceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	objectName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// Where is what the caller knows of where a SERVICE lives: -n and
// --context (they win over rollback.yaml), and the kubeconfig's namespace
// for a context, asked only when neither says.
type Where struct {
	Namespace, Context string
	DefaultNamespace   func(kubeContext string) (string, error)
}

// Locate is the workload a SERVICE argument names, from rollback.yaml:
// a configured service's kind, name, colour label, context and namespace
// (flags winning), or KIND/NAME in the namespace given, named as the
// configured service that configures exactly that object (so its blocks,
// incidents and settings are the same whichever way it is named). The
// CLI and the server resolve with it; a resumed incident uses the
// identity it journaled. The workload has no client yet (Attach gives it
// the adapters its kind needs, once it has one).
func Locate(cfg *config.Config, arg string, where Where) (*Workload, error) {
	kind, name, isRef, err := ParseRef(arg)
	if err != nil {
		return nil, err
	}
	w := &Workload{Context: where.Context}
	ns := where.Namespace
	if isRef {
		w.Target.Name, w.Target.Kind = name, kind
	} else {
		if cfg == nil {
			return nil, fmt.Errorf("%w: unknown service %q: no rollback.yaml found (looked at --config, $ROLLBACK_CONFIG and ./rollback.yaml); pass deployment/NAME with -n NAMESPACE, or define the service in rollback.yaml", ErrBadRef, arg)
		}
		svc, ok := cfg.Services[arg]
		if !ok {
			return nil, fmt.Errorf("%w: unknown service %q in %s; configured services: %s; or pass deployment/NAME with -n NAMESPACE", ErrBadRef,
				arg, cfg.Path, strings.Join(cfg.ServiceNames(), ", "))
		}
		w.Service = arg
		w.Target.Name = svc.Kubernetes.Name
		if w.Target.Kind, err = kube.ParseKind(svc.Kubernetes.Kind); err != nil {
			return nil, fmt.Errorf("%s: services.%s.kubernetes.kind: %v", cfg.Path, arg, err)
		}
		if svc.LoadBalancer != nil {
			// Blue/green at a load balancer: no cluster object.
			w.Target.Kind, w.Target.Name = kube.KindLoadBalancer, arg
		}
		w.Target.ColorLabel = svc.Kubernetes.ColorLabel
		if w.Context == "" {
			w.Context = svc.Kubernetes.Context
		}
		if ns == "" {
			ns = svc.Kubernetes.Namespace
		}
	}
	if ns == "" && where.DefaultNamespace != nil {
		if ns, err = where.DefaultNamespace(w.Context); err != nil {
			if w.Target.Kind != kube.KindLoadBalancer {
				return nil, fmt.Errorf("read kubeconfig: %v", err)
			}
			ns = "default" // a load balancer needs no kubeconfig
		}
	}
	w.Target.Namespace = ns
	if isRef {
		w.Service = ServiceFor(cfg, ns, kind, name)
	}
	return w, nil
}

// ServiceFor is the configured service whose workload is ns/kind/name (""
// when none, when several do, or with no rollback.yaml). With ns "" a
// single service naming the workload matches.
func ServiceFor(cfg *config.Config, ns string, kind kube.Kind, name string) string {
	if cfg == nil {
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
