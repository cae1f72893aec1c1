// Package kubetest builds fake clusters for tests of what acts on
// workloads (the engine, the server) without the sandbox.
package kubetest

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/rollback-dev/rollback/internal/kube"
)

// Template is a one-container pod template of app name running img.
func Template(name, img string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: img}}}}
}

// Deployment is a fake cluster whose Deployment ns/name runs
// REGISTRY/name:v2 (revision 2) over :v1 (revision 1), with its status
// already rolled out, so an undo completes at once; its one pod runs v1,
// the target.
func Deployment(ns, name string) *fake.Clientset {
	img := func(v string) string { return "r/" + name + ":" + v }
	uid := types.UID("dep-" + name)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: uid, ResourceVersion: "5", Generation: 2},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: Template(name, img("v2"))},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, ReadyReplicas: 1},
	}
	rs := func(n int, v string) *appsv1.ReplicaSet {
		return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, n), Namespace: ns, Labels: map[string]string{"app": name},
			Annotations:     map[string]string{kube.RevisionAnnotation: fmt.Sprint(n)},
			OwnerReferences: []metav1.OwnerReference{{UID: uid, Controller: ptr.To(true), Kind: "Deployment", Name: name}}},
			Spec: appsv1.ReplicaSetSpec{Template: Template(name, img(v))}}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name + "-1-abc", Namespace: ns, Labels: map[string]string{"app": name}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: img("v1")}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	return fake.NewClientset(dep, rs(1, "v1"), rs(2, "v2"), pod)
}
