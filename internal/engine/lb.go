package engine

import (
	"context"
	"fmt"

	"github.com/rollback-dev/rollback/internal/alb"
	"github.com/rollback-dev/rollback/internal/config"
	"github.com/rollback-dev/rollback/internal/kube"
)

// LoadBalancer is the listener of a configured service that is blue/green
// at a load balancer (loadBalancer: in rollback.yaml), or nil.
func (e *Engine) LoadBalancer(ctx context.Context, service string) (kube.LoadBalancer, error) {
	svc := e.service(service)
	if svc == nil || svc.LoadBalancer == nil {
		return nil, nil
	}
	return NewLoadBalancer(ctx, svc.LoadBalancer)
}

// NewLoadBalancer builds the configured listener's client (AWS
// credentials from the SDK's standard chain).
func NewLoadBalancer(ctx context.Context, c *config.LoadBalancer) (kube.LoadBalancer, error) {
	return alb.New(ctx, alb.Options{ListenerARN: c.ListenerARN, Region: c.Region, Endpoint: c.Endpoint,
		TargetGroups: c.TargetGroups, Timeout: c.Timeout})
}

// Attach gives a workload's target the adapter its kind works through: a
// load balancer's listener API (from the service's loadBalancer config),
// a namespace's Helm releases (for the workload's kubeconfig context).
// The CLI, the server and resume build workloads with it, so no caller
// knows which kinds need what.
func (e *Engine) Attach(ctx context.Context, w *Workload) error {
	var err error
	switch w.Target.Of() {
	case kube.KindLoadBalancer:
		if w.Target.LB != nil {
			return nil
		}
		svc := e.service(w.Service)
		if w.Service == "" {
			return fmt.Errorf("%s: a load balancer's listener is rolled back as the service that configures it (loadBalancer: in rollback.yaml); pass the service's name", w.Target.Ref())
		}
		if svc == nil || svc.LoadBalancer == nil {
			return fmt.Errorf("%s: no loadBalancer configured for service %q in rollback.yaml", w.Target.Ref(), w.Service)
		}
		if w.Target.LB, err = NewLoadBalancer(ctx, svc.LoadBalancer); err != nil {
			return fmt.Errorf("services.%s.loadBalancer: %w", w.Service, err)
		}
	case kube.KindHelm:
		if w.Target.Helm != nil {
			return nil
		}
		if e.Helm == nil {
			return fmt.Errorf("%s: no Helm client", w.Target.Ref())
		}
		if w.Target.Helm, err = e.Helm(w.Context, w.Target.Namespace); err != nil {
			return err
		}
	}
	return nil
}
