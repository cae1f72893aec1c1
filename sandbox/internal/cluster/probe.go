package cluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func mustQty(s string) resource.Quantity { return resource.MustParse(s) }

// probePod proves the cluster end to end: the default service account
// exists, the node is Ready and schedulable, and a pod becomes Ready and is
// deleted promptly.
func probePod(ctx context.Context, cs kubernetes.Interface) error {
	if err := waitFor(ctx, 60*time.Second, "default service account", func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, "node "+nodeName, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				return fmt.Errorf("node has taint %s", t.Key)
			}
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node not Ready")
	}); err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "sandbox-probe-"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "probe", Image: "sandbox.local/probe:v1"}},
		},
	}
	created, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create probe pod: %w", err)
	}
	if err := waitFor(ctx, 60*time.Second, "probe pod", func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("pod %s is %s", p.Name, p.Status.Phase)
	}); err != nil {
		return err
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, created.Name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	return waitFor(ctx, 20*time.Second, "probe pod deletion", func() error {
		_, err := cs.CoreV1().Pods("default").Get(ctx, created.Name, metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("pod %s still exists", created.Name)
		}
		return nil
	})
}
