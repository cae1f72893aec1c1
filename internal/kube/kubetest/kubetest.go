// Package kubetest builds fake clusters for tests of what acts on
// workloads (the engine, the server) without the sandbox.
package kubetest

import (
	"context"
	"fmt"
	"testing"

	dynamicfake "k8s.io/client-go/dynamic/fake"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/rollback-dev/rollback/internal/kube"
)

// Template is a one-container pod template of app name running img.
func Template(name, img string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: img}}}}
}

// Deployment is a fake cluster whose Deployment ns/name has released
// REGISTRY/name:v2 (revision 2) over :v1 (revision 1) and runs it: its one
// pod runs v2, the broken version. A stand-in for the Deployment
// controller acts whenever pods or ReplicaSets are listed: the pods follow
// the Deployment's template, and the ReplicaSet whose template it is
// becomes the newest revision, as after kubectl's undo. So the pods run v1
// only if an undo really patched the template.
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
	cs := fake.NewClientset(dep, rs(1, "v1"), rs(2, "v2"), readyPod(ns, name, name+"-2-abc", img("v2")))
	controller := func(k8stesting.Action) (bool, runtime.Object, error) {
		reconcile(cs.Tracker(), ns, name)
		return false, nil, nil
	}
	cs.PrependReactor("list", "pods", controller)
	cs.PrependReactor("list", "replicasets", controller)
	return cs
}

func readyPod(ns, app, name, img string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: img}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}

var (
	deployments = appsv1.SchemeGroupVersion.WithResource("deployments")
	replicaSets = appsv1.SchemeGroupVersion.WithResource("replicasets")
	pods        = corev1.SchemeGroupVersion.WithResource("pods")
)

// reconcile is the stand-in Deployment controller (through the tracker:
// a reactor runs under the fake's lock).
func reconcile(tr k8stesting.ObjectTracker, ns, name string) {
	o, err := tr.Get(deployments, ns, name)
	if err != nil {
		return
	}
	img := o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Image
	rl, err := tr.List(replicaSets, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), ns)
	if err != nil {
		return
	}
	var cur *appsv1.ReplicaSet
	top := 0
	for i := range rl.(*appsv1.ReplicaSetList).Items {
		rs := &rl.(*appsv1.ReplicaSetList).Items[i]
		var n int
		fmt.Sscan(rs.Annotations[kube.RevisionAnnotation], &n)
		top = max(top, n)
		if rs.Spec.Template.Spec.Containers[0].Image == img {
			cur = rs
		}
	}
	rev := top
	if cur != nil {
		var n int
		fmt.Sscan(cur.Annotations[kube.RevisionAnnotation], &n)
		if n < top {
			rev = top + 1
			cur = cur.DeepCopy()
			cur.Annotations[kube.RevisionAnnotation] = fmt.Sprint(rev)
			_ = tr.Update(replicaSets, cur, ns)
		}
	}
	pl, err := tr.List(pods, corev1.SchemeGroupVersion.WithKind("Pod"), ns)
	if err != nil {
		return
	}
	for _, p := range pl.(*corev1.PodList).Items {
		if p.Labels["app"] == name && p.Spec.Containers[0].Image != img {
			_ = tr.Delete(pods, ns, p.Name)
			_ = tr.Add(readyPod(ns, name, fmt.Sprintf("%s-%d-abc", name, rev), img))
		}
	}
}

// RolledBack fails the test unless the Deployment ns/name's template and
// every pod of it run v1 again (the fake starts on v2).
func RolledBack(t testing.TB, cs *fake.Clientset, ns, name string) {
	t.Helper()
	ctx := context.Background()
	dep, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "r/" + name + ":v1"
	if got := dep.Spec.Template.Spec.Containers[0].Image; got != want {
		t.Errorf("%s/%s's template runs %s, want %s: the undo did not patch it", ns, name, got, want)
	}
	pl, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pl.Items {
		if got := p.Spec.Containers[0].Image; got != want {
			t.Errorf("pod %s runs %s, want %s", p.Name, got, want)
		}
	}
}

// listKinds are the custom resources rollback reads, for the dynamic fake.
var listKinds = map[schema.GroupVersionResource]string{
	{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}:                 "RolloutList",
	{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}:             "ApplicationList",
	{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}:                  "CanaryList",
	{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}:       "HTTPRouteList",
	{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}: "KustomizationList",
	{Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"}:        "HelmReleaseList",
}

// Clients is typed beside a dynamic fake holding the custom resources
// given as YAML or JSON documents, as kube.NewClients pairs the real ones.
func Clients(t testing.TB, typed *fake.Clientset, docs ...string) (kube.Clients, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	var objs []runtime.Object
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(d), &u.Object); err != nil {
			t.Fatalf("fixture: %v\n%s", err, d)
		}
		objs = append(objs, u)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, objs...)
	return kube.Clients{Interface: typed, Dyn: dyn}, dyn
}
