package e2e

import (
	"context"
	"encoding/json"
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

// deployKind creates a StatefulSet or DaemonSet running v1.1.5, then
// releases v1.2.0 and waits until it has rolled out (with OnDelete, by
// deleting its pods as an operator would).
func deployKind(t *testing.T, ns string, kind kube.Kind, onDelete, partition bool) {
	t.Helper()
	ctx := context.Background()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	tmpl := func(v string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: image(v)}}}}
	}
	tgt := kube.Target{Namespace: ns, Name: app, Kind: kind}
	wait := func() {
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		if err := kube.WaitRolledOut(wctx, cs, tgt, nil); err != nil {
			t.Fatalf("%s did not roll out: %v", tgt, err)
		}
	}
	switch kind {
	case kube.KindStatefulSet:
		s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2), Selector: sel, ServiceName: app, Template: tmpl("v1.1.5"),
				PodManagementPolicy: appsv1.ParallelPodManagement}}
		if onDelete {
			s.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
		}
		if partition {
			// A canary by partition: only ordinals >= 1 take the release.
			s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](1)}
		}
		if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		wait()
		kubectl(t, "set", "image", "statefulset/"+app, app+"="+image("v1.2.0"), "-n", ns)
	case kube.KindDaemonSet:
		d := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: appsv1.DaemonSetSpec{Selector: sel, Template: tmpl("v1.1.5")}}
		if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		wait()
		kubectl(t, "set", "image", "daemonset/"+app, app+"="+image("v1.2.0"), "-n", ns)
	}
	if onDelete {
		kubectl(t, "delete", "pods", "-l", "app="+app, "-n", ns, "--wait=false")
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(kubectl(t, "get", "pods", "-l", "app="+app, "-n", ns, "-o", "jsonpath={.items[*].spec.containers[0].image}"), "v1.2.0") ||
			strings.Contains(kubectl(t, "get", "pods", "-l", "app="+app, "-n", ns, "-o", "jsonpath={.items[*].spec.containers[0].image}"), "v1.1.5") {
			if time.Now().After(deadline) {
				t.Fatal("OnDelete pods were not replaced by v1.2.0")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wait()
}

// StatefulSets and DaemonSets roll back with kubectl's undo semantics over
// their ControllerRevisions, cross-checked with the real kubectl: rollout
// status succeeds, rollout history shows the undo as a new revision, the
// pods run the restored image, the abandoned revision is marked bad, and a
// second run refuses to return to it.
func TestStatefulSetAndDaemonSetRollback(t *testing.T) {
	for _, tc := range []struct {
		name                string
		kind                kube.Kind
		onDelete, partition bool
	}{
		{"statefulset", kube.KindStatefulSet, false, false},
		{"statefulset-ondelete", kube.KindStatefulSet, true, false},
		{"statefulset-partition", kube.KindStatefulSet, false, true},
		{"daemonset", kube.KindDaemonSet, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			deployKind(t, ns, tc.kind, tc.onDelete, tc.partition)
			ref := string(tc.kind) + "/" + app
			if tc.partition {
				// The canary: pod 1 takes v1.2.0; pod 0, below the
				// partition, keeps v1.1.5.
				deadline := time.Now().Add(30 * time.Second)
				for imgs := ""; !strings.Contains(imgs, "v1.2.0") || !strings.Contains(imgs, "v1.1.5"); {
					if time.Now().After(deadline) {
						t.Fatalf("the partitioned release did not split the pods: %s", imgs)
					}
					time.Sleep(100 * time.Millisecond)
					imgs = kubectl(t, "get", "pods", "-l", "app="+app, "-n", ns, "-o", "jsonpath={.items[*].spec.containers[0].image}")
				}
			}
			if h := kubectl(t, "rollout", "history", ref, "-n", ns); !strings.Contains(h, "1 ") || !strings.Contains(h, "2 ") {
				t.Fatalf("kubectl rollout history before:\n%s", h)
			}
			r := rollback(t, "run", ref, "-n", ns, "--yes", "--timeout", "90s", "-o", "json")
			if r.code != 0 {
				t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
			}
			var out struct {
				Outcome  string `json:"outcome"`
				Incident string `json:"incident"`
				Revision int64  `json:"revision"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Outcome != "rolled-back" || out.Revision != 3 || out.Incident == "" {
				t.Fatalf("run output %+v (%v):\n%s", out, err, r.stdout)
			}
			if tc.onDelete {
				// kubectl rollout status refuses OnDelete; the controller's
				// counts say every pod is on the update revision.
				if got := kubectl(t, "get", ref, "-n", ns, "-o", "jsonpath={.status.updatedReplicas}/{.status.replicas}"); got != "2/2" {
					t.Errorf("updated/replicas after the undo: %s, want 2/2", got)
				}
			} else if st := kubectl(t, "rollout", "status", ref, "-n", ns, "--timeout", "30s"); !strings.Contains(st, "complete") && !strings.Contains(st, "successfully rolled out") {
				t.Errorf("kubectl rollout status after the undo:\n%s", st)
			}
			h := kubectl(t, "rollout", "history", ref, "-n", ns)
			if !strings.Contains(h, "3 ") || strings.Contains(h, "\n1 ") {
				t.Errorf("kubectl rollout history after the undo (revision 1 becomes 3, as with kubectl undo):\n%s", h)
			}
			imgs := kubectl(t, "get", "pods", "-l", "app="+app, "-n", ns, "-o", "jsonpath={.items[*].spec.containers[0].image}")
			if strings.Contains(imgs, "v1.2.0") || !strings.Contains(imgs, "v1.1.5") {
				t.Errorf("pods run %q after the rollback", imgs)
			}
			hist := rollback(t, "history", ref, "-n", ns, "-o", "json")
			if !strings.Contains(hist.stdout, `"health": "bad"`) {
				t.Errorf("the abandoned revision is not marked bad:\n%s", hist.stdout)
			}
			again := rollback(t, "run", ref, "-n", ns, "--yes")
			if again.code == 0 || !strings.Contains(again.stderr, "no revision to roll back to") {
				t.Errorf("second run: exit %d, want a refusal (the only older revision is bad)\n%s", again.code, again.stderr)
			}
			if g := rollback(t, "gate", ref, "-n", ns, "v1.2.0"); g.code != cli.ExitBlocked {
				t.Errorf("gate: exit %d, want %d", g.code, cli.ExitBlocked)
			}
		})
	}
}
