package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/kube"
)

// failModes are the sandbox's broken pods, chosen by the image tag's
// suffix (sandbox/internal/cluster/stages.yaml), with what kubectl's
// STATUS column shows for each.
var failModes = []struct{ suffix, status string }{
	{"crashloop", "CrashLoopBackOff"},
	{"unready", "not Ready"},
	{"pullfail", "ImagePullBackOff"},
}

// releaseBroken creates KIND/app at v1.1.5 (3 replicas; a DaemonSet has
// the sandbox's one node), waits until it has rolled out, releases
// v1.2.0-SUFFIX and waits until a pod of it shows the failure.
func releaseBroken(t *testing.T, ns string, kind kube.Kind, suffix, status string) {
	t.Helper()
	ctx := context.Background()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: image("v1.1.5")}}}}
	var err error
	switch kind {
	case kube.KindDeployment:
		_, err = cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	case kube.KindStatefulSet:
		// OrderedReady, the default: the controller waits for each pod
		// to be Ready before it touches the next.
		_, err = cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3), Selector: sel, ServiceName: app, Template: tmpl}}, metav1.CreateOptions{})
	case kube.KindDaemonSet:
		_, err = cs.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.DaemonSetSpec{Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	tgt := kube.Target{Namespace: ns, Name: app, Kind: kind}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := kube.WaitRolledOut(wctx, cs, tgt, nil); err != nil {
		t.Fatalf("%s did not roll out: %v", tgt, err)
	}
	kubectl(t, "set", "image", string(kind)+"/"+app, app+"="+image("v1.2.0-"+suffix), "-n", ns)
	waitPodTrouble(t, ns, status)
}

// waitPodTrouble waits until a pod of app shows the failure.
func waitPodTrouble(t *testing.T, ns, status string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			t.Fatal(err)
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; !kube.PodReady(p) && strings.Contains(kube.PodTrouble(p), status) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pod became %s", status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// allOn checks that every pod of app runs v and is Ready.
func allOn(t *testing.T, ns, v string) {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && (p.Spec.Containers[0].Image != image(v) || !kube.PodReady(p)) {
			t.Errorf("pod %s: %s, Ready %v (%s)", p.Name, p.Spec.Containers[0].Image, kube.PodReady(p), kube.PodTrouble(p))
		}
	}
}

// Each plain workload kind rolls back out of each way a release breaks
// in production: containers that crash-loop, readiness that never passes,
// an image that cannot be pulled. The StatefulSet is the trap kubectl
// cannot leave (kubernetes#67250): after the undo its controller waits
// for the stuck pod to become Ready before replacing it, so the rollback
// replaces it, and says so.
func TestRollsBackOutOfFailingPods(t *testing.T) {
	parallel(t)
	for _, kind := range []kube.Kind{kube.KindDeployment, kube.KindStatefulSet, kube.KindDaemonSet} {
		for _, fm := range failModes {
			t.Run(string(kind)+"-"+fm.suffix, func(t *testing.T) {
				parallel(t)
				ns := namespace(t)
				releaseBroken(t, ns, kind, fm.suffix, fm.status)
				r := rollback(t, "run", string(kind)+"/"+app, "-n", ns, "--yes", "--timeout", "90s")
				if r.code != 0 {
					t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
				}
				if kind == kube.KindStatefulSet {
					if !strings.Contains(r.stderr, "replacing pod "+app+"-2, stuck on revision") ||
						!strings.Contains(r.stderr, "1 pod(s) stuck on the broken revision replaced") {
						t.Errorf("the run does not say it replaced the stuck pod:\n%s", r.stderr)
					}
				}
				allOn(t, ns, "v1.1.5")
			})
		}
	}
}

// An Argo Rollout and a Flagger canary whose canary pods crash-loop or
// cannot pull their image roll back at once: Argo's canary never reaches
// its pause (the step waits for available canary pods) and Flagger would
// wait out its progressDeadlineSeconds (600 s here, its default) before
// rolling back by itself.
func TestCanaryRollsBackOutOfFailingPods(t *testing.T) {
	parallel(t)
	for _, fm := range []struct{ suffix, status string }{failModes[0], failModes[2]} {
		t.Run("argo-"+fm.suffix, func(t *testing.T) {
			parallel(t)
			startArgoRollouts(t)
			ns := namespace(t)
			argoRollout(t, ns, "v1.1.5", 0)
			waitRollout(t, ns, "Healthy")
			argoRollout(t, ns, "v1.2.0-"+fm.suffix, 0)
			waitPodTrouble(t, ns, fm.status)
			if got := rolloutField(t, ns, ".status.phase"); got != "Progressing" {
				t.Fatalf("the broken canary is %q, want Progressing", got)
			}
			r := rollback(t, "run", "rollout/"+app, "-n", ns, "--yes", "--timeout", "90s")
			if r.code != 0 {
				t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
			}
			if got := rolloutField(t, ns, ".status.phase"); got != "Healthy" {
				t.Errorf("phase %q after the rollback", got)
			}
			allOn(t, ns, "v1.1.5")
		})
		t.Run("flagger-"+fm.suffix, func(t *testing.T) {
			parallel(t)
			startFlagger(t)
			ns := namespace(t)
			flaggerCanary(t, ns, 1000)
			kubectl(t, "patch", "canary", app, "-n", ns, "--type", "merge", "-p", `{"spec":{"progressDeadlineSeconds":600}}`)
			setImage(t, ns, "v1.2.0-"+fm.suffix)
			waitCanary(t, ns, "Progressing")
			waitPodTrouble(t, ns, fm.status)
			start := time.Now()
			r := rollback(t, "run", "canary/"+app, "-n", ns, "--yes", "--timeout", "120s")
			if r.code != 0 {
				t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
			}
			t.Logf("rolled back in %s", time.Since(start).Round(time.Second))
			if got := primaryImage(t, ns); got != image("v1.1.5") {
				t.Errorf("primary runs %s", got)
			}
			if got := runningImage(t, ns); got != image("v1.1.5") {
				t.Errorf("target template %s", got)
			}
			if got := canaryField(t, ns, ".status.phase"); got != "Failed" {
				t.Errorf("canary phase %q, want Failed", got)
			}
		})
	}
}

// Blue/green and Helm out of failing pods: the active colour crash-loops
// (all its pods, a Recreate roll out) and the Service switches back to the
// standby; a standby that itself crash-loops is refused before anything
// moves; a Helm release upgraded (without --wait, as CD often does) to
// pods that cannot pull their image is rolled back through Helm.
func TestTrafficAndHelmRollBackOutOfFailingPods(t *testing.T) {
	parallel(t)
	breakColour := func(t *testing.T, ns, colour, suffix, status string) {
		t.Helper()
		kubectl(t, "patch", "deployment", app+"-"+colour, "-n", ns, "--type", "merge", "-p", `{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}`)
		kubectl(t, "set", "image", "deployment/"+app+"-"+colour, app+"="+image("v1.2.0-"+suffix), "-n", ns)
		waitPodTrouble(t, ns, status)
	}
	t.Run("bluegreen-active-crashloop", func(t *testing.T) {
		parallel(t)
		ns := namespace(t)
		blueGreen(t, ns, 2)
		breakColour(t, ns, "green", "crashloop", "CrashLoopBackOff")
		r := rollback(t, "run", "service/"+app, "-n", ns, "--yes", "--timeout", "60s")
		if r.code != 0 {
			t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
		}
		if got := kubectl(t, "get", "service", app, "-n", ns, "-o", "jsonpath={.spec.selector.color}"); got != "blue" {
			t.Errorf("selector %q, want blue", got)
		}
		if eps := endpointPods(t, ns); strings.Contains(eps, "-green-") || !strings.Contains(eps, "-blue-") {
			t.Errorf("endpoints after the switch: %s", eps)
		}
	})
	t.Run("bluegreen-standby-crashloop", func(t *testing.T) {
		parallel(t)
		ns := namespace(t)
		blueGreen(t, ns, 2)
		breakColour(t, ns, "blue", "crashloop", "CrashLoopBackOff")
		r := rollback(t, "run", "service/"+app, "-n", ns, "--yes", "--timeout", "60s")
		if r.code != cli.ExitRefused {
			t.Fatalf("run with a crash-looping standby: exit %d, want %d (refused)\n%s", r.code, cli.ExitRefused, r.stderr)
		}
		if got := kubectl(t, "get", "service", app, "-n", ns, "-o", "jsonpath={.spec.selector.color}"); got != "green" {
			t.Errorf("refused, yet the selector is %q", got)
		}
	})
	t.Run("helm-pullfail", func(t *testing.T) {
		parallel(t)
		ns := namespace(t)
		chart := filepath.Join("testdata", "chart")
		helmCLI(t, "install", "app", chart, "-n", ns, "--set", "image.tag=v1.1.5", "--wait", "--timeout", "90s")
		helmCLI(t, "upgrade", "app", chart, "-n", ns, "--set", "image.tag=v1.2.0-pullfail")
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(kubectl(t, "get", "pods", "-n", ns, "-o", "jsonpath={.items[*].status.containerStatuses[*].state.waiting.reason}"), "ImagePullBackOff") {
			if time.Now().After(deadline) {
				t.Fatal("no pod of the upgrade failed to pull")
			}
			time.Sleep(200 * time.Millisecond)
		}
		r := rollback(t, "run", "helm/app", "-n", ns, "--yes", "--timeout", "90s")
		if r.code != 0 {
			t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
		}
		h := helmHistory(t, ns)
		if len(h) != 3 || h[2].Status != "deployed" || h[2].Description != "Rollback to 1" {
			t.Errorf("helm history: %+v", h)
		}
		if imgs := kubectl(t, "get", "pods", "-n", ns, "-o", "jsonpath={.items[*].spec.containers[0].image}"); strings.Contains(imgs, "pullfail") {
			t.Errorf("pods after the rollback: %s", imgs)
		}
	})
}
