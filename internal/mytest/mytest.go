// Package mytest starts a real, throw-away MariaDB server for tests:
// mariadb-install-db in a temporary directory, mariadbd on a free loopback
// port, root without a password. A killed test run's server is stopped by
// the reaper's watchdog.
package mytest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rollback-dev/rollback/internal/reaper"
)

// Server is a running MariaDB.
type Server struct {
	Dir     string
	Port    int
	Version string
	cmd     *exec.Cmd
	exited  chan struct{}
	release func()
}

// Options configure StartWith.
type Options struct {
	// Durable keeps MariaDB's production durability (a log flush per
	// commit, the doublewrite buffer); tests run without it.
	Durable bool
}

// Programs finds the server's programs.
func Programs() (installDB, server string, err error) {
	for _, p := range [][2]string{{"mariadb-install-db", "mariadbd"}, {"mysql_install_db", "mysqld"}} {
		i, err1 := exec.LookPath(p[0])
		s, err2 := exec.LookPath(p[1])
		if err2 != nil {
			if _, err := os.Stat("/usr/sbin/" + p[1]); err == nil {
				s, err2 = "/usr/sbin/"+p[1], nil
			}
		}
		if err1 == nil && err2 == nil {
			return i, s, nil
		}
	}
	return "", "", fmt.Errorf("MariaDB server programs (mariadb-install-db, mariadbd) not found: install Debian's mariadb-server (make deps does)")
}

// Start starts a server for tests (no flush per commit). Stop it with Stop.
func Start(ctx context.Context) (*Server, error) { return StartWith(ctx, Options{}) }

// StartWith initializes and starts a server.
func StartWith(ctx context.Context, o Options) (*Server, error) {
	installDB, server, err := Programs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "rollback-my-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, exited: make(chan struct{})}
	data := filepath.Join(dir, "data")
	pid := filepath.Join(dir, "mariadbd.pid")
	if s.release, err = reaper.Guard(dir, reaper.Stop{PIDFile: pid, Program: filepath.Base(server)}); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	user := []string{}
	if os.Geteuid() == 0 {
		user = []string{"--user=root"}
	}
	args := append([]string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}, user...)
	// mariadb-install-db fails when another runs at the same time (test
	// packages start their servers in parallel): one at a time, across
	// processes.
	unlock, err := installLock()
	if err != nil {
		s.Stop()
		return nil, err
	}
	out, err := exec.CommandContext(ctx, installDB, args...).CombinedOutput()
	unlock()
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("%s: %w\n%s", filepath.Base(installDB), err, out)
	}
	// Its own temporary directory: servers of parallel test packages
	// sharing /tmp delete each other's internal temporary tables.
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		s.Stop()
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	sargs := append([]string{"--no-defaults", "--datadir=" + data, "--socket=" + filepath.Join(dir, "sock"),
		fmt.Sprintf("--port=%d", s.Port), "--bind-address=127.0.0.1", "--pid-file=" + pid,
		"--log-error=" + filepath.Join(dir, "log"), "--max-connections=300", "--innodb-buffer-pool-size=128M",
		"--skip-name-resolve", "--tmpdir=" + tmp}, user...)
	if !o.Durable {
		sargs = append(sargs, "--innodb-flush-log-at-trx-commit=0", "--skip-innodb-doublewrite", "--innodb-flush-method=nosync")
	}
	s.cmd = exec.Command(server, sargs...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		s.Stop()
		return nil, err
	}
	exited := s.exited
	go func() { _ = s.cmd.Wait(); close(exited) }()
	if err := s.waitReady(ctx, time.Now().Add(60*time.Second)); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady waits until the server answers.
func (s *Server) waitReady(ctx context.Context, deadline time.Time) error {
	for {
		db, err := sql.Open("mysql", s.config("").FormatDSN())
		if err == nil {
			err = db.PingContext(ctx)
			if err == nil {
				err = db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&s.Version)
			}
			db.Close()
		}
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
			return fmt.Errorf("mariadbd exited at start:\n%s", log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
			return fmt.Errorf("mariadbd did not answer in 60s: %v\n%s", err, log)
		}
	}
}

func (s *Server) config(db string) *mysql.Config {
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName = "root", "tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), db
	c.ParseTime = true
	return c
}

// DSN is rollback's connection string for a database on the server, in
// golang-migrate's form.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("mysql://root@tcp(127.0.0.1:%d)/%s", s.Port, db)
}

// Open connects to a database on the server.
func (s *Server) Open(db string) (*sql.DB, error) {
	return sql.Open("mysql", s.config(db).FormatDSN())
}

// CreateDB creates a fresh database and returns rollback's DSN for it.
func (s *Server) CreateDB(ctx context.Context, name string) (string, error) {
	db, err := s.Open("")
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE `"+strings.ReplaceAll(name, "`", "``")+"`"); err != nil {
		return "", err
	}
	return s.DSN(name), nil
}

// installLock takes an exclusive lock on a file in the temporary
// directory until the returned function is called.
func installLock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "rollback-mytest-install.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// Restart stops the server (every connection is dropped) and starts it
// again on the same port and data, as a database restart in production
// would.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("mariadbd did not stop in 30s")
	}
	s.exited = make(chan struct{})
	s.cmd = exec.Command(s.cmd.Path, s.cmd.Args[1:]...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := s.exited
	go func() { _ = s.cmd.Wait(); close(exited) }()
	return s.waitReady(ctx, time.Now().Add(60*time.Second))
}

// Pause stops the server's process (SIGSTOP): connections stay open and
// nothing answers, as a hung database. Resume with Continue.
func (s *Server) Pause() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Continue resumes a paused server.
func (s *Server) Continue() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Stop stops the server and removes its files.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
	}
	_ = os.RemoveAll(s.Dir)
	if s.release != nil {
		s.release()
	}
}

// Lazy is one server for a test binary, started by the first test that
// asks (Get) and stopped by TestMain (Stop).
type Lazy struct {
	once sync.Once
	srv  *Server
	err  error
}

// Get starts the server on first use.
func (l *Lazy) Get() (*Server, error) {
	l.once.Do(func() { l.srv, l.err = Start(context.Background()) })
	if l.err != nil {
		return nil, fmt.Errorf("MariaDB (make deps installs it): %w", l.err)
	}
	return l.srv, nil
}

// For is Get in a test: a server that cannot start fails it (it never
// skips).
func (l *Lazy) For(t testing.TB) *Server {
	t.Helper()
	s, err := l.Get()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Stop stops the server if it was started.
func (l *Lazy) Stop() {
	if l.srv != nil {
		l.srv.Stop()
	}
}
