package config

import (
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"
)

// loadBalancer validates a service's loadBalancer: section (an AWS ALB
// listener switched between blue/green target groups).
func (v *validator) loadBalancer(n *yaml.Node, path string) *LoadBalancer {
	lb := &LoadBalancer{Provider: "aws-alb"}
	arn := func(s string) bool {
		return strings.HasPrefix(s, "arn:aws") && strings.Contains(s, ":elasticloadbalancing:")
	}
	v.fields(n, path, []string{"provider", "listenerArn", "region", "endpoint", "targetGroups", "timeout"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "provider":
			if s, ok := v.str(val, fp); ok && s != "aws-alb" {
				v.add(val, fp, "unsupported provider %q; expected aws-alb", s)
			}
		case "listenerArn":
			if s, ok := v.str(val, fp); ok {
				if !arn(s) || !strings.Contains(s, ":listener/") {
					v.add(val, fp, "%q is not a listener ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:listener/app/NAME/ID/ID)", s)
				}
				lb.ListenerARN = s
			}
		case "region":
			lb.Region, _ = v.str(val, fp)
		case "endpoint":
			if s, ok := v.str(val, fp); ok {
				if u, err := url.Parse(s); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
					v.add(val, fp, "%q is not an http(s) URL", s)
				}
				lb.Endpoint = s
			}
		case "targetGroups":
			if err := val.Decode(&lb.TargetGroups); err != nil {
				v.add(val, fp, "expected a mapping of colour name to target group ARN")
			}
			for name, a := range lb.TargetGroups {
				if !arn(a) || !strings.Contains(a, ":targetgroup/") {
					v.add(val, join(fp, name), "%q is not a target group ARN", a)
				}
			}
		case "timeout":
			lb.Timeout = v.duration(val, fp)
		}
	})
	if n.Kind == yaml.MappingNode && lb.ListenerARN == "" {
		v.add(n, path+".listenerArn", "missing; the listener whose default action switches colours")
	}
	return lb
}
