// Package reaper makes what a test run starts die with it. A killed test
// binary (a timeout's SIGQUIT, SIGKILL, a closed terminal) runs no
// cleanup, and the sandbox's control plane and PostgreSQL are daemons
// that outlive it; so are the controllers a test starts, unless told.
//
//   - Child marks a direct child to be killed by the kernel when its
//     parent dies (Linux's parent-death signal).
//   - Guard writes, into the directory of a daemon the run started, how
//     to stop it, and starts a watchdog (this executable again, in its own
//     session) that holds a pipe from the run: when the run dies the pipe
//     closes and the watchdog stops the daemon and removes the directory.
//     Release says the run stopped it itself.
//   - ReapStale stops what a run whose watchdog was killed too left behind:
//     directories whose owner is gone.
//
// The watchdog is the binary that called Guard, run again: this package's
// init turns it into the watchdog before anything else of it runs (a test
// binary never runs its tests as a watchdog).
package reaper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Child makes cmd's process receive SIGKILL when this process dies.
func Child(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// Stop is how to stop a daemon: a command to run (as the given user, for
// a server that refuses root), or the PID in a pid file (its first line)
// to signal with SIGQUIT then, if it lingers, SIGKILL — only while that
// PID still runs Program (a PID is reused). Then the directory goes.
type Stop struct {
	Argv    []string `json:"argv,omitempty"`
	UID     *uint32  `json:"uid,omitempty"`
	GID     *uint32  `json:"gid,omitempty"`
	PIDFile string   `json:"pidFile,omitempty"`
	Program string   `json:"program,omitempty"`
}

// plan is what a guarded directory holds in reapFile.
type plan struct {
	Owner     int    `json:"owner"`
	OwnerSeen string `json:"ownerStart"` // /proc/PID/stat's start time
	Stop      Stop   `json:"stop"`
}

const (
	reapFile = ".reap.json"
	envWatch = "ROLLBACK_REAPER_WATCH"
)

// Guard starts a watchdog that, when this process dies without Release,
// stops the daemon as stop says and removes dir. The returned Release
// tells the watchdog the run cleaned up itself.
func Guard(dir string, stop Stop) (release func(), err error) {
	if err := WritePlan(dir, os.Getpid(), stop); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envWatch+"="+dir)
	cmd.Stdin = r
	// Its own session: a Ctrl-C or a kill of the run's process group
	// does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start the watchdog of %s: %w", dir, err)
	}
	r.Close()
	go func() { _ = cmd.Wait() }()
	return func() {
		_, _ = w.Write([]byte("released\n"))
		_ = w.Close()
	}, nil
}

// WritePlan records in dir that owner started what stop stops (Guard
// does, for this process).
func WritePlan(dir string, owner int, stop Stop) error {
	b, _ := json.Marshal(plan{Owner: owner, OwnerSeen: startTime(owner), Stop: stop})
	return os.WriteFile(filepath.Join(dir, reapFile), b, 0o600)
}

// init runs the watchdog when this process was started as one.
func init() {
	dir := os.Getenv(envWatch)
	if dir == "" {
		return
	}
	b, _ := io.ReadAll(os.Stdin) // until the run releases or dies
	if !bytes.HasPrefix(b, []byte("released")) {
		_ = reap(dir)
	}
	os.Exit(0)
}

// ReapStale stops and removes every directory matching pattern that holds
// a plan whose owner is gone; it returns what it reaped.
func ReapStale(pattern string) ([]string, error) {
	dirs, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	var reaped []string
	var errs []error
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, reapFile))
		if err != nil {
			continue
		}
		var p plan
		if json.Unmarshal(b, &p) != nil || alive(p.Owner, p.OwnerSeen) {
			continue
		}
		if err := reap(d); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, d)
	}
	return reaped, errors.Join(errs...)
}

func reap(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, reapFile))
	if err != nil {
		return err
	}
	var p plan
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	s := p.Stop
	if len(s.Argv) > 0 {
		cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
		// Not a watchdog itself (the variable would make a binary that
		// links this package one).
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, envWatch+"=") })
		if s.UID != nil && s.GID != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: *s.UID, Gid: *s.GID}}
		}
		_ = cmd.Run()
	}
	if s.PIDFile != "" {
		if pb, err := os.ReadFile(s.PIDFile); err == nil {
			line, _, _ := strings.Cut(string(pb), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && pid > 0 && runs(pid, s.Program) {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
				for i := 0; i < 100 && runs(pid, s.Program); i++ {
					time.Sleep(50 * time.Millisecond)
				}
				if runs(pid, s.Program) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	return os.RemoveAll(dir)
}

// runs reports whether pid is a live (not zombie) process of program
// (its argv[0]'s base name; any process when program is "").
func runs(pid int, program string) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
		return false
	}
	if program == "" {
		return true
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return filepath.Base(string(argv0)) == program
}

// startTime is field 22 of /proc/PID/stat: with the PID, a process's
// identity (a PID is reused).
func startTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func alive(pid int, seen string) bool {
	return pid > 0 && runs(pid, "") && (seen == "" || startTime(pid) == seen)
}
