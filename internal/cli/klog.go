package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// RouteClientLogs sends client-go's own logging (klog: "Failed to watch
// ...: connection refused" while the API server restarts) through
// rollback's error stream as warning lines, errors only, each distinct
// message at most once per 10 seconds, instead of raw lines on stderr.
// klog's logger is process-wide (and not safe to set concurrently), so
// the program calls this once, before cli.Main.
func RouteClientLogs(w io.Writer, now func() time.Time) {
	klog.SetSlogLogger(slog.New(&clientLogHandler{w: w, now: now, mu: &sync.Mutex{}, seen: map[string]time.Time{}}))
}

type clientLogHandler struct {
	w     io.Writer
	now   func() time.Time
	mu    *sync.Mutex
	seen  map[string]time.Time
	attrs []slog.Attr
}

func (h *clientLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (h *clientLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		if a.Key == "err" || a.Key == "error" || a.Key == "reflector" || a.Key == "type" {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	msg := b.String()
	if h.mu == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.now()
	if last, ok := h.seen[msg]; ok && t.Sub(last) < 10*time.Second {
		return nil
	}
	h.seen[msg] = t
	_, err := fmt.Fprintf(h.w, "warning: kubernetes client: %s\n", msg)
	return err
}

func (h *clientLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}

func (h *clientLogHandler) WithGroup(string) slog.Handler { return h }
