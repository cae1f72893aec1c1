package reaper_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/pgtest"
	"github.com/rollback-dev/rollback/internal/reaper"
)

const helperEnv = "REAPER_TEST_RUN"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helperRun()
	}
	os.Exit(m.Run())
}

// helperRun is the "test run" TestKilledRunLeavesNothing kills: it starts
// PostgreSQL (a daemon, guarded) and a controller-like child, says their
// PIDs and directory, and waits to be killed.
func helperRun() {
	srv, err := pgtest.Start(context.Background())
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	b, err := os.ReadFile(filepath.Join(srv.Dir, "data", "postmaster.pid"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	postmaster, _, _ := strings.Cut(string(b), "\n")
	child := reaper.Child(exec.Command("sleep", "300"))
	if err := child.Start(); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Printf("pids %s %d %s\n", postmaster, child.Process.Pid, srv.Dir)
	select {}
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(st), ") Z ")
}

// A test run killed with SIGKILL (no cleanup runs) leaves no PostgreSQL
// and no child process behind, and its PostgreSQL directory is gone.
func TestKilledRunLeavesNothing(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pm, child int
	var dir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "pids %d %d %s", &pm, &child, &dir); err == nil {
			break
		}
	}
	if pm == 0 || child == 0 {
		_ = cmd.Process.Kill()
		t.Fatalf("the helper run said no PIDs: %v", cmd.Wait())
	}
	if !alive(pm) || !alive(child) {
		t.Fatalf("before the kill: postmaster %d alive %v, child %d alive %v", pm, alive(pm), child, alive(child))
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, statErr := os.Stat(dir)
		if !alive(pm) && !alive(child) && os.IsNotExist(statErr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the kill: postmaster %d alive %v, child %d alive %v, %s exists %v", pm, alive(pm), child, alive(child), dir, statErr == nil)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ReapStale stops what a run whose watchdog died too left: a directory
// whose owner is gone is stopped (its stop command run, the PID in its pid
// file signalled) and removed; one whose owner lives is left alone.
func TestReapStale(t *testing.T) {
	root := t.TempDir()
	daemon := exec.Command("sleep", "300")
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = daemon.Wait() }()
	t.Cleanup(func() { _ = daemon.Process.Kill() })
	stale := filepath.Join(root, "run-stale")
	live := filepath.Join(root, "run-live")
	marker := filepath.Join(root, "stopped")
	for _, d := range []string{stale, live} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(filepath.Join(stale, "daemon.pid"), []byte(strconv.Itoa(daemon.Process.Pid)+"\n"), 0o644)
	// The stale plan's owner: a process that has ended.
	gone := exec.Command("true")
	_ = gone.Run()
	if err := reaper.WritePlan(stale, gone.Process.Pid, reaper.Stop{Argv: []string{"touch", marker}, PIDFile: filepath.Join(stale, "daemon.pid"), Program: "sleep"}); err != nil {
		t.Fatal(err)
	}
	if err := reaper.WritePlan(live, os.Getpid(), reaper.Stop{Argv: []string{"touch", marker + "-live"}}); err != nil {
		t.Fatal(err)
	}
	// A pid file whose PID now runs another program (reused): that
	// process is never signalled.
	bystander := exec.Command("sleep", "301")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = bystander.Wait() }()
	t.Cleanup(func() { _ = bystander.Process.Kill() })
	reused := filepath.Join(root, "run-reused")
	_ = os.Mkdir(reused, 0o755)
	_ = os.WriteFile(filepath.Join(reused, "postmaster.pid"), []byte(strconv.Itoa(bystander.Process.Pid)+"\n"), 0o644)
	if err := reaper.WritePlan(reused, gone.Process.Pid, reaper.Stop{PIDFile: filepath.Join(reused, "postmaster.pid"), Program: "postgres"}); err != nil {
		t.Fatal(err)
	}
	reaped, err := reaper.ReapStale(filepath.Join(root, "run-*"))
	if err != nil || len(reaped) != 2 || !slices.Contains(reaped, stale) || !slices.Contains(reaped, reused) {
		t.Fatalf("reaped %v, %v; want %s and %s", reaped, err, stale, reused)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("%s still exists", stale)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error("the stale run's stop command did not run")
	}
	if _, err := os.Stat(marker + "-live"); err == nil {
		t.Error("a live run's directory was reaped")
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(daemon.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the stale run's daemon still runs")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The daemon signalled in the same pass is gone: a signal sent to the
	// bystander would have ended it by now too.
	if !alive(bystander.Process.Pid) {
		t.Error("a process that reused a stale pid file's PID was killed")
	}
}
