package e2e

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// configDeployment applies the test app at version v mounting ConfigMap
// cm (envFrom) and Secret sec (a volume), and waits for the rollout.
func configDeployment(t *testing.T, ns, v, cm, sec string) {
	t.Helper()
	ctx := context.Background()
	l := map[string]string{"app": app}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: app, Image: image(v),
					EnvFrom:      []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}},
					VolumeMounts: []corev1.VolumeMount{{Name: "creds", MountPath: "/etc/creds"}}}},
				Volumes: []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: sec}}}}}}}}
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, app, metav1.GetOptions{}); err == nil {
		if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	} else if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, ns) // waits for the spec to be observed first
}

func putConfig(t *testing.T, ns, cm, level, sec, password string) {
	t.Helper()
	ctx := context.Background()
	c := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cm, Namespace: ns, Labels: map[string]string{"team": "payments"}}, Data: map[string]string{"FRAUD_LEVEL": level}}
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: sec, Namespace: ns}, Data: map[string][]byte{"password": []byte(password)}}
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// The release changed the ConfigMap and the Secret with the image: the
// rollback restores both from the copies 'config record' kept at release
// time, before the pods restart, keeps the abandoned revision's, never
// puts Secret content in its own store or output, and says what it did.
func TestConfigRestoredWithTheRevision(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	const oldPw, newPw = "pw-v115-canary-secret", "pw-v120-canary-secret"
	putConfig(t, ns, "app-config", "strict", "app-creds", oldPw)
	configDeployment(t, ns, "v1.1.5", "app-config", "app-creds")
	if r := rollback(t, "config", "record", "deployment/"+app, "-n", ns); r.code != 0 || !strings.Contains(r.stdout, "ConfigMap app-config kept as app-config-rbk-") {
		t.Fatalf("config record: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	putConfig(t, ns, "app-config", "lenient", "app-creds", newPw)
	configDeployment(t, ns, "v1.2.0", "app-config", "app-creds")
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--yes")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"ConfigMap app-config restored to revision 1's content", "Secret app-creds restored to revision 1's content"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the run does not say %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stdout+r.stderr, oldPw) || strings.Contains(r.stdout+r.stderr, newPw) {
		t.Error("Secret content reached the output")
	}
	ctx := context.Background()
	cm, _ := cs.CoreV1().ConfigMaps(ns).Get(ctx, "app-config", metav1.GetOptions{})
	sec, _ := cs.CoreV1().Secrets(ns).Get(ctx, "app-creds", metav1.GetOptions{})
	if cm.Data["FRAUD_LEVEL"] != "strict" || string(sec.Data["password"]) != oldPw || cm.Labels["team"] != "payments" {
		t.Errorf("after the rollback: config %v (labels %v), secret %q", cm.Data, cm.Labels, sec.Data["password"])
	}
	// v1.2.0's config was kept first: a roll forward could restore it.
	kept, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "rollback/kept-of=app-creds"})
	if err != nil || len(kept.Items) != 2 {
		t.Fatalf("kept copies of app-creds: %v %v", len(kept.Items), err)
	}
	if got := runningImage(t, ns); got != image("v1.1.5") {
		t.Errorf("running %s", got)
	}
}

// kustomize's hash-suffixed names change with the content: rolling back
// needs no restore while the old objects exist, and the run says so.
func TestConfigKustomizeHashSuffix(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	putConfig(t, ns, "app-config-7g5kbh2f8t", "strict", "app-creds-2k9m4c7bdf", "a")
	configDeployment(t, ns, "v1.1.5", "app-config-7g5kbh2f8t", "app-creds-2k9m4c7bdf")
	putConfig(t, ns, "app-config-9tbk6ch5m2", "lenient", "app-creds-6d8bm5tk4g", "b")
	configDeployment(t, ns, "v1.2.0", "app-config-9tbk6ch5m2", "app-creds-6d8bm5tk4g")
	r := rollback(t, "run", "deployment/"+app, "-n", ns, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "ConfigMap app-config-7g5kbh2f8t: kustomize hash suffix") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
}
