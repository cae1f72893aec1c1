package outbound

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/outbound/outboundtest"
)

func TestScrubCutsURLToHost(t *testing.T) {
	const secret = "T000/B000/XXXXsecretXXXX"
	c := Client(200 * time.Millisecond)
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer hung.Close()
	for _, u := range []string{"http://127.0.0.1:1/services/" + secret + "?token=" + secret, hung.URL + "/hooks/" + secret, "http://127.0.0.1:1/h/" + secret + "/é\"x"} {
		_, err := c.Get(u)
		if err == nil {
			t.Fatalf("%s: no error", u)
		}
		if !strings.Contains(err.Error(), secret) && !strings.Contains(err.Error(), strings.Trim(fmt.Sprintf("%q", secret), `"`)) {
			t.Fatalf("the raw error should carry the URL (else this test proves nothing): %v", err)
		}
		s := Scrub(err)
		if strings.Contains(s.Error(), secret) || !strings.Contains(s.Error(), "http://127.0.0.1") {
			t.Errorf("Scrub(%v) = %v", err, s)
		}
	}
	if Scrub(nil) != nil {
		t.Error("Scrub(nil) is not nil")
	}
	plain := errors.New("x")
	if Scrub(plain) != plain {
		t.Error("Scrub changed an error without a URL")
	}
}

// A server that accepts the connection and never answers costs the
// client's timeout, not forever.
func TestClientTimesOutOnASilentServer(t *testing.T) {
	hung, stop := outboundtest.Hung()
	defer stop()
	done := make(chan error, 1)
	go func() {
		_, err := Client(300 * time.Millisecond).Get(hung)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a silent server answered")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client never gave up on a silent server")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"3":                             3 * time.Second,
		"0":                             0,
		"Fri, 27 Nov 2026 03:00:10 GMT": 10 * time.Second,
		"Fri, 27 Nov 2026 02:59:00 GMT": 0,
	} {
		h := http.Header{"Retry-After": {v}}
		got, ok := RetryAfter(h, now)
		if !ok || got != want {
			t.Errorf("Retry-After %q: %s %v, want %s", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "-1", "soon"} {
		if _, ok := RetryAfter(http.Header{"Retry-After": {v}}, now); ok {
			t.Errorf("Retry-After %q read as a delay", v)
		}
	}
}
