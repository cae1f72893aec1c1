package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Blue/green at a load balancer outside the cluster (the runbook's AWS ALB
// example): the colours are the listener's target groups, the active one
// is where its default action forwards, and rolling back forwards to the
// standby after its targets are healthy. Marks and the switch record are
// kept on the load balancer (tags), like annotations on cluster objects.
// The load balancer's API is behind LoadBalancer (internal/alb for AWS),
// set on the Target by whoever builds it.

// KindLoadBalancer is a load balancer's listener.
const KindLoadBalancer Kind = "alb-listener"

// LoadBalancer is a listener that forwards to one of its colours.
type LoadBalancer interface {
	// Colours reads the listener: its colours (target groups) with their
	// marks, and which one the listener forwards to.
	Colours(ctx context.Context) (*LBState, error)
	// Health counts a colour's healthy and registered targets, with a
	// line of evidence.
	Health(ctx context.Context, colour string) (healthy, total int, msg string, err error)
	// Forward points the listener's default action at the colour only
	// (dry: validate without changing), recording the switch.
	Forward(ctx context.Context, s *LBState, to string, sw Switch, dry bool) error
	// Mark sets or (nil values) removes marks on a colour.
	Mark(ctx context.Context, colour string, marks map[string]*string) error
}

// LBState is a listener as LoadBalancer reads it.
type LBState struct {
	// Listener names it (its ARN).
	Listener string
	// Colours are the target groups; Active is the one the listener sends
	// the most traffic to ("" if none).
	Colours  []LBColour
	Active   string
	Switches []Switch

	api LoadBalancer // the listener's API the history was read through
}

// Health is a target group's registered targets: how many are healthy,
// of how many, and the load balancer's words, read through the API the
// history came from.
func (s *LBState) Health(ctx context.Context, object string) (healthy, total int, msg string, err error) {
	return s.api.Health(ctx, object)
}

// LBColour is one target group.
type LBColour struct {
	ID      string // its ARN (Revision.Object)
	Name    string // a short name (Revision.Colour)
	Created time.Time
	Marks   map[string]string // rollback/health, ...
	Weight  int32             // in the listener's forward action
}

// ErrNoLoadBalancer: the target's load balancer client was not set.
var ErrNoLoadBalancer = errors.New("no load balancer configured (loadBalancer: in rollback.yaml)")

type lbKind struct{}

// lbOf is the load balancer adapter cs carries.
func lbOf(cs kubernetes.Interface, t Target) (LoadBalancer, error) {
	lb, _ := AdaptersOf(cs)
	if lb == nil {
		return nil, fmt.Errorf("%s: %w", t.Ref(), ErrNoLoadBalancer)
	}
	return lb, nil
}

func (lbKind) history(ctx context.Context, cs kubernetes.Interface, t Target) (*History, error) {
	lb, err := lbOf(cs, t)
	if err != nil {
		return nil, err
	}
	s, err := lb.Colours(ctx)
	if err != nil {
		return nil, err
	}
	if len(s.Colours) < 2 {
		return nil, fmt.Errorf("%w: listener %s knows %d target group(s); a switch needs two (loadBalancer.targetGroups in rollback.yaml)", ErrNotBlueGreen, s.Listener, len(s.Colours))
	}
	if s.Active == "" {
		return nil, fmt.Errorf("%w: listener %s forwards to none of its target groups", ErrNotBlueGreen, s.Listener)
	}
	s.api = lb
	h := &History{Target: t, LB: s}
	for _, c := range s.Colours {
		r := Revision{Object: c.ID, Colour: c.Name, Created: c.Created, Health: Unknown,
			HealthReason: c.Marks[HealthReasonAnnotation], Current: c.ID == s.Active}
		if hv, err := ParseHealth(c.Marks[HealthAnnotation]); err == nil {
			r.Health = hv
		}
		h.Revisions = append(h.Revisions, r)
	}
	// Switches record target group ARNs; numberColours goes by Colour.
	byID := map[string]string{}
	for _, c := range s.Colours {
		byID[c.ID] = c.Name
	}
	sw := make([]Switch, len(s.Switches))
	for i, x := range s.Switches {
		sw[i] = Switch{From: byID[x.From], To: byID[x.To], At: x.At}
	}
	sort.SliceStable(h.Revisions, func(i, j int) bool { return h.Revisions[i].Object < h.Revisions[j].Object })
	numberColours(h, sw)
	return h, nil
}

// lbSwitch is the "patch" of a load balancer: the colour to forward to.
type lbSwitch struct {
	To     string `json:"to"`
	Switch Switch `json:"switch"`
}

func (lbKind) undoPatch(h *History, to *Revision) (types.PatchType, []byte, error) {
	b, err := json.Marshal(lbSwitch{To: to.Object, Switch: Switch{From: h.LB.Active, To: to.Object, At: time.Now().UTC()}})
	return "", b, err
}

func (lbKind) patch(ctx context.Context, cs kubernetes.Interface, t Target, _ types.PatchType, data []byte, o metav1.PatchOptions) error {
	var s lbSwitch
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	lb, err := lbOf(cs, t)
	if err != nil {
		return err
	}
	st, err := lb.Colours(ctx)
	if err != nil {
		return err
	}
	if st.Active != s.Switch.From {
		return fmt.Errorf("%w: listener %s now forwards to %s, not %s", ErrConflict, st.Listener, st.Active, s.Switch.From)
	}
	return lb.Forward(ctx, st, s.To, s.Switch, len(o.DryRun) > 0)
}

func (lbKind) status(runtime.Object) (string, bool, error)             { return "", true, nil }
func (lbKind) listWatch(kubernetes.Interface, Target) *cache.ListWatch { return nil }

// markPatch turns Mark's annotation patch into the load balancer's marks.
func (lbKind) markPatch(ctx context.Context, cs kubernetes.Interface, _, object string, data []byte) error {
	lb, _ := AdaptersOf(cs)
	if lb == nil {
		return fmt.Errorf("%s: %w", object, ErrNoLoadBalancer)
	}
	var p struct {
		Metadata struct {
			Annotations map[string]*string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	return lb.Mark(ctx, object, p.Metadata.Annotations)
}

// checkLBStandby: every registered target of the colour is healthy, and
// there is at least one.
func checkLBStandby(ctx context.Context, h *History, to *Revision) error {
	healthy, total, msg, err := h.LB.Health(ctx, to.Object)
	if err != nil {
		return err
	}
	if total == 0 || healthy < total {
		return fmt.Errorf("%w: target group %s has %d of %d target(s) healthy (%s)", ErrStandbyNotReady, to.Colour, healthy, total, msg)
	}
	return nil
}

// waitForwarded polls the listener until it forwards only to the colour
// and the colour's targets are healthy.
func waitForwarded(ctx context.Context, h *History, to *Revision, progress func(string)) (int, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		s, err := h.LB.api.Colours(ctx)
		if err != nil {
			return 0, err
		}
		msg := fmt.Sprintf("listener forwards to %s", s.Active)
		healthy := 0
		if s.Active == to.Object && lbOnly(s, to.Object) {
			var total int
			var hm string
			healthy, total, hm, err = h.LB.Health(ctx, to.Object)
			if err != nil {
				return 0, err
			}
			msg = fmt.Sprintf("listener forwards only to %s; %d of %d target(s) healthy (%s)", to.Colour, healthy, total, hm)
			if total > 0 && healthy == total {
				if progress != nil && msg != last {
					progress(msg)
				}
				return healthy, nil
			}
		}
		if progress != nil && msg != last {
			progress(msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w of %s to %s (last: %s)", ErrTimeout, h.Target.Ref(), to.Colour, last)
		case <-tick.C:
		}
	}
}

// lbOnly: no other colour has weight.
func lbOnly(s *LBState, id string) bool {
	for _, c := range s.Colours {
		if c.ID != id && c.Weight > 0 {
			return false
		}
	}
	return true
}

func (lbKind) settle(ctx context.Context, s *settling, out *settled) (string, error) {
	n, err := waitForwarded(ctx, s.h, s.to, s.say)
	if err != nil {
		return "", err
	}
	out.revision, out.readyPods = int64(len(s.h.Revisions)), n
	return fmt.Sprintf("%s: the listener forwards to %s, %d healthy target(s)", s.h.Target.Ref(), s.to.Colour, n), nil
}

func (lbKind) traits() traits { return traits{noImages: true} }

// prepare: the standby target group must be healthy before the listener
// forwards to it.
func (lbKind) prepare(ctx context.Context, cs kubernetes.Interface, h *History, to *Revision, _ DryRun) error {
	return CheckStandby(ctx, cs, h, to)
}
