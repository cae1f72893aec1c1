// Package peerbuild tells a test whether scripts/build-peers.sh has built
// the real peer it needs yet. 'make test' builds the peers in the
// background while the tests that need none of them run; a test that needs
// one waits here for it, and fails (never skips) when its build failed or
// stopped.
//
// build-peers.sh keeps its status in bin/.peers: "building" (its process
// ID) while it runs, one empty file per peer group as soon as that group is
// in bin/, "failed" (what it was building) or "done" when it ends.
package peerbuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Poll is how often Wait looks at the status directory.
var Poll = time.Second

// StatusDir is build-peers.sh's status directory under binDir.
func StatusDir(binDir string) string { return filepath.Join(binDir, ".peers") }

// Wait returns when build-peers.sh has put group in binDir, or at once when
// no build has left a status (bin/ from an older checkout: the caller's
// own check that the file is there says what is missing). waiting is
// called once, before the first wait, so a caller can say why it stands
// still (and give up a slot it holds).
func Wait(ctx context.Context, binDir, group string, waiting func()) error {
	dir := StatusDir(binDir)
	called := false
	for {
		switch st, detail := status(dir, group); st {
		case ready, absent:
			return nil
		case failed:
			return fmt.Errorf("scripts/build-peers.sh failed before it built %s (%s); its log is %s",
				group, detail, filepath.Join(binDir, "peers.log"))
		case done:
			return fmt.Errorf("scripts/build-peers.sh finished without building %s (is it a peer group it knows?)", group)
		case stopped:
			return fmt.Errorf("scripts/build-peers.sh (process %s) stopped before it built %s: run 'make peers'", detail, group)
		}
		if !called && waiting != nil {
			waiting()
			called = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for scripts/build-peers.sh to build %s: %w", group, ctx.Err())
		case <-time.After(Poll):
		}
	}
}

type state int

const (
	absent state = iota
	building
	ready
	failed
	done
	stopped
)

func status(dir, group string) (state, string) {
	if _, err := os.Stat(filepath.Join(dir, group)); err == nil {
		return ready, ""
	}
	if b, err := os.ReadFile(filepath.Join(dir, "failed")); err == nil {
		return failed, strings.TrimSpace(string(b))
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return done, ""
	}
	if _, err := os.Stat(dir); err != nil {
		return absent, ""
	}
	// The directory appears with its PID file in it (renamed into place).
	b, _ := os.ReadFile(filepath.Join(dir, "building"))
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return stopped, "unknown: " + filepath.Join(dir, "building") + " holds no process ID"
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		// Gone without writing failed or done (SIGKILL): look once more,
		// in case it ended between the reads.
		if _, err := os.Stat(filepath.Join(dir, group)); err == nil {
			return ready, ""
		}
		return stopped, strconv.Itoa(pid)
	}
	return building, ""
}

// Need is Wait for a test that holds no place to give up: it says why it
// waits, and fails the test when the build does.
func Need(t testing.TB, binDir, group string) {
	t.Helper()
	err := Wait(context.Background(), binDir, group, func() { t.Logf("waiting for scripts/build-peers.sh to build %s", group) })
	if err != nil {
		t.Fatal(err)
	}
}
