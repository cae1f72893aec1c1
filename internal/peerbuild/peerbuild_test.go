package peerbuild

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A status directory as build-peers.sh writes it, with a live process as
// the builder.
func fakeBuild(t *testing.T) (binDir, dir string, stop func()) {
	t.Helper()
	binDir = t.TempDir()
	dir = StatusDir(binDir)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	t.Cleanup(stop)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "building"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return binDir, dir, stop
}

func init() { Poll = 10 * time.Millisecond }

func TestWaitsUntilTheGroupIsBuilt(t *testing.T) {
	binDir, dir, _ := fakeBuild(t)
	waited := 0
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = os.WriteFile(filepath.Join(dir, "flagger"), nil, 0o644)
	}()
	start := time.Now()
	if err := Wait(context.Background(), binDir, "flagger", func() { waited++ }); err != nil {
		t.Fatal(err)
	}
	if waited != 1 || time.Since(start) < 100*time.Millisecond {
		t.Errorf("waiting called %d times, returned after %v: want once, after the group's file", waited, time.Since(start))
	}
	// Ready: no wait at all.
	if err := Wait(context.Background(), binDir, "flagger", func() { t.Error("waited for a built group") }); err != nil {
		t.Fatal(err)
	}
}

func TestWaitEndsWithTheBuild(t *testing.T) {
	for name, end := range map[string]func(dir string, stop func()){
		"failed": func(dir string, _ func()) { // as build-peers.sh writes it: whole, then renamed
			_ = os.WriteFile(filepath.Join(dir, "failed.tmp"), []byte("argocd: exit status 1\n"), 0o644)
			_ = os.Rename(filepath.Join(dir, "failed.tmp"), filepath.Join(dir, "failed"))
		},
		"done":   func(dir string, _ func()) { _ = os.WriteFile(filepath.Join(dir, "done"), nil, 0o644) },
		"killed": func(_ string, stop func()) { stop() },
	} {
		t.Run(name, func(t *testing.T) {
			binDir, dir, stop := fakeBuild(t)
			go func() { time.Sleep(50 * time.Millisecond); end(dir, stop) }()
			err := Wait(context.Background(), binDir, "argocd", nil)
			want := map[string]string{"failed": "failed before it built argocd (argocd: exit status 1)", "done": "finished without building argocd", "killed": "stopped before it built argocd"}[name]
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want %q", err, want)
			}
		})
	}
}

func TestNoStatusIsNoWait(t *testing.T) {
	if err := Wait(context.Background(), t.TempDir(), "helm", func() { t.Error("waited with no build") }); err != nil {
		t.Fatal(err)
	}
	// A directory with no process in it never makes a test hang.
	binDir := t.TempDir()
	_ = os.MkdirAll(StatusDir(binDir), 0o755)
	if err := Wait(context.Background(), binDir, "helm", nil); err == nil || !strings.Contains(err.Error(), "holds no process ID") {
		t.Errorf("err = %v", err)
	}
}

func TestWaitHonoursItsContext(t *testing.T) {
	binDir, _, _ := fakeBuild(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := Wait(ctx, binDir, "argocd", nil); err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("err = %v", err)
	}
}
