// Package components runs the Kubernetes control-plane components that the
// sandbox is made of (kube-apiserver, kube-controller-manager,
// kube-scheduler) from their upstream command packages, so one binary can
// play every part: the sandbox starts itself once per component.
package components

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

// Names lists the components this binary can run.
func Names() []string {
	var n []string
	for k := range builderMap() {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func builderMap() map[string]func() *cobra.Command {
	return map[string]func() *cobra.Command{
		"kube-apiserver":          apiserver.NewAPIServerCommand,
		"kube-controller-manager": controllermanager.NewControllerManagerCommand,
		"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	}
}

// Command returns the upstream cobra command for a component, with args set.
func Command(name string, args []string) (*cobra.Command, error) {
	b, ok := builderMap()[name]
	if !ok {
		return nil, fmt.Errorf("unknown component %q (known: %v)", name, Names())
	}
	c := b()
	c.SetArgs(args)
	return c, nil
}
