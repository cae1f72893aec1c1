package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
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
// answers once every trigger is recorded (a run's incident opened, a
// proposal or a repeat journaled); a trigger that recorded nothing (the
// service's triggers stayed busy, the cluster or the store failed) makes
// it answer 503, and Alertmanager sends the notification again.
// Deduplication is per firing instance (the group, each alert's
// fingerprint and startsAt), so repeats change nothing, and a group that
// fires again a month later is a new trigger.
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
		svc       string
		sev       decide.Severity
		alerts    []string
		instances []string
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
			h.instances = append(h.instances, alertInstance(a))
		}
	}
	ans := AlertAnswer{Services: []string{}}
	if len(hits) == 0 {
		ans.Ignored = "no firing alert matches a service's automation.alerts"
		s.o.Metrics.Triggers.WithLabelValues("alertmanager", "ignored").Inc()
		writeJSON(w, http.StatusOK, ans)
		return
	}
	var names []string
	for name := range hits {
		names = append(names, name)
	}
	sort.Strings(names)
	results := make([]<-chan triggerRecord, len(names))
	for i, name := range names {
		h := hits[name]
		sort.Strings(h.alerts)
		sort.Strings(h.instances)
		t := engine.Trigger{Source: "alertmanager", Key: n.GroupKey, Instances: slices.Compact(h.instances), Severity: h.sev, Wait: s.o.TriggerWait,
			Auto: s.o.Config.Services[name].Automation.Auto,
			What: "Alertmanager (" + n.Receiver + "): " + strings.Join(slices.Compact(h.alerts), ", ") + " firing"}
		results[i] = s.trigger(name, t)
	}
	ans.Services = names
	timeout := time.After(triggerAnswerWait)
	var failed []string
	for i, ch := range results {
		select {
		case rec := <-ch:
			if rec.err != nil {
				failed = append(failed, names[i]+": "+rec.err.Error())
			}
		case <-timeout:
			// Still working (a slow API server): it records or fails in
			// the background; a failure is logged and counted.
		}
	}
	if len(failed) > 0 {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, AlertAnswer{Services: names, Ignored: "not recorded, send again: " + strings.Join(failed, "; ")})
		return
	}
	writeJSON(w, http.StatusAccepted, ans)
}

// triggerAnswerWait bounds how long Alertmanager's request waits for its
// triggers to be recorded.
const triggerAnswerWait = 20 * time.Second

// alertInstance names one firing of one alert: its fingerprint (its label
// set) and when it started firing. A repeat carries the same; an alert
// that resolved and fires again has a new startsAt.
func alertInstance(a Alert) string {
	fp := a.Fingerprint
	if fp == "" { // older senders: the labels are the identity
		keys := make([]string, 0, len(a.Labels))
		for k := range a.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%q=%q,", k, a.Labels[k])
		}
		sum := sha256.Sum256([]byte(b.String()))
		fp = hex.EncodeToString(sum[:8])
	}
	return fp + "@" + a.StartsAt.UTC().Format(time.RFC3339Nano)
}

// serviceGate admits one trigger of a service at a time in this process,
// waiting up to wait (default 5s); release is safe to call twice.
func (s *Server) serviceGate(service string, wait time.Duration) (release func(), ok bool) {
	if wait <= 0 {
		wait = 5 * time.Second
	}
	s.mu.Lock()
	if s.gates == nil {
		s.gates = map[string]chan struct{}{}
	}
	g := s.gates[service]
	if g == nil {
		g = make(chan struct{}, 1)
		s.gates[service] = g
	}
	s.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case g <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-g }) }, true
	case <-t.C:
		return nil, false
	}
}

// triggerRecord says whether a trigger was recorded (err nil) or not.
type triggerRecord struct{ err error }

// trigger handles a trigger for a configured service in the background;
// the channel tells when it is recorded (its run's incident opened, a
// proposal or repeat journaled) or that it recorded nothing.
func (s *Server) trigger(service string, t engine.Trigger) <-chan triggerRecord {
	rec := make(chan triggerRecord, 1)
	tell := func(err error) {
		select {
		case rec <- triggerRecord{err: err}:
		default:
		}
	}
	// Joining an open or proposed incident is quick and needs no lease:
	// done here, it takes no background slot in a storm.
	if dup, err := s.engineFor(nil).JoinOpen(context.WithoutCancel(s.baseContext()), service, t); err != nil || dup != nil {
		if dup != nil {
			s.o.Metrics.Triggers.WithLabelValues(t.Source, dup.Action).Inc()
		}
		tell(err)
		return rec
	}
	err := s.tryBackgroundN(4, func(ctx context.Context) {
		// One trigger of a service at a time in this process: the others
		// wait here, not polling the store's lease against each other,
		// and then most of them just join what the first one opened.
		release, ok := s.serviceGate(service, t.Wait)
		if !ok {
			tell(fmt.Errorf("%s: %w", service, engine.ErrTriggerBusy))
			return
		}
		defer release() // HandleTrigger first joins what the trigger before opened
		wl, err := s.o.Resolve(ctx, service)
		if err != nil {
			s.o.Log.Error("trigger: service not resolved", "service", service, "source", t.Source, "err", err)
			s.o.Metrics.Triggers.WithLabelValues(t.Source, "error").Inc()
			tell(err)
			return
		}
		var id string
		t.Started = func(i string) { id = i; s.markRunning(i, true); tell(nil); release() }
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
			if errors.Is(err, engine.ErrTriggerBusy) {
				s.o.Log.Warn("trigger not recorded: the service's triggers are busy; the sender retries", "service", service, "source", t.Source)
			} else {
				s.o.Log.Error("trigger failed", "service", service, "source", t.Source, "err", err)
			}
			if res == nil || res.Incident == "" {
				tell(err)
			}
			return
		}
		tell(nil)
		s.o.Log.Info("trigger handled", "service", service, "source", t.Source, "action", res.Action, "incident", res.Incident, "reason", res.Reason)
	})
	if err != nil {
		tell(err)
	}
	return rec
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
		s.o.Log.Warn("flagger webhook: store", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	// The status is the whole answer: Flagger sends no credential, so the
	// body names no incident and no service.
	for _, inc := range incs {
		if inc.Status == store.StatusOpen {
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	w.WriteHeader(http.StatusNotFound)
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
