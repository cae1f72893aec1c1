// Package admission renders the Kubernetes ValidatingAdmissionPolicy that
// makes the API server refuse blocked images. The blocked images are a
// parameter (a ConfigMap the binding names), so they are data the policy's
// CEL reads, never text spliced into it: a version string with quotes,
// backslashes or CEL keywords cannot change what the policy does.
package admission

import (
	"fmt"
	"sort"
	"strings"

	"github.com/rollback-dev/rollback/internal/image"
	"github.com/rollback-dev/rollback/internal/store"
)

// ParamKey is the ConfigMap key holding the blocked images, one a line.
const ParamKey = "images"

// BlockedImages lists, for every repository the workload runs and every
// blocked version, the references that name it: as written and fully
// qualified (nginx:v1 and docker.io/library/nginx:v1), tag or digest.
func BlockedImages(refs []image.Ref, blocks []store.Block) (images, why []string) {
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			images = append(images, s)
		}
	}
	for _, b := range blocks {
		why = append(why, fmt.Sprintf("%s (%s: %s)", b.Version, orNone(b.Incident), b.Reason))
		for _, r := range refs {
			add(r.WithVersion(b.Version))
			add(image.Ref{Name: r.Canonical}.WithVersion(b.Version))
		}
	}
	sort.Strings(images)
	return images, why
}

func orNone(s string) string {
	if s == "" {
		return "no incident"
	}
	return s
}

// The policy's CEL. Every container kind is checked (containers,
// initContainers, ephemeralContainers) in Pods and in workload templates;
// an image matches a blocked reference as written, without its digest
// (repo:tag@sha256:… is repo:tag), and as repository@digest.
const (
	exprSpec       = `object.kind == 'Pod' ? object.spec : object.spec.template.spec`
	exprContainers = `(has(variables.spec.containers) ? variables.spec.containers : []) + ` +
		`(has(variables.spec.initContainers) ? variables.spec.initContainers : []) + ` +
		`(has(variables.spec.ephemeralContainers) ? variables.spec.ephemeralContainers : [])`
	exprImages  = `variables.containers.map(c, c.image)`
	exprBlocked = `has(params.data) && '` + ParamKey + `' in params.data ? params.data['` + ParamKey + `'].split('\n') : []`
	// repo:tag of an image with a digest; repo@digest of it.
	exprTagged   = `variables.images.map(i, i.contains('@') ? i.substring(0, i.indexOf('@')) : i)`
	exprDigested = `variables.images.filter(i, i.contains('@')).map(i, ` +
		`(i.substring(0, i.indexOf('@')).lastIndexOf(':') > i.substring(0, i.indexOf('@')).lastIndexOf('/') ` +
		`? i.substring(0, i.substring(0, i.indexOf('@')).lastIndexOf(':')) : i.substring(0, i.indexOf('@'))) + i.substring(i.indexOf('@')))`
	exprValid = `!variables.images.exists(i, i in variables.blocked) && ` +
		`!variables.tagged.exists(i, i in variables.blocked) && ` +
		`!variables.digested.exists(i, i in variables.blocked)`
)

// Policy returns the ValidatingAdmissionPolicy, its binding (to namespace
// ns, parameters from the ConfigMap of the same name there) and that
// ConfigMap, as objects to print as YAML.
func Policy(name, ns, message string, images []string) (policy, binding, params map[string]any) {
	labels := map[string]string{"app.kubernetes.io/managed-by": "rollback"}
	rule := func(group string, resources ...string) map[string]any {
		return map[string]any{"apiGroups": []string{group}, "apiVersions": []string{"v1"}, "operations": []string{"CREATE", "UPDATE"}, "resources": resources}
	}
	policy = map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
		"metadata": map[string]any{"name": name, "labels": labels},
		"spec": map[string]any{
			"failurePolicy": "Fail",
			"paramKind":     map[string]any{"apiVersion": "v1", "kind": "ConfigMap"},
			"matchConstraints": map[string]any{"resourceRules": []any{
				rule("apps", "deployments", "statefulsets", "daemonsets", "replicasets"),
				rule("", "pods", "pods/ephemeralcontainers"),
			}},
			"variables": []any{
				map[string]any{"name": "spec", "expression": exprSpec},
				map[string]any{"name": "containers", "expression": exprContainers},
				map[string]any{"name": "images", "expression": exprImages},
				map[string]any{"name": "blocked", "expression": exprBlocked},
				map[string]any{"name": "tagged", "expression": exprTagged},
				map[string]any{"name": "digested", "expression": exprDigested},
			},
			"validations": []any{map[string]any{"expression": exprValid, "message": message}},
		},
	}
	binding = map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
		"metadata": map[string]any{"name": name, "labels": labels},
		"spec": map[string]any{
			"policyName":        name,
			"validationActions": []string{"Deny"},
			"paramRef":          map[string]any{"name": name, "namespace": ns, "parameterNotFoundAction": "Allow"},
			"matchResources": map[string]any{"namespaceSelector": map[string]any{
				"matchLabels": map[string]string{"kubernetes.io/metadata.name": ns}}},
		},
	}
	params = map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels},
		"data":     map[string]string{ParamKey: strings.Join(images, "\n")},
	}
	return policy, binding, params
}
