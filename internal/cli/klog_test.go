package cli

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

// client-go's errors (a watch failing while the API server restarts) come
// out as rollback's warning lines, once per 10 s each; its info lines not.
func TestClientLogsGoThroughRollbackOutput(t *testing.T) {
	var b strings.Builder
	clock := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	RouteClientLogs(&b, func() time.Time { return clock })
	defer klog.ClearLogger()
	err := errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	klog.ErrorS(err, "Failed to watch", "reflector", "k8s.io/client-go/informers/factory.go:160")
	klog.ErrorS(err, "Failed to watch", "reflector", "k8s.io/client-go/informers/factory.go:160")
	klog.InfoS("Caches populated")
	clock = clock.Add(11 * time.Second)
	klog.ErrorS(err, "Failed to watch", "reflector", "k8s.io/client-go/informers/factory.go:160")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "warning: kubernetes client: Failed to watch") || !strings.Contains(lines[0], "connection refused") {
		t.Errorf("got %q", b.String())
	}
}
