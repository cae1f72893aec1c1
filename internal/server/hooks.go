package server

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/engine"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/store"
)

// AlertmanagerWebhook is Alertmanager's webhook payload (version 4).
type AlertmanagerWebhook struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []Alert           `json:"alerts"`
}

// Alert is one alert of a notification.
type Alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// AlertAnswer is the receiver's answer: which services the notification
// meant (the triggers run in the background; the incidents show them).
type AlertAnswer struct {
	Services []string `json:"services"`
	Ignored  string   `json:"ignored,omitempty"`
}

// alertmanager receives Alertmanager's webhook: each firing alert that a
// service's automation.alerts matches is a trigger for that service. It
// answers at once; Alertmanager's retries of the same group are
// deduplicated by its groupKey.
func (s *Server) alertmanager(w http.ResponseWriter, r *http.Request) {
	var n AlertmanagerWebhook
	if !decodeLoose(w, r, &n) {
		return
	}
	if n.Version != "" && n.Version != "4" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("webhook version %q; this receiver reads Alertmanager's version 4", n.Version))
		return
	}
	type hit struct {
		svc    string
		sev    decide.Severity
		alerts []string
	}
	hits := map[string]*hit{}
	for _, a := range n.Alerts {
		if a.Status != "firing" {
			continue
		}
		for _, name := range s.serviceNames() {
			auto := s.o.Config.Services[name].Automation
			if !auto.Matches(a.Labels) {
				continue
			}
			h := hits[name]
			if h == nil {
				h = &hit{svc: name, sev: decide.Severity(auto.Severity)}
				hits[name] = h
			}
			if sev := config.AlertSeverity(a.Labels["severity"]); sev != "" && sev < string(h.sev) {
				h.sev = decide.Severity(sev)
			}
			desc := a.Labels["alertname"]
			if sum := a.Annotations["summary"]; sum != "" {
				desc += " (" + clip(sum, 200) + ")"
			}
			h.alerts = append(h.alerts, desc)
		}
	}
	ans := AlertAnswer{Services: []string{}}
	if len(hits) == 0 {
		ans.Ignored = "no firing alert matches a service's automation.alerts"
		s.o.Metrics.Triggers.WithLabelValues("alertmanager", "ignored").Inc()
		writeJSON(w, http.StatusOK, ans)
		return
	}
	for name, h := range hits {
		ans.Services = append(ans.Services, name)
		sort.Strings(h.alerts)
		t := engine.Trigger{Source: "alertmanager", Key: n.GroupKey, Severity: h.sev, Auto: s.o.Config.Services[name].Automation.Auto,
			What: "Alertmanager (" + n.Receiver + "): " + strings.Join(h.alerts, ", ") + " firing"}
		s.trigger(name, t)
	}
	sort.Strings(ans.Services)
	writeJSON(w, http.StatusAccepted, ans)
}

// trigger handles a trigger for a configured service in the background.
func (s *Server) trigger(service string, t engine.Trigger) {
	s.background(func(ctx context.Context) {
		wl, err := s.o.Resolve(ctx, service)
		if err != nil {
			s.o.Log.Error("trigger: service not resolved", "service", service, "source", t.Source, "err", err)
			s.o.Metrics.Triggers.WithLabelValues(t.Source, "error").Inc()
			return
		}
		var id string
		t.Started = func(i string) { id = i; s.markRunning(i, true) }
		res, err := s.engineFor(wl).HandleTrigger(ctx, wl, t)
		if id != "" {
			s.markRunning(id, false)
		}
		action := "error"
		if res != nil {
			action = res.Action
		}
		s.o.Metrics.Triggers.WithLabelValues(t.Source, action).Inc()
		if res != nil && res.Action == engine.TriggerRan {
			s.recordRun(ctx, wl.Key(), res.Outcome, err)
		}
		if err != nil {
			s.o.Log.Error("trigger failed", "service", service, "source", t.Source, "err", err)
			return
		}
		s.o.Log.Info("trigger handled", "service", service, "source", t.Source, "action", res.Action, "incident", res.Incident, "reason", res.Reason)
	})
}

func (s *Server) serviceNames() []string {
	if s.o.Config == nil {
		return nil
	}
	return s.o.Config.ServiceNames()
}

// FlaggerWebhook is the body Flagger posts to its webhooks.
type FlaggerWebhook struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Phase     string            `json:"phase"`
	Checksum  string            `json:"checksum,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// flaggerRollback is a Flagger webhook of type rollback: Flagger calls it
// during analysis and rolls the canary back when it answers 2xx. It
// answers 200 while the canary's service has an open rollback incident,
// 404 otherwise. It only reports what an authorised rollback already
// decided, so it needs no credential (Flagger's webhooks send none).
func (s *Server) flaggerRollback(w http.ResponseWriter, r *http.Request) {
	var h FlaggerWebhook
	if !decodeLoose(w, r, &h) {
		return
	}
	if h.Name == "" || h.Namespace == "" {
		writeError(w, http.StatusBadRequest, "name and namespace are required (Flagger's webhook payload)")
		return
	}
	key := s.canaryService(h.Namespace, h.Name)
	incs, err := s.o.Store.ListIncidents(r.Context(), key)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	for _, inc := range incs {
		if inc.Status == store.StatusOpen {
			writeJSON(w, http.StatusOK, map[string]string{"rollback": inc.ID, "service": key})
			return
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"service": key, "rollback": ""})
}

// canaryService is the service key of a Flagger canary: the configured
// service naming it, else NAMESPACE/canary/NAME.
func (s *Server) canaryService(ns, name string) string {
	for _, n := range s.serviceNames() {
		k := s.o.Config.Services[n].Kubernetes
		if kind, err := kube.ParseKind(k.Kind); err == nil && kind == kube.KindCanary && k.Name == name && k.Namespace == ns {
			return n
		}
	}
	return kube.Target{Namespace: ns, Name: name, Kind: kube.KindCanary}.String()
}
