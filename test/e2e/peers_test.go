package e2e

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/peerbuild"
	"github.com/rollback-dev/rollback/internal/reaper"
)

// Real peers (controllers) the tests start beside the sandbox, once each,
// stopped when the tests end.
var peers struct {
	sync.Mutex
	started map[string]error
	procs   []*exec.Cmd
}

func stopPeers() {
	peers.Lock()
	defer peers.Unlock()
	for _, p := range peers.procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// applyCRDs applies a directory of CRDs (bin/crds/NAME, fetched by 'make
// test') and waits until the named ones are established.
func applyCRDs(name string, established ...string) error {
	dir := filepath.Join(binDir, "crds", name)
	out, err := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("apply the %s CRDs from %s (run 'make test', which fetches them): %v\n%s", name, dir, err, out)
	}
	// Polled rather than 'kubectl wait': a CRD just created has no
	// conditions yet, which kubectl wait takes for an error.
	deadline := time.Now().Add(180 * time.Second)
	for _, crd := range established {
		for {
			out, _ := exec.Command("kubectl", "--kubeconfig", kubeconfig, "get", "crd", crd, "-o",
				`jsonpath={.status.conditions[?(@.type=="Established")].status}`).Output()
			if string(out) == "True" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s is not Established after 180s", crd)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// startPeer runs start once per name; a failure fails every test that
// needs the peer (never a skip).
func startPeer(t *testing.T, name string, start func() error) {
	t.Helper()
	peers.Lock()
	defer peers.Unlock()
	if peers.started == nil {
		peers.started = map[string]error{}
	}
	err, done := peers.started[name]
	if !done {
		err = start()
		peers.started[name] = err
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// runPeer starts a controller binary from bin/ with its log in the
// sandbox directory (killed with this run), and polls its health URL
// until it answers 200; an exit before that is the error, with its log.
func runPeer(bin, health string, args ...string) error {
	return runPeerEnv(bin, health, nil, args...)
}

// runPeerEnv is runPeer with extra environment variables.
func runPeerEnv(bin, health string, env []string, args ...string) error {
	path := filepath.Join(binDir, bin)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s is missing: run 'make test' (scripts/build-peers.sh builds it)", path)
	}
	log, err := os.Create(filepath.Join(sandboxDir, bin+".log"))
	if err != nil {
		return err
	}
	cmd := reaper.Child(exec.Command(path, args...))
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	peers.procs = append(peers.procs, cmd)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.After(180 * time.Second)
	for {
		if resp, err := hc.Get(health); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("%s exited before it was healthy: %v\n%s", bin, err, b)
		case <-deadline:
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("%s not healthy at %s after 180s:\n%s", bin, health, b)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// slots are the tests running at once: go test's -parallel, taken over
// (takeParallel) so that a test waiting for a peer's build gives its place
// to one that needs no peer ('make test' builds the peers while the tests
// run; with go test's own limit, tests waiting for them would fill every
// place and stop the rest).
var (
	slots chan struct{}
	// holding: the tests holding a slot, by name.
	holding sync.Map
)

// takeParallel sizes slots from -test.parallel and lifts go test's own
// limit (parallel takes a place instead).
func takeParallel() {
	flag.Parse()
	n := runtime.GOMAXPROCS(0)
	if f := flag.Lookup("test.parallel"); f != nil {
		if v, err := strconv.Atoi(f.Value.String()); err == nil && v > 0 {
			n = v
		}
	}
	slots = make(chan struct{}, n)
	_ = flag.Set("test.parallel", "10000")
}

// parallel is t.Parallel with a place in slots, held until the test and
// its subtests end, as go test's own limit works: a parallel subtest
// starts only once its parent's function has returned, so the first one
// to start frees its parent's place.
func parallel(t *testing.T) {
	t.Parallel()
	name := t.Name()
	for i := strings.LastIndexByte(name, '/'); i > 0; i = strings.LastIndexByte(name[:i], '/') {
		if _, held := holding.LoadAndDelete(name[:i]); held {
			<-slots
			break
		}
	}
	take(t)
	t.Cleanup(func() { release(t) })
}

func take(t *testing.T) {
	slots <- struct{}{}
	holding.Store(t.Name(), true)
}

func release(t *testing.T) bool {
	if _, held := holding.LoadAndDelete(t.Name()); held {
		<-slots
		return true
	}
	return false
}

// waitBuilt waits until scripts/build-peers.sh has built group (running
// beside the tests in 'make test'), giving this test's place up meanwhile.
func waitBuilt(t *testing.T, group string) {
	t.Helper()
	gaveUp := false
	err := peerbuild.Wait(context.Background(), binDir, group, func() {
		t.Logf("waiting for scripts/build-peers.sh to build %s", group)
		gaveUp = release(t)
	})
	if gaveUp {
		take(t)
	}
	if err != nil {
		t.Fatal(err)
	}
}
