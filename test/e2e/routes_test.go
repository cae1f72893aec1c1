package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/kube"
)

// installGatewayAPI applies the real Gateway API CRDs to the sandbox once.
func installGatewayAPI(t *testing.T) {
	t.Helper()
	waitBuilt(t, "gateway-api")
	startPeer(t, "gateway-api", func() error { return applyCRDs("gateway-api", "httproutes.gateway.networking.k8s.io") })
}

// routedColours is a namespace with blue (blueReplicas) and green behind
// an HTTPRoute that sends all traffic to green (the real Gateway API CRDs).
func routedColours(t *testing.T, blueReplicas int32) string {
	t.Helper()
	installGatewayAPI(t)
	ns := namespace(t)
	colours(t, ns, blueReplicas)
	httpRoute(t, ns)
	return ns
}

// httpRoute creates an HTTPRoute whose rule sends all traffic to green and
// none to blue (and a second rule for another path, the same split).
func httpRoute(t *testing.T, ns string) {
	t.Helper()
	manifest := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ` + app + `
  namespace: ` + ns + `
spec:
  parentRefs:
  - name: public
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
    backendRefs:
    - {name: ` + app + `-blue, port: 80, weight: 0}
    - {name: ` + app + `-green, port: 80, weight: 100}
  - backendRefs:
    - {name: ` + app + `-green, port: 80}
    - {name: ` + app + `-blue, port: 80, weight: 0}
`
	cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("create the HTTPRoute: %v\n%s", err, out)
	}
}

func routeWeights(t *testing.T, ns string) string {
	return kubectl(t, "get", "httproute", app, "-n", ns, "-o", "jsonpath={range .spec.rules[*].backendRefs[*]}{.name}={.weight} {end}")
}

// A Gateway API HTTPRoute (the real CRD, with its validation) is switched
// back by its weights: all of each rule's weight to blue's Service once
// blue can take it, green kept running marked bad, the switch recorded so
// a second rollback does not go back to green.
func TestHTTPRouteSwitchBack(t *testing.T) {
	parallel(t)
	ns := routedColours(t, 2)
	r := rollback(t, "run", "httproute/"+app, "-n", ns, "--yes", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"outcome": "rolled-back"`) {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	want := app + "-blue=100 " + app + "-green=0 " + app + "-green=0 " + app + "-blue=1 "
	if got := routeWeights(t, ns); got != want {
		t.Errorf("weights %q, want %q", got, want)
	}
	if got := kubectl(t, "get", "deployment", app+"-green", "-n", ns, "-o", "jsonpath={.status.readyReplicas}/{.metadata.annotations.rollback/health}"); got != "2/bad" {
		t.Errorf("green after the switch: %s, want 2/bad", got)
	}
	if got := kubectl(t, "get", "httproute", app, "-n", ns, "-o", "jsonpath={.metadata.annotations.rollback/switches}"); !strings.Contains(got, `"from":"`+app+`-green","to":"`+app+`-blue"`) {
		t.Errorf("switch not recorded on the route: %s", got)
	}
	again := rollback(t, "run", "httproute/"+app, "-n", ns, "--yes")
	if again.code != cli.ExitRefused {
		t.Errorf("second run: exit %d, want %d\n%s", again.code, cli.ExitRefused, again.stderr)
	}
}

// A standby that cannot take the traffic is refused with the route
// unchanged and no incident.
func TestHTTPRouteStandbyNotReady(t *testing.T) {
	parallel(t)
	ns := routedColours(t, 0)
	before := routeWeights(t, ns)
	r := rollback(t, "run", "httproute/"+app, "-n", ns, "--yes")
	if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "standby colour is not ready") {
		t.Fatalf("run: exit %d, want %d\n%s", r.code, cli.ExitRefused, r.stderr)
	}
	if got := routeWeights(t, ns); got != before {
		t.Errorf("weights changed to %q", got)
	}
}

// An AWS Load Balancer Controller Ingress: the forward action's target
// group weights move to blue; the rest of the action is kept.
func TestALBIngressSwitchBack(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	colours(t, ns, 2)
	action := `{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"` + app + `-blue","servicePort":"80","weight":0},{"serviceName":"` + app + `-green","servicePort":"80","weight":100}],"targetGroupStickinessConfig":{"enabled":true,"durationSeconds":200}}}`
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns, Annotations: map[string]string{
		kube.ALBActionPrefix + "blue-green": action, "alb.ingress.kubernetes.io/scheme": "internet-facing"}},
		Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("alb"), Rules: []networkingv1.IngressRule{{IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "blue-green", Port: networkingv1.ServiceBackendPort{Name: "use-annotation"}}}}}}}}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := rollback(t, "run", "ingress/"+app, "-n", ns, "--yes")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got, err := cs.NetworkingV1().Ingresses(ns).Get(ctx, app, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := got.Annotations[kube.ALBActionPrefix+"blue-green"]
	if !strings.Contains(a, `{"serviceName":"`+app+`-blue","servicePort":"80","weight":100}`) || !strings.Contains(a, `"weight":0`) || !strings.Contains(a, "targetGroupStickinessConfig") {
		t.Errorf("action after the switch: %s", a)
	}
	if got := kubectl(t, "get", "deployment", app+"-green", "-n", ns, "-o", "jsonpath={.metadata.annotations.rollback/health}"); got != "bad" {
		t.Errorf("green marked %q, want bad", got)
	}
}

// With a Gateway controller reporting the route's status (played here by
// the test: it accepts each new generation a second late), the switch is
// done only when the controller has accepted the switched generation.
func TestHTTPRouteWaitsForTheGateway(t *testing.T) {
	parallel(t)
	ns := routedColours(t, 2)
	accept := func(gen string) error {
		patch := `{"status":{"parents":[{"parentRef":{"name":"public"},"controllerName":"example.com/gateway","conditions":[` +
			`{"type":"Accepted","status":"True","reason":"Accepted","message":"ok","observedGeneration":` + gen + `,"lastTransitionTime":"2026-11-27T00:00:00Z"},` +
			`{"type":"ResolvedRefs","status":"True","reason":"ResolvedRefs","message":"ok","observedGeneration":` + gen + `,"lastTransitionTime":"2026-11-27T00:00:00Z"}]}]}}`
		out, err := exec.Command("kubectl", "--kubeconfig", kubeconfig, "patch", "httproute", app, "-n", ns, "--subresource", "status", "--type", "merge", "-p", patch).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	gen := kubectl(t, "get", "httproute", app, "-n", ns, "-o", "jsonpath={.metadata.generation}")
	if err := accept(gen); err != nil {
		t.Fatal(err)
	}
	// The gateway controller accepts the switched route only once the run
	// has read it unaccepted and said so: the run's own line is the cue.
	cmd := rollbackCmd(filepath.Join(t.TempDir(), "r.db"), "run", "httproute/"+app, "-n", ns, "--yes")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(3*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	var log strings.Builder
	waited := false
	for sc := bufio.NewScanner(stderr); sc.Scan(); {
		log.WriteString(sc.Text() + "\n")
		if !waited && strings.Contains(sc.Text(), "example.com/gateway has not observed generation") {
			waited = true
			if err := accept(kubectl(t, "get", "httproute", app, "-n", ns, "-o", "jsonpath={.metadata.generation}")); err != nil {
				t.Error(err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	if !waited {
		t.Errorf("the run did not wait for the gateway controller:\n%s", log.String())
	}
}

// A route whose spec changed after the plan is not switched (the patch
// tests the planned generation), and says so; a status update by its
// Gateway controller in between is no conflict.
func TestHTTPRouteChangedAfterPlan(t *testing.T) {
	parallel(t)
	ns := routedColours(t, 2)
	ctx := context.Background()
	h, p := planUndo(t, kube.Target{Namespace: ns, Name: app, Kind: kube.KindHTTPRoute})
	kubectl(t, "patch", "httproute", app, "-n", ns, "--subresource", "status", "--type", "merge", "-p",
		`{"status":{"parents":[{"parentRef":{"name":"public"},"controllerName":"example.com/gateway","conditions":[`+
			`{"type":"Accepted","status":"True","reason":"Accepted","message":"ok","observedGeneration":1,"lastTransitionTime":"2026-11-27T00:00:00Z"}]}]}}`)
	if err := kube.Undo(ctx, cs, h, p, kube.DryRunServer); err != nil {
		t.Errorf("a status update between plan and switch: %v", err)
	}
	kubectl(t, "patch", "httproute", app, "-n", ns, "--type", "json", "-p", `[{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":90}]`)
	if err := kube.Undo(ctx, cs, h, p, kube.DryRunNone); !errors.Is(err, kube.ErrConflict) {
		t.Errorf("a spec change between plan and switch: %v, want ErrConflict", err)
	}
}

// A Deployment whose spec changed between plan and undo (scaled by an
// autoscaler or a person, its minReadySeconds tweaked) but that still runs
// the revision the plan rolls back from is rolled back all the same: the
// undo is guarded again with the Deployment as it is now and sent again,
// and says so. One whose template changed (someone deployed) is not.
func TestUndoAfterAConcurrentSpecChange(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(ns string)
		rolls  bool
	}{
		{"scaled", func(ns string) {
			kubectl(t, "scale", "deployment/"+app, "-n", ns, "--replicas", "4")
			setMinReady(t, ns, 1)
		}, true},
		{"deployed", func(ns string) {
			kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.1"))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			deploy(t, ns, "v1.1.5", "v1.2.0")
			h, p := planUndo(t, kube.Target{Namespace: ns, Name: app, Kind: kube.KindDeployment})
			before := getDeployment(t, ns).Generation
			tc.change(ns)
			if after := getDeployment(t, ns).Generation; after == before {
				t.Fatalf("the change left the generation at %d: nothing here tests the guard", after)
			}
			err := kube.Undo(ctx, cs, h, p, kube.DryRunNone)
			switch {
			case tc.rolls && err != nil:
				t.Fatalf("undo after a change that keeps the revision: %v", err)
			case tc.rolls && (runningImage(t, ns) != image("v1.1.5") || !strings.Contains(h.Prepared, "re-guarded")):
				t.Errorf("after the undo: %s, evidence %q; want %s and a word on the re-guard", runningImage(t, ns), h.Prepared, image("v1.1.5"))
			case !tc.rolls && !errors.Is(err, kube.ErrConflict):
				t.Errorf("undo after someone deployed: %v, want ErrConflict", err)
			case !tc.rolls && runningImage(t, ns) != image("v1.2.1"):
				t.Errorf("the deploy in between was overwritten: running %s", runningImage(t, ns))
			}
		})
	}
}

// planUndo reads tgt's history and plans its undo to the previous revision.
func planUndo(t *testing.T, tgt kube.Target) (*kube.History, *kube.Plan) {
	t.Helper()
	h, err := kube.GetHistory(context.Background(), cs, tgt)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kube.PlanUndo(h, 0)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}
