package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

type validator struct {
	file string
	errs Errors
}

func (v *validator) add(n *yaml.Node, field, format string, a ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	v.errs = append(v.errs, &Error{File: v.file, Line: line, Field: field, Msg: fmt.Sprintf(format, a...)})
}

// fields walks a mapping node, calling fn for each known key and reporting
// unknown and duplicate keys.
func (v *validator) fields(n *yaml.Node, path string, known []string, fn func(key string, val *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		v.add(n, path, "expected a mapping with keys %s, got %s", strings.Join(known, ", "), kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		fp := join(path, k.Value)
		if seen[k.Value] {
			v.add(k, fp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		if !contains(known, k.Value) {
			v.add(k, fp, "unknown field; expected one of: %s", strings.Join(known, ", "))
			continue
		}
		fn(k.Value, val)
	}
}

func (v *validator) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		v.add(n, path, "expected a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (v *validator) config(n *yaml.Node, cfg *Config) {
	v.fields(n, "", []string{"apiVersion", "kind", "services"}, func(key string, val *yaml.Node) {
		switch key {
		case "apiVersion":
			if s, ok := v.str(val, key); ok {
				if s != APIVersion {
					v.add(val, key, "unsupported version %q; expected %q", s, APIVersion)
				}
				cfg.APIVersion = s
			}
		case "kind":
			if s, ok := v.str(val, key); ok {
				if s != "Config" {
					v.add(val, key, "got %q; expected \"Config\"", s)
				}
				cfg.Kind = s
			}
		case "services":
			cfg.Services = v.services(val)
		}
	})
	if n.Kind == yaml.MappingNode {
		if cfg.APIVersion == "" && !v.has(n, "apiVersion") {
			v.add(n, "apiVersion", "missing; expected %q", APIVersion)
		}
		if cfg.Services == nil && !v.has(n, "services") {
			v.add(n, "services", "missing; expected a mapping of service name to its settings")
		}
	}
}

func (v *validator) has(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

func (v *validator) services(n *yaml.Node) map[string]*Service {
	out := map[string]*Service{}
	if n.Kind != yaml.MappingNode {
		v.add(n, "services", "expected a mapping of service name to its settings, got %s", kindName(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		path := "services." + k.Value
		if _, dup := out[k.Value]; dup {
			v.add(k, path, "duplicate service")
			continue
		}
		if !dnsLabel.MatchString(k.Value) || len(k.Value) > 63 {
			v.add(k, path, "service name must be a DNS label (lowercase letters, digits and '-', at most 63 characters)")
		}
		svc := &Service{}
		v.fields(val, path, []string{"kubernetes"}, func(key string, kn *yaml.Node) {
			svc.Kubernetes = v.kubernetes(kn, path+".kubernetes", k.Value)
		})
		if val.Kind == yaml.MappingNode && !v.has(val, "kubernetes") {
			v.add(val, path+".kubernetes", "missing; expected the service's kind, name and namespace")
		}
		out[k.Value] = svc
	}
	return out
}

func (v *validator) kubernetes(n *yaml.Node, path, svcName string) Kubernetes {
	k := Kubernetes{Kind: "Deployment", Name: svcName}
	v.fields(n, path, []string{"context", "namespace", "kind", "name"}, func(key string, val *yaml.Node) {
		s, ok := v.str(val, join(path, key))
		if !ok {
			return
		}
		switch key {
		case "context":
			k.Context = s
		case "namespace":
			if !dnsLabel.MatchString(s) {
				v.add(val, join(path, key), "%q is not a valid namespace (a DNS label)", s)
			}
			k.Namespace = s
		case "kind":
			if !contains(supportedKinds, s) {
				v.add(val, join(path, key), "unsupported kind %q; expected one of: %s", s, strings.Join(supportedKinds, ", "))
			}
			k.Kind = s
		case "name":
			if !dnsSubdomain.MatchString(s) || len(s) > 253 {
				v.add(val, join(path, key), "%q is not a valid object name (lowercase DNS subdomain)", s)
			}
			k.Name = s
		}
	})
	return k
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
