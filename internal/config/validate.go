package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"

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
		svc.Kubernetes = Kubernetes{Kind: "Deployment", Name: k.Value}
		v.fields(val, path, []string{"kubernetes", "verify", "notify", "flag", "database", "decide", "loadBalancer", "automation", "gitops"}, func(key string, kn *yaml.Node) {
			switch key {
			case "kubernetes":
				svc.Kubernetes = v.kubernetes(kn, path+".kubernetes", k.Value)
			case "verify":
				svc.Verify = v.verify(kn, path+".verify")
			case "notify":
				svc.Notify = v.notify(kn, path+".notify")
			case "flag":
				svc.Flag = v.flag(kn, path+".flag")
			case "database":
				svc.Database = v.database(kn, path+".database")
			case "decide":
				svc.Decide = v.decide(kn, path+".decide")
			case "loadBalancer":
				svc.LoadBalancer = v.loadBalancer(kn, path+".loadBalancer")
			case "automation":
				svc.Automation = v.automation(kn, path+".automation")
			case "gitops":
				svc.GitOps = v.gitops(kn, path+".gitops")
			}
		})
		if val.Kind == yaml.MappingNode && !v.has(val, "kubernetes") && !v.has(val, "loadBalancer") {
			v.add(val, path+".kubernetes", "missing; expected the service's kind, name and namespace (or a loadBalancer: listener)")
		}
		out[k.Value] = svc
	}
	return out
}

func (v *validator) kubernetes(n *yaml.Node, path, svcName string) Kubernetes {
	k := Kubernetes{Kind: "Deployment", Name: svcName}
	v.fields(n, path, []string{"context", "namespace", "kind", "name", "colorLabel"}, func(key string, val *yaml.Node) {
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
		case "colorLabel":
			if !labelKey.MatchString(s) {
				v.add(val, join(path, key), "%q is not a label key (e.g. color or app.example.com/color)", s)
			}
			k.ColorLabel = s
		}
	})
	if k.ColorLabel != "" && k.Kind != "Service" {
		v.add(n, join(path, "colorLabel"), "a colour label applies to kind: Service (blue/green), not %s", k.Kind)
	}
	return k
}

var labelKey = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

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

func (v *validator) duration(n *yaml.Node, path string) time.Duration {
	s, ok := v.str(n, path)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		v.add(n, path, "%q is not a positive duration; expected e.g. 500ms, 30s or 5m", s)
		return 0
	}
	return d
}

// fraction reads a number between 0 and 1 (0 when it is not one).
func (v *validator) fraction(n *yaml.Node, path, example string) float64 {
	var f float64
	if err := n.Decode(&f); err != nil || f < 0 || f > 1 {
		v.add(n, path, "expected a fraction between 0 and 1 (%s), got %s", example, kindName(n))
		return 0
	}
	return f
}

func (v *validator) verify(n *yaml.Node, path string) *Verify {
	out := &Verify{}
	v.fields(n, path, []string{"prometheus", "errorRateQuery", "requestsQuery", "errorsQuery", "slowQuery", "maxErrorRate", "latencyQuery", "maxLatency", "latencyFactor", "podWindow", "within", "smoke"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "prometheus":
			if s, ok := v.str(val, fp); ok {
				if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
					v.add(val, fp, "%q is not a URL; expected http://host:9090", s)
				}
				out.Prometheus = s
			}
		case "errorRateQuery":
			out.ErrorRateQuery, _ = v.str(val, fp)
		case "requestsQuery", "errorsQuery", "slowQuery":
			q, ok := v.str(val, fp)
			if ok && !strings.Contains(q, "$window") {
				v.add(val, fp, "a count over the time since verification began needs $window, e.g. sum(increase(http_requests_total[$window]))")
			}
			switch key {
			case "requestsQuery":
				out.RequestsQuery = q
			case "errorsQuery":
				out.ErrorsQuery = q
			default:
				out.SlowQuery = q
			}
		case "latencyQuery":
			out.LatencyQuery, _ = v.str(val, fp)
		case "maxErrorRate":
			out.MaxErrorRate = v.fraction(val, fp, "0.001 is 0.1%")
		case "maxLatency":
			out.MaxLatency = v.duration(val, fp)
		case "within":
			out.Within = v.duration(val, fp)
		case "latencyFactor":
			var f float64
			if err := val.Decode(&f); err != nil || f <= 0 {
				v.add(val, fp, "expected a positive multiple of the pre-release p99 (e.g. 1.5), got %s", kindName(val))
			}
			out.LatencyFactor = f
		case "podWindow":
			out.PodWindow = v.duration(val, fp)
		case "smoke":
			if val.Kind != yaml.SequenceNode {
				v.add(val, fp, "expected a list of checks, got %s", kindName(val))
				return
			}
			for i, item := range val.Content {
				out.Smoke = append(out.Smoke, v.smoke(item, fmt.Sprintf("%s[%d]", fp, i)))
			}
		}
	})
	if (out.RequestsQuery == "") != (out.ErrorsQuery == "") {
		v.add(n, path, "requestsQuery and errorsQuery go together: the error rate's confidence needs both counts")
	}
	if out.SlowQuery != "" && out.RequestsQuery == "" {
		v.add(n, path, "slowQuery needs requestsQuery: the slow share is of the requests counted")
	}
	return out
}

func (v *validator) smoke(n *yaml.Node, path string) Smoke {
	s := Smoke{}
	v.fields(n, path, []string{"name", "method", "url", "headers", "expectStatus", "expectBody", "maxLatency"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "name":
			s.Name, _ = v.str(val, fp)
		case "method":
			s.Method, _ = v.str(val, fp)
		case "url":
			if u, ok := v.str(val, fp); ok {
				if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
					v.add(val, fp, "%q is not an http(s) URL", u)
				}
				s.URL = u
			}
		case "headers":
			if err := val.Decode(&s.Headers); err != nil {
				v.add(val, fp, "expected a mapping of header name to value")
			}
		case "expectStatus":
			if err := val.Decode(&s.ExpectStatus); err != nil || s.ExpectStatus < 100 || s.ExpectStatus > 599 {
				v.add(val, fp, "expected an HTTP status code (100-599)")
			}
		case "expectBody":
			s.ExpectBody, _ = v.str(val, fp)
		case "maxLatency":
			s.MaxLatency = v.duration(val, fp)
		}
	})
	if n.Kind == yaml.MappingNode && (s.Name == "" || s.URL == "") {
		v.add(n, path, "a smoke check needs a name and a url")
	}
	return s
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// envRef reads the name of an environment variable holding a secret.
func (v *validator) envRef(n *yaml.Node, path string) string {
	s, ok := v.str(n, path)
	if ok && !envName.MatchString(s) {
		v.add(n, path, "%q is not an environment variable name; put the secret in the environment and its name here", s)
	}
	return s
}

func (v *validator) notify(n *yaml.Node, path string) *Notify {
	out := &Notify{}
	v.fields(n, path, []string{"slack", "pagerduty", "webhooks", "timeout", "deadline"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "timeout":
			out.Timeout = v.duration(val, fp)
		case "deadline":
			out.Deadline = v.duration(val, fp)
		case "slack":
			sl := &SlackNotify{}
			v.fields(val, fp, []string{"tokenEnv", "apiURL", "mentions"}, func(k string, x *yaml.Node) {
				switch k {
				case "tokenEnv":
					sl.TokenEnv = v.envRef(x, join(fp, k))
				case "apiURL":
					sl.APIURL, _ = v.str(x, join(fp, k))
				case "mentions":
					if err := x.Decode(&sl.Mentions); err != nil {
						v.add(x, join(fp, k), "expected a list of Slack mentions such as <@U123> or <!subteam^S123>")
					}
				}
			})
			if sl.TokenEnv == "" && val.Kind == yaml.MappingNode {
				v.add(val, fp+".tokenEnv", "missing; name the environment variable holding the bot token (xoxb-...)")
			}
			out.Slack = sl
		case "pagerduty":
			pd := &PagerDutyNotify{}
			v.fields(val, fp, []string{"routingKeyEnv", "eventsURL", "apiTokenEnv", "from", "apiURL"}, func(k string, x *yaml.Node) {
				switch k {
				case "routingKeyEnv":
					pd.RoutingKeyEnv = v.envRef(x, join(fp, k))
				case "eventsURL":
					pd.EventsURL, _ = v.str(x, join(fp, k))
				case "apiTokenEnv":
					pd.APITokenEnv = v.envRef(x, join(fp, k))
				case "from":
					if s, ok := v.str(x, join(fp, k)); ok {
						if !strings.Contains(s, "@") {
							v.add(x, join(fp, k), "%q is not an email address; PagerDuty's REST API wants the acting user's email in From", s)
						}
						pd.From = s
					}
				case "apiURL":
					pd.APIURL, _ = v.str(x, join(fp, k))
				}
			})
			if val.Kind == yaml.MappingNode {
				if pd.RoutingKeyEnv == "" && pd.APITokenEnv == "" {
					v.add(val, fp+".routingKeyEnv", "missing; name the environment variable holding the integration's routing key (Events API), or give apiTokenEnv and from (REST API)")
				}
				if pd.APITokenEnv != "" && pd.From == "" {
					v.add(val, fp+".from", "missing; the REST API needs the email of the PagerDuty user acting")
				}
			}
			out.PagerDuty = pd
		case "webhooks":
			if val.Kind != yaml.SequenceNode {
				v.add(val, fp, "expected a list of webhooks, got %s", kindName(val))
				return
			}
			seen := map[string]bool{}
			for i, item := range val.Content {
				wh := v.webhook(item, fmt.Sprintf("%s[%d]", fp, i))
				if wh.Name != "" && seen[wh.Name] {
					v.add(item, fmt.Sprintf("%s[%d].name", fp, i), "duplicate webhook name %q", wh.Name)
				}
				seen[wh.Name] = true
				out.Webhooks = append(out.Webhooks, wh)
			}
		}
	})
	return out
}

func (v *validator) webhook(n *yaml.Node, path string) WebhookNotify {
	w := WebhookNotify{}
	v.fields(n, path, []string{"name", "format", "url", "urlEnv"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "name":
			if s, ok := v.str(val, fp); ok {
				if !dnsLabel.MatchString(s) {
					v.add(val, fp, "%q is not a valid name (lowercase letters, digits and '-')", s)
				}
				w.Name = s
			}
		case "format":
			if s, ok := v.str(val, fp); ok {
				if !contains([]string{"slack", "json"}, s) {
					v.add(val, fp, "unsupported format %q; expected slack (an incoming webhook) or json", s)
				}
				w.Format = s
			}
		case "url":
			if s, ok := v.str(val, fp); ok {
				if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
					v.add(val, fp, "%q is not an http(s) URL", s)
				}
				w.URL = s
			}
		case "urlEnv":
			w.URLEnv = v.envRef(val, fp)
		}
	})
	if n.Kind != yaml.MappingNode {
		return w
	}
	if w.Name == "" {
		v.add(n, path+".name", "missing; name the webhook (it names the webhook in the incident's evidence)")
	}
	if w.Format == "" {
		v.add(n, path+".format", "missing; expected slack or json")
	}
	if (w.URL == "") == (w.URLEnv == "") {
		v.add(n, path, "give exactly one of url and urlEnv (urlEnv when the URL holds a secret, as a Slack incoming webhook's does)")
	}
	return w
}

func (v *validator) decide(n *yaml.Node, path string) *Decide {
	d := &Decide{}
	v.fields(n, path, []string{"errorRateQuery", "latencyRatioQuery", "apiAdoptionQuery", "apiAdoptionThreshold"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "errorRateQuery":
			d.ErrorRateQuery, _ = v.str(val, fp)
		case "latencyRatioQuery":
			d.LatencyRatioQuery, _ = v.str(val, fp)
		case "apiAdoptionQuery":
			d.APIAdoptionQuery, _ = v.str(val, fp)
		case "apiAdoptionThreshold":
			d.APIAdoptionThreshold = v.fraction(val, fp, "0.01 is 1%")
		}
	})
	return d
}

func (v *validator) flag(n *yaml.Node, path string) *Flag {
	f := &Flag{}
	v.fields(n, path, []string{"provider", "key", "project", "environment", "url", "tokenEnv", "path", "timeout"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "timeout":
			f.Timeout = v.duration(val, fp)
		case "provider":
			if s, ok := v.str(val, fp); ok {
				if !contains([]string{"launchdarkly", "unleash", "flagd"}, s) {
					v.add(val, fp, "unsupported provider %q; expected launchdarkly, unleash or flagd", s)
				}
				f.Provider = s
			}
		case "key":
			f.Key, _ = v.str(val, fp)
		case "project":
			f.Project, _ = v.str(val, fp)
		case "environment":
			f.Environment, _ = v.str(val, fp)
		case "url":
			f.URL, _ = v.str(val, fp)
		case "tokenEnv":
			f.TokenEnv = v.envRef(val, fp)
		case "path":
			f.Path, _ = v.str(val, fp)
		}
	})
	if n.Kind != yaml.MappingNode {
		return f
	}
	need := func(ok bool, field, what string) {
		if !ok {
			v.add(n, join(path, field), "missing: %s needs %s", orProvider(f.Provider), what)
		}
	}
	need(f.Provider != "", "provider", "a provider (launchdarkly, unleash or flagd)")
	need(f.Key != "", "key", "the flag's key")
	switch f.Provider {
	case "launchdarkly":
		need(f.Project != "", "project", "the project key (not the environment)")
		need(f.Environment != "", "environment", "the environment key, e.g. production")
		need(f.TokenEnv != "", "tokenEnv", "the environment variable holding the API access token")
	case "unleash":
		need(f.URL != "", "url", "the Unleash URL")
		need(f.Environment != "", "environment", "the environment, e.g. production")
		need(f.TokenEnv != "", "tokenEnv", "the environment variable holding an admin API token")
	case "flagd":
		need(f.Path != "", "path", "the flag definition file")
	}
	return f
}

func orProvider(p string) string {
	if p == "" {
		return "a flag"
	}
	return p
}
