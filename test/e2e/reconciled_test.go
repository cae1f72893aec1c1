package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Evidence that a real reconciler has looked again, in place of a fixed
// wait: a test that asserts "the reconciler did not re-apply the broken
// version" asks the controller for reconciles and waits until its status
// says each was handled. A controller that would re-apply does so in one
// of them, and the sampler running beside it sees it.

// fluxReconciled asks Flux to reconcile kind/name of ns n times, one after
// the other, and waits until the controller reports each handled
// (status.lastHandledReconcileAt echoing the request). A suspended object is
// never handled: use it on what is expected to be live.
func fluxReconciled(t *testing.T, kind, ns, name string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		token := time.Now().UTC().Format(time.RFC3339Nano)
		kubectl(t, "annotate", kind, name, "-n", ns, "reconcile.fluxcd.io/requestedAt="+token, "--overwrite")
		eventually(t, 120*time.Second, func() (bool, string) {
			got := kubectl(t, "get", kind, name, "-n", ns, "-o", "jsonpath={.status.lastHandledReconcileAt}")
			return got == token, "lastHandledReconcileAt " + got + ", asked " + token
		}, "Flux never handled the reconcile asked of %s %s/%s", kind, ns, name)
	}
}

// argoReconciled asks the real Argo CD to refresh the Application n times
// and waits, each time, until its status.reconciledAt has moved on, the
// refresh annotation is consumed and no sync operation runs: a refresh is a
// full comparison with Git, after which automated sync (with self-heal)
// starts any sync it finds needed.
func argoReconciled(t *testing.T, app string, n int) {
	t.Helper()
	read := func() (reconciled time.Time, pending bool, phase string) {
		out := kubectl(t, "get", "application", app, "-n", "argocd", "-o",
			`jsonpath={.status.reconciledAt}|{.metadata.annotations.argocd\.argoproj\.io/refresh}|{.status.operationState.phase}`)
		parts := strings.SplitN(out, "|", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		reconciled, _ = time.Parse(time.RFC3339, parts[0])
		return reconciled, parts[1] != "", parts[2]
	}
	for i := 0; i < n; i++ {
		var before time.Time
		eventually(t, 120*time.Second, func() (bool, string) {
			before, _, _ = read()
			return !before.IsZero(), "no status.reconciledAt yet"
		}, "Argo CD never reconciled Application %s a first time", app)
		// reconciledAt has whole seconds: ask in a later second than the
		// last reconcile's, so the one asked for shows as a later time.
		if wait := time.Until(before.Add(time.Second)); wait > 0 {
			time.Sleep(wait)
		}
		kubectl(t, "annotate", "application", app, "-n", "argocd", "argocd.argoproj.io/refresh=normal", "--overwrite")
		eventually(t, 120*time.Second, func() (bool, string) {
			at, pending, phase := read()
			return at.After(before) && !pending && phase != "Running",
				fmt.Sprintf("reconciledAt %s (before %s), refresh pending %t, operation %q", at, before, pending, phase)
		}, "Argo CD never finished refreshing Application %s", app)
	}
}

// eventually polls cond every 100 ms until it holds, failing the test
// with what and cond's last account after timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string), what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf(what+" within %s (last: %s)", append(args, timeout, last)...)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// atLeast waits until the sampler holds n samples.
func (s *sampler) atLeast(t *testing.T, n int) {
	t.Helper()
	eventually(t, 60*time.Second, func() (bool, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.images) >= n, ""
	}, "fewer than %d samples of the Deployment", n)
}
