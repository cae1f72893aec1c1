package check

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func dep(img string) *appsv1.Deployment {
	return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Image: img}}}}}}
}

func TestImage(t *testing.T) {
	for img, want := range map[string]Status{
		"registry/ts:v1.2.0":                                     Pass,
		"registry:5000/ts:1.2.0-rc.1":                            Pass,
		"ts@sha256:" + strings.Repeat("ab", 32):                  Pass,
		"registry:5000/ts:v1@sha256:" + strings.Repeat("cd", 32): Pass,
		"ts@sha256:abc":                                          Fail, // not a digest: not an image reference
		"registry/ts:latest":                                     Fail,
		"registry:5000/ts":                                       Fail,
		"registry/ts:stable":                                     Fail,
	} {
		if got := Image(dep(img)).Status; got != want {
			t.Errorf("%s: %s, want %s", img, got, want)
		}
	}
}

func TestHistoryAndStrategy(t *testing.T) {
	d := dep("x:v1")
	if History(d).Status != Pass {
		t.Error("unset limit (10) should pass")
	}
	d.Spec.RevisionHistoryLimit = ptr.To[int32](2)
	if History(d).Status != Fail {
		t.Error("limit 2 should fail")
	}
	if Strategy(d).Status != Fail {
		t.Error("unset maxUnavailable (25%) should fail")
	}
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr.To(intstr.FromInt32(0))}}
	if r := Strategy(d); r.Status != Pass {
		t.Errorf("maxUnavailable 0: %+v", r)
	}
	d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("10%"))
	if Strategy(d).Status != Fail {
		t.Error("10% should fail")
	}
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if Strategy(d).Status != Fail {
		t.Error("Recreate should fail")
	}
}
