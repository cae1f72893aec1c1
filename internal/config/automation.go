package config

import (
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Automation is what `rollback serve` may do for a service on its own.
type Automation struct {
	// Auto lets a trigger (a firing alert) run the runbook when the
	// decision flowchart says roll back. Off by default: the trigger
	// opens a proposed incident for a person to approve.
	Auto bool `yaml:"auto,omitempty" json:"auto,omitempty"`
	// Alerts are Alertmanager label matchers that mean this service: an
	// alert matches when it has every label with the given value.
	Alerts []map[string]string `yaml:"alerts,omitempty" json:"alerts,omitempty"`
	// Severity is the incident severity of a matching alert without a
	// severity label P1..P4 or critical/high/warning/info (default P2).
	Severity string `yaml:"severity,omitempty" json:"severity,omitempty"`
	// Watch runs the canary watch as a supervised loop while a canary
	// takes traffic.
	Watch *AutoWatch `yaml:"watch,omitempty" json:"watch,omitempty"`
	// Staging is where the chaos drill and the fire drill run.
	Staging *Staging `yaml:"staging,omitempty" json:"staging,omitempty"`
}

// AutoWatch is the supervised canary watch's settings (those of
// `rollback watch`).
type AutoWatch struct {
	RequestsQuery string        `yaml:"requestsQuery" json:"requestsQuery"`
	ErrorsQuery   string        `yaml:"errorsQuery" json:"errorsQuery"`
	Interval      time.Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
}

// Staging is a service's staging copy for drills.
type Staging struct {
	Context   string `yaml:"context,omitempty" json:"context,omitempty"`
	Namespace string `yaml:"namespace" json:"namespace"`
	// BadImage is the deliberately failing version the chaos drill
	// deploys (an image the detectors must catch).
	BadImage string `yaml:"badImage,omitempty" json:"badImage,omitempty"`
}

// Severities as alert labels commonly spell them.
var alertSeverities = map[string]string{"critical": "P1", "high": "P2", "error": "P2", "warning": "P3", "info": "P4"}

// AlertSeverity maps an alert's severity label to P1..P4 ("" when it is
// not one rollback knows).
func AlertSeverity(label string) string {
	l := strings.ToLower(strings.TrimSpace(label))
	if s, ok := alertSeverities[l]; ok {
		return s
	}
	if len(l) == 2 && l[0] == 'p' && l[1] >= '1' && l[1] <= '4' {
		return strings.ToUpper(l)
	}
	return ""
}

// Matches reports whether an alert's labels mean this service.
func (a *Automation) Matches(labels map[string]string) bool {
	if a == nil {
		return false
	}
	for _, m := range a.Alerts {
		ok := len(m) > 0
		for k, v := range m {
			if labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (v *validator) automation(n *yaml.Node, path string) *Automation {
	a := &Automation{}
	v.fields(n, path, []string{"auto", "alerts", "severity", "watch", "staging"}, func(key string, val *yaml.Node) {
		fp := join(path, key)
		switch key {
		case "auto":
			if err := val.Decode(&a.Auto); err != nil {
				v.add(val, fp, "expected true or false, got %s", kindName(val))
			}
		case "alerts":
			if val.Kind != yaml.SequenceNode {
				v.add(val, fp, "expected a list of label matchers, e.g. - {alertname: HighErrorRate, service: api}")
				return
			}
			for i, m := range val.Content {
				var labels map[string]string
				if err := m.Decode(&labels); err != nil || len(labels) == 0 {
					v.add(m, join(fp, strconv.Itoa(i)), "expected a mapping of alert label to value, e.g. {alertname: HighErrorRate}")
					continue
				}
				a.Alerts = append(a.Alerts, labels)
			}
		case "severity":
			if s, ok := v.str(val, fp); ok {
				if a.Severity = AlertSeverity(s); a.Severity == "" {
					v.add(val, fp, "%q is not a severity; expected P1, P2, P3 or P4", s)
				}
			}
		case "watch":
			a.Watch = &AutoWatch{}
			v.fields(val, fp, []string{"requestsQuery", "errorsQuery", "interval"}, func(key string, wn *yaml.Node) {
				switch key {
				case "requestsQuery":
					a.Watch.RequestsQuery, _ = v.str(wn, join(fp, key))
				case "errorsQuery":
					a.Watch.ErrorsQuery, _ = v.str(wn, join(fp, key))
				case "interval":
					a.Watch.Interval = v.duration(wn, join(fp, key))
				}
			})
			if val.Kind == yaml.MappingNode && (a.Watch.RequestsQuery == "" || a.Watch.ErrorsQuery == "") {
				v.add(val, fp, "needs requestsQuery and errorsQuery (PromQL with {{version}} and {{interval}}, as 'rollback watch' takes)")
			}
		case "staging":
			a.Staging = &Staging{}
			v.fields(val, fp, []string{"context", "namespace", "badImage"}, func(key string, sn *yaml.Node) {
				switch key {
				case "context":
					a.Staging.Context, _ = v.str(sn, join(fp, key))
				case "namespace":
					if s, ok := v.str(sn, join(fp, key)); ok {
						if !dnsLabel.MatchString(s) {
							v.add(sn, join(fp, key), "%q is not a namespace name", s)
						}
						a.Staging.Namespace = s
					}
				case "badImage":
					a.Staging.BadImage, _ = v.str(sn, join(fp, key))
				}
			})
			if val.Kind == yaml.MappingNode && a.Staging.Namespace == "" {
				v.add(val, join(fp, "namespace"), "missing; the staging namespace the drills run in")
			}
		}
	})
	if a.Severity == "" {
		a.Severity = "P2"
	}
	return a
}
