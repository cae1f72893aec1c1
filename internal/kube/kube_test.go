package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func tmpl(img string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: img}}},
	}
}

// rs builds a ReplicaSet of dep at a revision, with an optional mark.
func rs(dep *appsv1.Deployment, rev int, img string, mark Health) appsv1.ReplicaSet {
	t := tmpl(img)
	t.Labels[podTemplateHashLabel] = fmt.Sprintf("h%d", rev)
	ann := map[string]string{RevisionAnnotation: fmt.Sprint(rev), ChangeCauseAnnotation: "deploy " + img}
	if mark != "" {
		ann[HealthAnnotation] = string(mark)
	}
	return appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("a-h%d", rev), Namespace: "ns", Annotations: ann,
			OwnerReferences: []metav1.OwnerReference{{UID: dep.UID, Controller: ptr.To(true), Kind: "Deployment", Name: dep.Name}},
		},
		Spec: appsv1.ReplicaSetSpec{Template: t},
	}
}

func dep(img string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: types.UID("dep-uid"), ResourceVersion: "42"},
		Spec:       appsv1.DeploymentSpec{Template: tmpl(img)},
	}
}

// hist builds a history whose current template is the image of current.
func hist(current string, revs ...appsv1.ReplicaSet) *History {
	d := dep(current)
	for i := range revs {
		if revs[i].OwnerReferences[0].UID == "dep-uid" {
			revs[i].OwnerReferences[0].UID = d.UID
		}
	}
	return buildHistory(d, revs)
}

func TestPlanUndoTargets(t *testing.T) {
	d := dep("x")
	tests := []struct {
		name    string
		h       *History
		to      int64
		want    int64
		wantErr error
		noop    bool
	}{
		{"previous when unmarked", hist("v3", rs(d, 1, "v1", ""), rs(d, 2, "v2", ""), rs(d, 3, "v3", "")), 0, 2, nil, false},
		{"newest good over newer unmarked", hist("v3", rs(d, 1, "v1", Good), rs(d, 2, "v2", ""), rs(d, 3, "v3", "")), 0, 1, nil, false},
		{"skips bad", hist("v3", rs(d, 1, "v1", ""), rs(d, 2, "v2", Bad), rs(d, 3, "v3", "")), 0, 1, nil, false},
		{"kubectl pitfall: undone revision is newer but bad",
			hist("v2", rs(d, 1, "v1", ""), rs(d, 3, "v3", Bad), rs(d, 4, "v2", Good)), 0, 1, nil, false},
		{"only bad older", hist("v2", rs(d, 1, "v1", Bad), rs(d, 2, "v2", "")), 0, 0, ErrNoTarget, false},
		{"no older revision", hist("v1", rs(d, 1, "v1", "")), 0, 0, ErrNoTarget, false},
		{"explicit revision", hist("v3", rs(d, 1, "v1", ""), rs(d, 2, "v2", Good), rs(d, 3, "v3", "")), 1, 1, nil, false},
		{"explicit unknown revision", hist("v2", rs(d, 1, "v1", ""), rs(d, 2, "v2", "")), 9, 0, ErrRevisionNotFound, false},
		{"explicit bad revision", hist("v2", rs(d, 1, "v1", Bad), rs(d, 2, "v2", "")), 1, 0, ErrTargetBad, false},
		{"explicit current is a no-op", hist("v2", rs(d, 1, "v1", ""), rs(d, 2, "v2", "")), 2, 2, nil, true},
		{"foreign replicaset ignored", func() *History {
			other := rs(d, 5, "evil", Good)
			other.OwnerReferences[0].UID = "someone-else"
			return hist("v2", other, rs(d, 1, "v1", ""), rs(d, 2, "v2", ""))
		}(), 0, 1, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanUndo(tt.h, tt.to)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.To.Number != tt.want || p.NoOp != tt.noop {
				t.Errorf("got revision %d noop=%v, want %d noop=%v (%s)", p.To.Number, p.NoOp, tt.want, tt.noop, p.Reason)
			}
		})
	}
}

func TestPlanUndoPaused(t *testing.T) {
	d := dep("x")
	h := hist("v2", rs(d, 1, "v1", ""), rs(d, 2, "v2", ""))
	h.Paused = true
	_, err := PlanUndo(h, 0)
	if !errors.Is(err, ErrPaused) || !strings.Contains(err.Error(), "kubectl rollout resume deployment/a -n ns") {
		t.Errorf("got %v, want ErrPaused with the resume command", err)
	}
}

func TestUndoPatch(t *testing.T) {
	d := dep("x")
	r := rs(d, 1, "v1", Good)
	r.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
	r.Annotations["deployment.kubernetes.io/desired-replicas"] = "3"
	r.Annotations["team"] = "payments"
	h := hist("v2", r, rs(d, 2, "v2", ""))
	p, err := PlanUndo(h, 1)
	if err != nil {
		t.Fatal(err)
	}
	h.Deployment.Generation = 42
	_, b, err := deploymentKind{}.undoPatch(h, p.To)
	if err != nil {
		t.Fatal(err)
	}
	var ops []struct {
		Op, Path string
		Value    json.RawMessage
	}
	if err := json.Unmarshal(b, &ops); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 3 || ops[0].Op != "test" || ops[0].Path != "/metadata/generation" || string(ops[0].Value) != `42` {
		t.Fatalf("patch %s: want a test of the planned generation first (status changes are no conflict)", b)
	}
	var tpl corev1.PodTemplateSpec
	if err := json.Unmarshal(ops[1].Value, &tpl); err != nil {
		t.Fatal(err)
	}
	if _, ok := tpl.Labels[podTemplateHashLabel]; ok || tpl.Spec.Containers[0].Image != "v1" {
		t.Errorf("template %+v: want v1 without the pod-template-hash label", tpl)
	}
	var ann map[string]string
	if err := json.Unmarshal(ops[2].Value, &ann); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"team": "payments", ChangeCauseAnnotation: "deploy v1"}
	if fmt.Sprint(ann) != fmt.Sprint(want) {
		t.Errorf("annotations %v, want %v (revision, kubectl's skip list and rollback's marks dropped)", ann, want)
	}
}

func TestRolloutStatus(t *testing.T) {
	base := func() *appsv1.Deployment {
		d := dep("x")
		d.Generation, d.Status.ObservedGeneration = 2, 2
		d.Spec.Replicas = ptr.To[int32](3)
		d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.AvailableReplicas = 3, 3, 3
		return d
	}
	tests := []struct {
		name    string
		mut     func(*appsv1.Deployment)
		done    bool
		msg     string
		wantErr error
	}{
		{"complete", func(*appsv1.Deployment) {}, true, "successfully rolled out", nil},
		{"not observed", func(d *appsv1.Deployment) { d.Status.ObservedGeneration = 1 }, false, "spec update to be observed", nil},
		{"updating", func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 1 }, false, "1 out of 3 new replicas", nil},
		{"old pending", func(d *appsv1.Deployment) { d.Status.Replicas = 4 }, false, "1 old replicas are pending termination", nil},
		{"unavailable", func(d *appsv1.Deployment) { d.Status.AvailableReplicas = 2 }, false, "2 of 3 updated replicas are available", nil},
		{"deadline", func(d *appsv1.Deployment) {
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Reason: "ProgressDeadlineExceeded"}}
		}, false, "", ErrProgressDeadline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base()
			tt.mut(d)
			msg, done, err := RolloutStatus(d)
			if !errors.Is(err, tt.wantErr) || done != tt.done || !strings.Contains(msg, tt.msg) {
				t.Errorf("got (%q, %v, %v), want (%q, %v, %v)", msg, done, err, tt.msg, tt.done, tt.wantErr)
			}
		})
	}
}

func TestParseHealthAndDryRun(t *testing.T) {
	if _, err := ParseHealth("meh"); err == nil {
		t.Error("ParseHealth(meh): want an error")
	}
	if d, err := ParseDryRun(""); err != nil || d != DryRunNone {
		t.Errorf("ParseDryRun(\"\") = %v, %v", d, err)
	}
	if _, err := ParseDryRun("all"); err == nil {
		t.Error("ParseDryRun(all): want an error")
	}
}
