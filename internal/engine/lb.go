package engine

import (
	"context"

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
