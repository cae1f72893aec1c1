// Package outboundtest has local servers that misbehave the way real
// endpoints do during an incident, for tests and benchmarks of the
// timeouts in package outbound and its callers.
package outboundtest

import (
	"net/http"
	"net/http/httptest"
	"sync"
)

// Hung starts a server that accepts every request and never answers
// until stop is called (stop then ends the held requests and the server).
func Hung() (url string, stop func()) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	var once sync.Once
	return srv.URL, func() {
		once.Do(func() {
			close(release)
			srv.Close()
		})
	}
}
