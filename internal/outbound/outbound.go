// Package outbound is how rollback talks to services it does not own
// (Slack, PagerDuty, webhooks, flag services, Prometheus, smoke-test
// endpoints): every client has a timeout on each phase of a request, a
// server's Retry-After is read as it documents it, and errors are
// scrubbed of the URL's path and query, where webhook secrets live, before
// they reach evidence, the journal or a report.
package outbound

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds one request end to end when the caller sets none.
const DefaultTimeout = 10 * time.Second

// Client returns an HTTP client whose requests give up after timeout
// (DefaultTimeout when zero or less): connecting, the TLS handshake and
// waiting for response headers are bounded separately as well, so a server
// that accepts a connection and never answers costs at most timeout.
func Client(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	phase := min(timeout, 5*time.Second)
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: phase, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   phase,
			ResponseHeaderTimeout: timeout,
			ExpectContinueTimeout: time.Second,
			MaxIdleConns:          10,
			IdleConnTimeout:       30 * time.Second,
			ForceAttemptHTTP2:     true,
		},
	}
}

// OrDefault is c, or a Client(DefaultTimeout) when c is nil.
func OrDefault(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return Client(DefaultTimeout)
}

// Host is u's scheme and host only: what may be shown of a URL whose path
// or query may hold a secret (a webhook's token).
func Host(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "(url)"
	}
	return p.Scheme + "://" + p.Host
}

// Scrub returns err with every URL it carries cut down to scheme and host:
// a *url.Error (what http.Client returns) names the full request URL.
func Scrub(err error) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// Built anew rather than edited: url.Error quotes the URL (%q), so
		// a URL with characters Go escapes would not be found in the text.
		inner := ""
		if ue.Err != nil {
			inner = strings.ReplaceAll(ue.Err.Error(), ue.URL, Host(ue.URL))
		}
		msg := fmt.Sprintf("%s %q: %s", ue.Op, Host(ue.URL), inner)
		if ue.Timeout() {
			return &scrubbed{msg: msg, timeout: true, cause: ue.Err}
		}
		return &scrubbed{msg: msg, cause: ue.Err}
	}
	return err
}

type scrubbed struct {
	msg     string
	timeout bool
	cause   error
}

func (s *scrubbed) Error() string   { return s.msg }
func (s *scrubbed) Timeout() bool   { return s.timeout }
func (s *scrubbed) Unwrap() error   { return s.cause }
func (s *scrubbed) String() string  { return s.msg }
func (s *scrubbed) Temporary() bool { return s.timeout }

// RetryAfter reads a Retry-After header (seconds or an HTTP date, RFC 9110
// §10.2.3) relative to now; ok is false when there is none.
func RetryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}

// RetryLater is an error from a server that said when to try again.
type RetryLater struct {
	Err   error
	After time.Duration
}

func (r *RetryLater) Error() string {
	return fmt.Sprintf("%v (retry after %s)", r.Err, r.After.Round(time.Millisecond))
}
func (r *RetryLater) Unwrap() error { return r.Err }
