package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/decide"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/kube"
	"github.com/rollback-dev/rollback/internal/notify"
	"github.com/rollback-dev/rollback/internal/progress"
	"github.com/rollback-dev/rollback/internal/runbook"
	"github.com/rollback-dev/rollback/internal/store"
)

// WideRequest is a wide rollback: every Deployment, StatefulSet and
// DaemonSet a label selector matches in a namespace, as one incident (one
// release often spans many services: a shared library, a sidecar, a base
// image).
type WideRequest struct {
	Namespace string
	Selector  string
	Context   string
	Client    kubernetes.Interface
	// Parallel bounds the workloads rolled back at once (default 20).
	Parallel int
	Timeout  time.Duration // each workload's rollout
	// Started is told the incident as soon as it opens.
	Started func(string)
}

// WideItem is one workload of a wide rollback.
type WideItem struct {
	Workload string `json:"workload"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
	Bad      string `json:"badVersion,omitempty"`
	Good     string `json:"goodVersion,omitempty"`
	State    string `json:"state"` // planned, done, skipped, failed
	Error    string `json:"error,omitempty"`
}

// WideOutcome is what a wide rollback did.
type WideOutcome struct {
	Incident string     `json:"incident"`
	Items    []WideItem `json:"items"`
	Resumed  bool       `json:"resumed"`
}

// wideKey journals a wide incident's request; wideTarget and wideDone
// each workload's pinned target and its completion.
const (
	wideKey    = "wide"
	wideTarget = "wide-target:"
	wideDone   = "wide-done:"
)

// WideService is the key a wide rollback's incident, lease and blocks use.
func WideService(ns, selector string) string { return ns + "/selector:" + selector }

// ParseWideService is WideService's inverse: ok false for any other key.
func ParseWideService(key string) (ns, selector string, ok bool) {
	ns, selector, ok = strings.Cut(key, "/selector:")
	return ns, selector, ok && ns != "" && !strings.Contains(ns, "/")
}

// ErrNothingMatched: the selector matched no workload.
var ErrNothingMatched = errors.New("the selector matched no Deployment, StatefulSet or DaemonSet")

// Wide rolls back every matching workload as one incident: each
// workload's target is planned and journaled before anything changes, then
// they are undone with bounded parallelism, each completion journaled. A
// resumed (or repeated) run finishes the open incident, undoing only what
// is not done, to the targets pinned the first time.
func (e *Engine) Wide(ctx context.Context, r WideRequest) (*WideOutcome, error) {
	sel, err := labels.Parse(r.Selector)
	if err != nil || sel.Empty() {
		return nil, fmt.Errorf("selector %q: expected labels as kubectl takes them (e.g. release=2026-11-26,tier in (web,api)): %v", r.Selector, err)
	}
	if r.Parallel <= 0 {
		r.Parallel = 20
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	key := WideService(r.Namespace, sel.String())
	ex := e.Executor()
	release, err := Hold(ctx, ex, key)
	if err != nil {
		return nil, err
	}
	defer release()
	out := &WideOutcome{}
	open, err := e.OpenIncident(ctx, key)
	if err != nil {
		return nil, err
	}
	targets, err := wideTargets(ctx, r.Client, r.Namespace, sel)
	if err != nil {
		return nil, err
	}
	var inc *store.Incident
	if open != nil {
		inc, out.Resumed = open, true
	} else {
		if len(targets) == 0 {
			return nil, fmt.Errorf("%w in namespace %s: %s", ErrNothingMatched, r.Namespace, sel)
		}
		reasons, _ := json.Marshal([]decide.Reason{{Question: "Who decided?", Answer: "the operator ran a wide rollback (--selector " + sel.String() + ")", Source: decide.Override},
			{Question: "Target", Answer: fmt.Sprintf("%d workload(s) matching %s in %s, each to its previous good revision", len(targets), sel, r.Namespace), Source: decide.Measured}})
		inc = &store.Incident{Service: key, Decision: string(decide.RollBack), Rationale: string(reasons), OpenedAt: e.now(),
			BadVersion: fmt.Sprintf("%d workloads", len(targets))}
		if err := e.Store.CreateIncident(ctx, inc); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(r.wideRecord())
		if _, err := e.Store.AppendEvent(ctx, store.Event{Incident: inc.ID, Time: e.now(), Step: "run", Phase: store.PhaseNote, Key: wideKey, Evidence: string(b)}); err != nil {
			return nil, err
		}
	}
	out.Incident = inc.ID
	if r.Started != nil {
		r.Started(inc.ID)
	}
	x := &wideRun{e: e, r: r, inc: inc, targets: targets}
	// Every Deployment's history with two LISTs, not a namespace-wide
	// ReplicaSet LIST per workload; a workload missing here (or changed
	// since: the undo's generation guard) is read on its own.
	if x.hist, err = kube.DeploymentHistories(ctx, r.Client, r.Namespace, sel); err != nil {
		x.hist = nil
	}
	err = ex.Run(ctx, inc.ID, x.plan(key))
	out.Items = x.items()
	return out, err
}

// wideRecord is what a wide incident journals of its request, so resume
// can rebuild it.
type wideRecord struct {
	Namespace string `json:"namespace"`
	Selector  string `json:"selector"`
	Context   string `json:"context,omitempty"`
	Parallel  int    `json:"parallel"`
	Timeout   string `json:"timeout"`
}

func (r WideRequest) wideRecord() wideRecord {
	return wideRecord{Namespace: r.Namespace, Selector: r.Selector, Context: r.Context, Parallel: r.Parallel, Timeout: r.Timeout.String()}
}

// wideOf reads a wide incident's request ("" selector when not wide).
func (e *Engine) wideOf(ctx context.Context, id string) (*wideRecord, error) {
	evs, err := e.Store.Events(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if ev.Key == wideKey {
			var w wideRecord
			if err := json.Unmarshal([]byte(ev.Evidence), &w); err != nil {
				return nil, fmt.Errorf("incident %s: wide request: %w", id, err)
			}
			return &w, nil
		}
	}
	return nil, nil
}

// resumeWide finishes a wide incident.
func (e *Engine) resumeWide(ctx context.Context, w *wideRecord) (*WideOutcome, error) {
	if e.Client == nil {
		return nil, errors.New("resume: no Kubernetes client")
	}
	cs, err := e.Client(w.Context)
	if err != nil {
		return nil, err
	}
	timeout, _ := time.ParseDuration(w.Timeout)
	return e.Wide(ctx, WideRequest{Namespace: w.Namespace, Selector: w.Selector, Context: w.Context, Client: cs, Parallel: w.Parallel, Timeout: timeout})
}

// wideTargets lists the matching workloads, sorted.
func wideTargets(ctx context.Context, cs kubernetes.Interface, ns string, sel labels.Selector) ([]kube.Target, error) {
	opts := metav1.ListOptions{LabelSelector: sel.String()}
	var out []kube.Target
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	for _, d := range deps.Items {
		out = append(out, kube.Target{Namespace: d.Namespace, Name: d.Name, Kind: kube.KindDeployment})
	}
	sts, err := cs.AppsV1().StatefulSets(ns).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list statefulsets: %w", err)
	}
	for _, s := range sts.Items {
		out = append(out, kube.Target{Namespace: s.Namespace, Name: s.Name, Kind: kube.KindStatefulSet})
	}
	dss, err := cs.AppsV1().DaemonSets(ns).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list daemonsets: %w", err)
	}
	for _, d := range dss.Items {
		out = append(out, kube.Target{Namespace: d.Namespace, Name: d.Name, Kind: kube.KindDaemonSet})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

type wideRun struct {
	e       *Engine
	r       WideRequest
	inc     *store.Incident
	targets []kube.Target
	// hist holds the Deployments' histories read up front (nil: none).
	hist map[string]*kube.History

	mu    sync.Mutex
	state map[string]*WideItem
}

func (x *wideRun) set(it WideItem) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.state == nil {
		x.state = map[string]*WideItem{}
	}
	x.state[it.Workload] = &it
}

func (x *wideRun) items() []WideItem {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]WideItem, 0, len(x.state))
	for _, it := range x.state {
		out = append(out, *it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Workload < out[j].Workload })
	return out
}

// plan is the runbook's steps for a wide incident: the same table and
// the same declare, close and review as a service's run; the undo rolls
// back every pinned workload; the steps that act on one service's
// database, reconciler, flag or checks do not apply.
func (x *wideRun) plan(key string) runbook.Plan {
	steps := make([]Step, 0, len(Steps))
	for _, st := range Steps {
		switch st.Name {
		case incident.StepDeclare:
			st.Run = func(ctx context.Context, _ *execution, sc *runbook.StepContext) (string, error) {
				return x.declare(ctx, sc)
			}
		case incident.StepClose:
			// Nothing notifies a selector: the close is the incident's own
			// and must not fail silently.
			st.Soft = false
		case incident.StepReview:
		case incident.StepKube:
			st.Deadline = func(*config.Service, time.Duration) time.Duration { return 2*x.r.Timeout + time.Minute }
			st.Run = func(ctx context.Context, _ *execution, sc *runbook.StepContext) (string, error) {
				return x.undo(ctx, sc)
			}
		default:
			st.Deadline, st.Run = nil, wideSkip
		}
		steps = append(steps, st)
	}
	inc := x.inc
	ex := &execution{e: x.e, inc: inc, timeout: x.r.Timeout,
		ninc: notify.Incident{ID: inc.ID, Service: inc.Service, BadVersion: inc.BadVersion, GoodVersion: inc.GoodVersion, Date: inc.OpenedAt}}
	return ex.plan(key, steps)
}

func (x *wideRun) declare(ctx context.Context, sc *runbook.StepContext) (string, error) {
	return fmt.Sprintf("incident %s: wide rollback of %d workload(s) matching %s in %s", x.inc.ID, len(x.targets), x.r.Selector, x.r.Namespace), nil
}

func wideSkip(context.Context, *execution, *runbook.StepContext) (string, error) {
	return "", fmt.Errorf("a wide rollback spans many services; this step is per service (run it with each service's own rollback.yaml): %w", runbook.ErrSkip)
}

// undo plans and pins every workload's target (journaled, once), then
// rolls them back, at most Parallel at a time.
func (x *wideRun) undo(ctx context.Context, sc *runbook.StepContext) (string, error) {
	e := x.e
	evs, err := e.Store.Events(ctx, x.inc.ID)
	if err != nil {
		return "", err
	}
	pinned, done := map[string]WideItem{}, map[string]bool{}
	for _, ev := range evs {
		if ref, ok := strings.CutPrefix(ev.Key, wideTarget); ok {
			var it WideItem
			if json.Unmarshal([]byte(ev.Evidence), &it) == nil {
				pinned[ref] = it
			}
		}
		if ref, ok := strings.CutPrefix(ev.Key, wideDone); ok {
			done[ref] = true
		}
	}
	// A resumed run finishes what was pinned; workloads that appeared
	// since are not part of this incident.
	targets := x.targets
	if len(pinned) > 0 {
		targets = targets[:0:0]
		for ref := range pinned {
			t, err := parseTargetKey(ref)
			if err == nil {
				targets = append(targets, t)
			}
		}
		sort.Slice(targets, func(i, j int) bool { return targets[i].String() < targets[j].String() })
	}
	var mu sync.Mutex
	var failed []string
	// The slots bound the API work; a workload waiting for its rollout
	// gives its slot to the next one.
	sem := make(chan struct{}, x.r.Parallel)
	each := func(list []kube.Target, fn func(t kube.Target, release func())) {
		var wg sync.WaitGroup
		for _, t := range list {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				var once sync.Once
				release := func() { once.Do(func() { <-sem }) }
				defer release()
				defer func() {
					if v := recover(); v != nil {
						x.fail(ctx, sc, &mu, &failed, WideItem{Workload: t.String()}, fmt.Errorf("panic: %v", v))
					}
				}()
				fn(t, release)
			}()
		}
		wg.Wait()
	}
	// First every target is planned (from the histories read up front
	// where there are, else each read on its own) and all are pinned in
	// one journal transaction, before anything changes.
	// Pinned by an earlier run (before this one pins anything).
	earlier := make(map[string]bool, len(pinned))
	for ref := range pinned {
		earlier[ref] = true
	}
	var toPlan []kube.Target
	for _, t := range targets {
		if _, ok := pinned[t.String()]; !ok && !done[t.String()] {
			toPlan = append(toPlan, t)
		}
	}
	var pins []store.Event
	each(toPlan, func(t kube.Target, _ func()) {
		ref := t.String()
		w := &Workload{Target: t, Client: x.r.Client, Context: x.r.Context}
		var p *kube.Plan
		var err error
		if h := x.hist[ref]; h != nil {
			p, err = PlanRollbackFrom(ctx, w, h, 0)
		} else {
			p, err = PlanRollback(ctx, w, 0)
		}
		if err != nil {
			x.fail(ctx, sc, &mu, &failed, WideItem{Workload: ref}, err)
			return
		}
		it := WideItem{Workload: ref, Good: versionOf(p.To), Bad: versionOf(p.From)}
		key, msg := wideTarget+ref, "pinned "+ref+" → "+it.Good
		if p.NoOp {
			it.State = "skipped"
			key, msg = wideDone+ref, "skipped: already on revision "+fmt.Sprint(p.To.Number)
		} else {
			it.To = p.To.Object
			if p.From != nil {
				it.From = p.From.Object
			}
		}
		b, _ := json.Marshal(it)
		mu.Lock()
		pins = append(pins, store.Event{Incident: x.inc.ID, Time: e.now(), Step: sc.Step, Phase: store.PhaseNote, Key: key, Message: msg, Evidence: string(b)})
		mu.Unlock()
	})
	if len(pins) > 0 {
		sort.Slice(pins, func(i, j int) bool { return pins[i].Key < pins[j].Key })
		if err := e.Store.AppendEvents(context.WithoutCancel(ctx), pins); err != nil {
			return "", fmt.Errorf("journal the %d pinned targets (nothing was rolled back): %w", len(pins), err)
		}
		for _, ev := range pins {
			var it WideItem
			_ = json.Unmarshal([]byte(ev.Evidence), &it)
			if ref, ok := strings.CutPrefix(ev.Key, wideDone); ok {
				done[ref] = true
				x.set(it)
			} else {
				pinned[it.Workload] = it
			}
		}
	}
	each(targets, func(t kube.Target, release func()) {
		ref := t.String()
		it, ok := pinned[ref]
		if done[ref] {
			if it, ok := pinned[ref]; ok {
				it.State = "done"
				x.set(it)
			}
			return
		}
		if !ok {
			return // its plan failed (journaled above)
		}
		// Planned in this run from the history read up front: the plan
		// step need not read it again (the undo's guard refuses a change
		// since). Pinned by an earlier run: read it as it is now.
		var h *kube.History
		if _, read := x.hist[ref]; read && !earlier[ref] {
			h = x.hist[ref]
		}
		res, err := kube.Rollback(ctx, x.r.Client, t, kube.RollbackOptions{Timeout: x.r.Timeout, Now: e.Now, ToObject: it.To, FromObject: it.From, Resume: true, History: h,
			Settling: release,
			Events:   func(ev progress.Event) { e.Events.Emit(ev.Time, ref+" "+ev.Step, ev.Phase, ev.Message, ev.Err) }})
		if err != nil {
			x.fail(ctx, sc, &mu, &failed, it, err)
			return
		}
		it.State = "done"
		x.set(it)
		x.journal(ctx, sc, wideDone+ref, store.PhaseNote, fmt.Sprintf("%s rolled back to %s (%d ready)", ref, it.Good, res.ReadyPods), it)
	})
	n := len(targets)
	if len(failed) > 0 {
		sort.Strings(failed)
		return "", fmt.Errorf("%d of %d workload(s) not rolled back: %s; 'rollback resume %s' retries them", len(failed), n, strings.Join(failed, "; "), x.inc.ID)
	}
	return fmt.Sprintf("%d workload(s) rolled back and rolled out", n), nil
}

func (x *wideRun) fail(ctx context.Context, sc *runbook.StepContext, mu *sync.Mutex, failed *[]string, it WideItem, err error) {
	it.State, it.Error = "failed", err.Error()
	x.set(it)
	mu.Lock()
	*failed = append(*failed, it.Workload+": "+err.Error())
	mu.Unlock()
	_ = sc.Note(ctx, it.Workload+" failed: "+err.Error())
}

// journal appends a keyed entry; a key already there is kept as it was.
func (x *wideRun) journal(ctx context.Context, sc *runbook.StepContext, key string, ph store.Phase, msg string, it WideItem) {
	b, _ := json.Marshal(it)
	_, _ = x.e.Store.AppendEvent(context.WithoutCancel(ctx), store.Event{Incident: x.inc.ID, Time: x.e.now(), Step: sc.Step, Phase: ph, Key: key, Message: msg, Evidence: string(b)})
}

// parseTargetKey reads NAMESPACE/KIND/NAME.
func parseTargetKey(s string) (kube.Target, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return kube.Target{}, fmt.Errorf("not NAMESPACE/KIND/NAME: %q", s)
	}
	k, err := kube.ParseKind(parts[1])
	if err != nil {
		return kube.Target{}, err
	}
	return kube.Target{Namespace: parts[0], Kind: k, Name: parts[2]}, nil
}
