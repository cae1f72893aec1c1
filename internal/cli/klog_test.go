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

// A notifier that panics is evidence, like one that fails; the others'
// outcomes are kept.
func TestNotifierPanicIsEvidence(t *testing.T) {
	ns := notifyAll([]func() []notice{
		func() []notice { return []notice{{text: "slack ok", delivered: true}} },
		func() []notice { var m map[string]int; m["x"]++; return nil },
	})
	if len(ns) != 2 || !ns[0].delivered || !strings.Contains(ns[1].text, "panic") {
		t.Fatalf("got %+v", ns)
	}
	if ev := notifiedEvidence("incident X", ns[1:]); !strings.Contains(ev, "; not notified; notifier failed: panic") {
		t.Errorf("evidence %q", ev)
	}
}
