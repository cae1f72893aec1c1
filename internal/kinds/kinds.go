// Package kinds is the one table of what rollback rolls back: each kind's
// name in KIND/NAME, its spellings as kubectl takes them, its name in
// rollback.yaml, its API object, and what rollback does with it. The
// kube package, config validation and the CLI's parsing, help and errors
// all read it, so a new kind is one row here (and its implementation in
// kube).
package kinds

import (
	"sort"
	"strings"
)

// Spec is one kind.
type Spec struct {
	// Name is rollback's name for it, as in KIND/NAME.
	Name string
	// Aliases are the other spellings accepted, lower case: plural, short
	// name, with the API group, as kubectl takes them.
	Aliases []string
	// Config is its kubernetes.kind in rollback.yaml ("" when it is not
	// configured by kind).
	Config string
	// APIVersion and APIKind name its object, as an Event's
	// involvedObject does ("" for what is no Kubernetes object).
	APIVersion, APIKind string
	// Does says what rollback does with it, for help and errors.
	Does string
}

// Table is every kind, in the order help lists them.
var Table = []Spec{
	{Name: "deployment", Aliases: []string{"deployments", "deploy", "deployment.apps", "deployments.apps", "deploy.apps"},
		Config: "Deployment", APIVersion: "apps/v1", APIKind: "Deployment", Does: "undone to an earlier revision (kubectl rollout undo)"},
	{Name: "statefulset", Aliases: []string{"statefulsets", "sts", "statefulset.apps", "statefulsets.apps", "sts.apps"},
		Config: "StatefulSet", APIVersion: "apps/v1", APIKind: "StatefulSet", Does: "undone; pods stuck on the broken revision replaced"},
	{Name: "daemonset", Aliases: []string{"daemonsets", "ds", "daemonset.apps", "daemonsets.apps", "ds.apps"},
		Config: "DaemonSet", APIVersion: "apps/v1", APIKind: "DaemonSet", Does: "undone to an earlier revision"},
	{Name: "rollout", Aliases: []string{"rollouts", "ro", "rollout.argoproj.io", "rollouts.argoproj.io"},
		Config: "Rollout", APIVersion: "argoproj.io/v1alpha1", APIKind: "Rollout", Does: "Argo Rollouts: aborted and back on the stable revision"},
	{Name: "canary", Aliases: []string{"canaries", "canary.flagger.app", "canaries.flagger.app"},
		Config: "Canary", APIVersion: "flagger.app/v1beta1", APIKind: "Canary", Does: "Flagger: the analysis failed at once, the primary back"},
	{Name: "helm", Aliases: []string{"helmrelease", "release"},
		Config: "HelmRelease", Does: "a Helm release (NAME: the release) rolled back to an earlier revision"},
	{Name: "service", Aliases: []string{"services", "svc"},
		Config: "Service", APIVersion: "v1", APIKind: "Service", Does: "blue/green: the selector switched back to the other colour"},
	{Name: "httproute", Aliases: []string{"httproutes", "httproute.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io"},
		Config: "HTTPRoute", APIVersion: "gateway.networking.k8s.io/v1", APIKind: "HTTPRoute", Does: "Gateway API: the weights back on the other colour"},
	{Name: "ingress", Aliases: []string{"ingresses", "ing", "ingress.networking.k8s.io", "ingresses.networking.k8s.io"},
		Config: "Ingress", APIVersion: "networking.k8s.io/v1", APIKind: "Ingress", Does: "AWS ALB Ingress: the forward weights back on the other colour"},
	{Name: "alb-listener", Aliases: []string{"alblistener"},
		Does: "an AWS ALB listener's forward weights back on the other target group (configured as loadBalancer:)"},
}

var byName = func() map[string]Spec {
	m := map[string]Spec{}
	for _, s := range Table {
		for _, n := range append([]string{s.Name}, s.Aliases...) {
			m[n] = s
		}
	}
	return m
}()

// Lookup finds a kind by any of its spellings, in any case.
func Lookup(s string) (Spec, bool) {
	sp, ok := byName[strings.ToLower(s)]
	return sp, ok
}

// Of is the kind named name (rollback's name), or the zero Spec.
func Of(name string) Spec {
	return byName[name]
}

// ConfigKinds are the kinds rollback.yaml's kubernetes.kind accepts.
func ConfigKinds() []string {
	var ks []string
	for _, s := range Table {
		if s.Config != "" {
			ks = append(ks, s.Config)
		}
	}
	return ks
}

// Names are rollback's names of the kinds, as in KIND/NAME, sorted.
func Names() []string {
	var ns []string
	for _, s := range Table {
		ns = append(ns, s.Name)
	}
	sort.Strings(ns)
	return ns
}

// Help lists the kinds, a line each: KIND/NAME and what rollback does.
func Help() string {
	var b strings.Builder
	for _, s := range Table {
		b.WriteString("  " + s.Name + "/NAME")
		b.WriteString(strings.Repeat(" ", max(1, 20-len(s.Name))))
		b.WriteString(s.Does + "\n")
	}
	return b.String()
}
