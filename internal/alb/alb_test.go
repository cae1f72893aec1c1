package alb

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollback-dev/rollback/internal/alb/albtest"
	"github.com/rollback-dev/rollback/internal/kube"
)

const (
	region   = "eu-west-1"
	listener = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/checkout/50dc6c495c0c9188/f2f7dc8efc522ab2"
	blueTG   = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/checkout-blue/73e2d6bc24d8a067"
	greenTG  = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/checkout-green/a7d3e2b1c4f5e6d7"
	key      = "AKIDROLLBACKTEST"
	secret   = "s3cr3t/ROLLBACK+never+printed"
)

// awsEnv isolates the SDK's credential chain to the environment.
func awsEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", key)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// standIn serves the listener on green, blue healthy.
func standIn(t *testing.T) (*albtest.Server, *Listener) {
	t.Helper()
	awsEnv(t)
	s := albtest.Start(region, key, listener, greenTG,
		&albtest.TargetGroup{ARN: blueTG, Targets: []string{"healthy", "healthy"}},
		&albtest.TargetGroup{ARN: greenTG, Targets: []string{"healthy"}})
	t.Cleanup(s.Close)
	// The region comes from the listener's ARN: nothing else names it.
	l, err := New(context.Background(), Options{ListenerARN: listener, Endpoint: s.URL, Timeout: 2 * time.Second,
		TargetGroups: map[string]string{"blue": blueTG, "green": greenTG}})
	if err != nil {
		t.Fatal(err)
	}
	return s, l
}

var target = kube.Target{Namespace: "default", Name: "checkout", Kind: kube.KindLoadBalancer}

// clients is a cluster with the listener's API beside it.
func clients(l kube.LoadBalancer) kubernetes.Interface {
	return kube.WithAdapters(fake.NewClientset(), l, nil)
}

// The runbook's ALB example, through the SDK: the listener forwards back
// to blue after DescribeTargetHealth says blue is healthy; green stays
// attached (weight 0) and is tagged bad; the switch is recorded, so a
// second rollback does not go back to green.
func TestSwitchBackToBlue(t *testing.T) {
	ctx := context.Background()
	s, l := standIn(t)
	cs := clients(l)
	res, err := kube.Rollback(ctx, cs, target, kube.RollbackOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("rollback: %v (stand-in errors: %v)", err, s.Errors)
	}
	if w := s.Weights(); w[blueTG] != 1 || w[greenTG] != 0 {
		t.Errorf("weights after the switch: %v", w)
	}
	if res.Plan.To.Colour != "blue" || res.ReadyPods != 2 || res.MarkedBad != greenTG {
		t.Errorf("result %+v", res)
	}
	if g := s.Tags(greenTG); g[kube.HealthAnnotation] != "bad" {
		t.Errorf("green tags %v", g)
	}
	if b := s.Tags(blueTG); b[kube.HealthAnnotation] != "good" {
		t.Errorf("blue tags %v", b)
	}
	if sw := s.Tags(listener)[LastSwitchTag]; !strings.HasPrefix(sw, "from=green to=blue at=") {
		t.Errorf("last switch %q", sw)
	}
	if len(s.Errors) > 0 {
		t.Errorf("requests AWS would refuse: %v", s.Errors)
	}
	h, err := kube.GetHistory(ctx, cs, target)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kube.PlanUndo(h, 0); !errors.Is(err, kube.ErrNoTarget) {
		t.Errorf("second rollback: %v, want ErrNoTarget", err)
	}
}

// A standby with an unhealthy target, or with targets AWS does not check
// (unused), is refused before ModifyListener.
func TestStandbyNotHealthy(t *testing.T) {
	for name, states := range map[string][]string{"unhealthy": {"healthy", "unhealthy"}, "unused": {"unused", "unused"}, "none": nil} {
		s, l := standIn(t)
		s.SetTargets(blueTG, states...)
		_, err := kube.Rollback(context.Background(), clients(l), target, kube.RollbackOptions{Timeout: 5 * time.Second})
		if !errors.Is(err, kube.ErrStandbyNotReady) {
			t.Errorf("%s: %v, want ErrStandbyNotReady", name, err)
		}
		if s.Calls("ModifyListener") != 0 || s.Weights()[greenTG] != 1 {
			t.Errorf("%s: the listener was modified", name)
		}
		if name == "unused" && !strings.Contains(err.Error(), "weight 0") {
			t.Errorf("unused: the error does not say what to do: %v", err)
		}
	}
}

// A hung ELBv2 endpoint fails the call at its timeout, never hangs.
func TestHungEndpointTimesOut(t *testing.T) {
	s, _ := standIn(t)
	s.Hang = make(chan struct{})
	defer close(s.Hang)
	l, err := New(context.Background(), Options{ListenerARN: listener, Endpoint: s.URL, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = l.Colours(context.Background())
	if err == nil {
		t.Fatal("no error from a hung endpoint")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("the error holds the secret key: %v", err)
	}
}

// A tag value keeps only the characters AWS allows.
func TestTagValue(t *testing.T) {
	got := TagValue(`abandoned: rollback to "v1.2" (revision 3) <now> ` + strings.Repeat("x", 300))
	if strings.ContainsAny(got, `"()<>`) || len([]rune(got)) != 256 {
		t.Errorf("%q", got)
	}
	if TagValue("from=blue to=green at=2026-11-27T16:00:00Z") != "from=blue to=green at=2026-11-27T16:00:00Z" {
		t.Error("a valid value was changed")
	}
}

func TestListenerARN(t *testing.T) {
	for _, bad := range []string{"", "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/x/1", "listener/app/x/1/2", listener + "/x"} {
		if _, err := New(context.Background(), Options{ListenerARN: bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
