// Package alb switches an AWS Application Load Balancer listener between
// blue/green target groups with the AWS SDK for Go v2, as the runbook's
// "aws elbv2 modify-listener" does: it reads the listener's default forward
// action (DescribeListeners), checks the standby's targets
// (DescribeTargetHealth), forwards to it (ModifyListener), and keeps
// rollback's marks and the last switch as tags (DescribeTags, AddTags,
// RemoveTags). Credentials come from the SDK's standard chain and are
// never printed. It implements kube.LoadBalancer.
package alb

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/rollback-dev/rollback/internal/kube"
)

// API is the part of the ELBv2 client rollback uses.
type API interface {
	DescribeListeners(context.Context, *elbv2.DescribeListenersInput, ...func(*elbv2.Options)) (*elbv2.DescribeListenersOutput, error)
	ModifyListener(context.Context, *elbv2.ModifyListenerInput, ...func(*elbv2.Options)) (*elbv2.ModifyListenerOutput, error)
	DescribeTargetHealth(context.Context, *elbv2.DescribeTargetHealthInput, ...func(*elbv2.Options)) (*elbv2.DescribeTargetHealthOutput, error)
	DescribeTags(context.Context, *elbv2.DescribeTagsInput, ...func(*elbv2.Options)) (*elbv2.DescribeTagsOutput, error)
	AddTags(context.Context, *elbv2.AddTagsInput, ...func(*elbv2.Options)) (*elbv2.AddTagsOutput, error)
	RemoveTags(context.Context, *elbv2.RemoveTagsInput, ...func(*elbv2.Options)) (*elbv2.RemoveTagsOutput, error)
}

// Options configure a Listener.
type Options struct {
	ListenerARN string
	// Region defaults to the SDK's (AWS_REGION, profile), else the
	// listener ARN's.
	Region string
	// Endpoint overrides the ELBv2 endpoint (a VPC endpoint, LocalStack,
	// a test server).
	Endpoint string
	// TargetGroups names the colours: name -> target group ARN. Target
	// groups in the listener's forward action are colours too.
	TargetGroups map[string]string
	// Timeout bounds each API call (default 10s).
	Timeout time.Duration
}

// Listener is one ALB listener.
type Listener struct {
	api API
	o   Options
}

// LastSwitchTag on the listener records the last switch: from=NAME
// to=NAME at=RFC3339 (a tag value allows no JSON).
const LastSwitchTag = "rollback/last-switch"

var listenerARN = regexp.MustCompile(`^arn:aws[a-z-]*:elasticloadbalancing:([a-z0-9-]+):[0-9]{12}:listener/(app|net|gwy)/[^/]+/[0-9a-f]+/[0-9a-f]+$`)

// ValidListenerARN reports whether s is an ELBv2 listener ARN.
func ValidListenerARN(s string) bool { return listenerARN.MatchString(s) }

// New builds a Listener on the SDK's default configuration.
func New(ctx context.Context, o Options) (*Listener, error) {
	m := listenerARN.FindStringSubmatch(o.ListenerARN)
	if m == nil {
		return nil, fmt.Errorf("%q is not an ELBv2 listener ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:listener/app/NAME/ID/ID)", o.ListenerARN)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(o.Timeout)),
		awsconfig.WithRetryMaxAttempts(3),
	}
	if o.Region != "" {
		opts = append(opts, awsconfig.WithRegion(o.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = m[1]
	}
	client := elbv2.NewFromConfig(cfg, func(eo *elbv2.Options) {
		if o.Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.Endpoint)
		}
	})
	return NewWithAPI(client, o), nil
}

// NewWithAPI builds a Listener on a given client.
func NewWithAPI(api API, o Options) *Listener {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &Listener{api: api, o: o}
}

func (l *Listener) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.o.Timeout)
}

// tgName is a target group's name from its ARN (targetgroup/NAME/ID).
func tgName(arn string) string {
	if i := strings.Index(arn, ":targetgroup/"); i >= 0 {
		name, _, _ := strings.Cut(arn[i+len(":targetgroup/"):], "/")
		return name
	}
	return arn
}

// forwardAction is the listener's forward default action (index in
// DefaultActions), with its weights.
func forwardAction(ls *types.Listener) (int, map[string]int32, []string, error) {
	for i, a := range ls.DefaultActions {
		if a.Type != types.ActionTypeEnumForward {
			continue
		}
		w := map[string]int32{}
		var order []string
		if a.ForwardConfig != nil && len(a.ForwardConfig.TargetGroups) > 0 {
			for _, tg := range a.ForwardConfig.TargetGroups {
				arn := aws.ToString(tg.TargetGroupArn)
				weight := int32(1)
				if tg.Weight != nil {
					weight = *tg.Weight
				}
				w[arn] = weight
				order = append(order, arn)
			}
		} else if a.TargetGroupArn != nil {
			w[*a.TargetGroupArn] = 1
			order = append(order, *a.TargetGroupArn)
		}
		return i, w, order, nil
	}
	return -1, nil, nil, fmt.Errorf("%w: listener %s has no forward default action", kube.ErrNotBlueGreen, aws.ToString(ls.ListenerArn))
}

func (l *Listener) listener(ctx context.Context) (*types.Listener, error) {
	cctx, cancel := l.call(ctx)
	defer cancel()
	out, err := l.api.DescribeListeners(cctx, &elbv2.DescribeListenersInput{ListenerArns: []string{l.o.ListenerARN}})
	if err != nil {
		return nil, fmt.Errorf("describe listener %s: %w", l.o.ListenerARN, err)
	}
	if len(out.Listeners) != 1 {
		return nil, fmt.Errorf("describe listener %s: %d listeners returned", l.o.ListenerARN, len(out.Listeners))
	}
	return &out.Listeners[0], nil
}

// Colours reads the listener, its target groups and their tags.
func (l *Listener) Colours(ctx context.Context) (*kube.LBState, error) {
	ls, err := l.listener(ctx)
	if err != nil {
		return nil, err
	}
	_, weights, order, err := forwardAction(ls)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	var extra []string
	for name, arn := range l.o.TargetGroups {
		names[arn] = name
		if _, ok := weights[arn]; !ok {
			extra = append(extra, arn)
		}
	}
	sort.Strings(extra)
	order = append(order, extra...)
	tags, err := l.tags(ctx, append([]string{l.o.ListenerARN}, order...))
	if err != nil {
		return nil, err
	}
	s := &kube.LBState{Listener: l.o.ListenerARN}
	byName := map[string]string{}
	var best int32 = -1
	for _, arn := range order {
		name := names[arn]
		if name == "" {
			name = tgName(arn)
		}
		byName[name] = arn
		w := weights[arn]
		s.Colours = append(s.Colours, kube.LBColour{ID: arn, Name: name, Marks: tags[arn], Weight: w})
		if w > best && w > 0 {
			best, s.Active = w, arn
		}
	}
	if sw, ok := parseSwitch(tags[l.o.ListenerARN][LastSwitchTag], byName); ok {
		s.Switches = []kube.Switch{sw}
	}
	return s, nil
}

func (l *Listener) tags(ctx context.Context, arns []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for i := 0; i < len(arns); i += 20 { // DescribeTags takes up to 20 ARNs
		j := min(i+20, len(arns))
		cctx, cancel := l.call(ctx)
		res, err := l.api.DescribeTags(cctx, &elbv2.DescribeTagsInput{ResourceArns: arns[i:j]})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("describe tags: %w", err)
		}
		for _, d := range res.TagDescriptions {
			m := map[string]string{}
			for _, t := range d.Tags {
				m[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
			out[aws.ToString(d.ResourceArn)] = m
		}
	}
	return out, nil
}

func formatSwitch(from, to string, at time.Time) string {
	return "from=" + from + " to=" + to + " at=" + at.UTC().Format(time.RFC3339)
}

func parseSwitch(v string, byName map[string]string) (kube.Switch, bool) {
	var sw kube.Switch
	for _, f := range strings.Fields(v) {
		k, val, _ := strings.Cut(f, "=")
		switch k {
		case "from":
			sw.From = byName[val]
		case "to":
			sw.To = byName[val]
		case "at":
			sw.At, _ = time.Parse(time.RFC3339, val)
		}
	}
	return sw, sw.From != "" && sw.To != ""
}

// ErrNotInUse: AWS health-checks no target of a target group the load
// balancer does not use, so its health is unknown.
var ErrNotInUse = errors.New("target group is not in use by the load balancer")

// Health counts the colour's healthy targets among those registered.
func (l *Listener) Health(ctx context.Context, colour string) (int, int, string, error) {
	cctx, cancel := l.call(ctx)
	defer cancel()
	out, err := l.api.DescribeTargetHealth(cctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(colour)})
	if err != nil {
		return 0, 0, "", fmt.Errorf("describe target health of %s: %w", tgName(colour), err)
	}
	healthy, total, unused := 0, 0, 0
	states := map[string]int{}
	for _, d := range out.TargetHealthDescriptions {
		if d.TargetHealth == nil {
			continue
		}
		total++
		st := d.TargetHealth.State
		states[string(st)]++
		switch st {
		case types.TargetHealthStateEnumHealthy:
			healthy++
		case types.TargetHealthStateEnumUnused:
			unused++
		}
	}
	var parts []string
	for st, n := range states {
		parts = append(parts, fmt.Sprintf("%d %s", n, st))
	}
	sort.Strings(parts)
	msg := strings.Join(parts, ", ")
	if total > 0 && unused == total {
		return 0, total, msg, fmt.Errorf("%w: %s's %d target(s) are unused, so AWS does not health-check them; keep it in the listener's forward action with weight 0 so it stays checked",
			kube.ErrStandbyNotReady, tgName(colour), total)
	}
	return healthy, total, msg, nil
}

// Forward points the listener's forward action at the colour: weight 1 to
// it, 0 to every other target group (kept attached, so AWS goes on health
// checking the abandoned colour for inspection), keeping the action's
// order, stickiness and the listener's other actions. Then it records
// the switch on the listener.
func (l *Listener) Forward(ctx context.Context, s *kube.LBState, to string, sw kube.Switch, dry bool) error {
	ls, err := l.listener(ctx)
	if err != nil {
		return err
	}
	i, weights, order, err := forwardAction(ls)
	if err != nil {
		return err
	}
	if _, ok := weights[to]; !ok {
		order = append(order, to)
	}
	if len(order) > 5 {
		return fmt.Errorf("listener %s: a forward action takes at most 5 target groups, this one would have %d", l.o.ListenerARN, len(order))
	}
	actions := append([]types.Action(nil), ls.DefaultActions...)
	a := actions[i]
	fc := &types.ForwardActionConfig{}
	if a.ForwardConfig != nil {
		fc.TargetGroupStickinessConfig = a.ForwardConfig.TargetGroupStickinessConfig
	}
	for _, arn := range order {
		w := int32(0)
		if arn == to {
			w = 1
		}
		fc.TargetGroups = append(fc.TargetGroups, types.TargetGroupTuple{TargetGroupArn: aws.String(arn), Weight: aws.Int32(w)})
	}
	actions[i] = types.Action{Type: types.ActionTypeEnumForward, Order: a.Order, ForwardConfig: fc}
	if dry {
		return nil
	}
	cctx, cancel := l.call(ctx)
	_, err = l.api.ModifyListener(cctx, &elbv2.ModifyListenerInput{ListenerArn: aws.String(l.o.ListenerARN), DefaultActions: actions})
	cancel()
	if err != nil {
		return fmt.Errorf("modify listener %s: %w", l.o.ListenerARN, err)
	}
	name := func(arn string) string {
		for _, c := range s.Colours {
			if c.ID == arn {
				return c.Name
			}
		}
		return tgName(arn)
	}
	return l.addTags(ctx, l.o.ListenerARN, map[string]string{LastSwitchTag: formatSwitch(name(sw.From), name(sw.To), sw.At)})
}

// Mark sets (or, for nil values, removes) tags on a target group.
func (l *Listener) Mark(ctx context.Context, colour string, marks map[string]*string) error {
	set := map[string]string{}
	var remove []string
	for k, v := range marks {
		if v == nil {
			remove = append(remove, k)
		} else {
			set[k] = *v
		}
	}
	if len(set) > 0 {
		if err := l.addTags(ctx, colour, set); err != nil {
			return err
		}
	}
	if len(remove) > 0 {
		sort.Strings(remove)
		cctx, cancel := l.call(ctx)
		defer cancel()
		if _, err := l.api.RemoveTags(cctx, &elbv2.RemoveTagsInput{ResourceArns: []string{colour}, TagKeys: remove}); err != nil {
			return fmt.Errorf("remove tags of %s: %w", tgName(colour), err)
		}
	}
	return nil
}

func (l *Listener) addTags(ctx context.Context, arn string, set map[string]string) error {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var tags []types.Tag
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(TagValue(set[k]))})
	}
	cctx, cancel := l.call(ctx)
	defer cancel()
	if _, err := l.api.AddTags(cctx, &elbv2.AddTagsInput{ResourceArns: []string{arn}, Tags: tags}); err != nil {
		return fmt.Errorf("tag %s: %w", tgName(arn), err)
	}
	return nil
}

var tagUnsafe = regexp.MustCompile(`[^\p{L}\p{Z}\p{N}_.:/=+\-@]`)

// TagValue makes s a valid tag value: only the characters AWS allows
// (letters, digits, spaces, _ . : / = + - @), at most 256.
func TagValue(s string) string {
	s = tagUnsafe.ReplaceAllString(s, " ")
	if r := []rune(s); len(r) > 256 {
		s = string(r[:256])
	}
	return s
}

var _ kube.LoadBalancer = (*Listener)(nil)
