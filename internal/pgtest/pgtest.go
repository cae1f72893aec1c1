// Package pgtest starts a real, throw-away PostgreSQL server for tests:
// initdb in a temporary directory, pg_ctl on a free loopback port, trust
// authentication. As root it runs the server as the postgres user.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollback-dev/rollback/internal/reaper"
)

// Server is a running PostgreSQL.
type Server struct {
	Dir  string
	Port int
	bin  string
	uid  *syscall.Credential
	// release tells the watchdog the server was stopped here.
	release func()
}

// BinDir finds PostgreSQL's server programs (initdb, pg_ctl).
func BinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL server programs (initdb, pg_ctl) not found: install Debian's postgresql package (make deps does)")
}

// Options configure StartWith.
type Options struct {
	// Durable keeps PostgreSQL's production durability (fsync,
	// synchronous_commit, full_page_writes on); tests run without it.
	Durable bool
}

// Start initializes and starts a server for tests (no fsync: nothing here
// must survive a power cut). Stop it with Stop.
func Start(ctx context.Context) (*Server, error) { return StartWith(ctx, Options{}) }

// Bin is the path of one of the server's programs (pg_dump, pg_restore).
func (s *Server) Bin(prog string) string { return filepath.Join(s.bin, prog) }

// StartWith initializes and starts a server. Stop it with Stop.
func StartWith(ctx context.Context, o Options) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "rollback-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.uid = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	// Killed, the run's server is stopped by a watchdog (an immediate
	// shutdown of the postmaster) and its files removed.
	if s.release, err = reaper.Guard(dir, reaper.Stop{PIDFile: filepath.Join(dir, "data", "postmaster.pid"), Program: "postgres"}); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	data := filepath.Join(dir, "data")
	if out, err := s.run(ctx, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		s.Stop()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", s.Port, dir)
	if !o.Durable {
		opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	if out, err := s.run(ctx, "pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		s.Stop()
		return nil, fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return s, nil
}

func (s *Server) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, prog), args...)
	if s.uid != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.uid}
	}
	cmd.Dir = s.Dir
	return cmd.CombinedOutput()
}

// DSN is the connection string for a database on the server.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// CreateDB creates a fresh database and returns its DSN.
func (s *Server) CreateDB(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return s.DSN(name), nil
}

// Restart stops the server the fast way (every connection is dropped)
// and starts it again on the same port, as a database restart in
// production would.
func (s *Server) Restart(ctx context.Context) error {
	data := filepath.Join(s.Dir, "data")
	// -l again: without it the new server would write to our pipe and
	// the command would never be seen to end.
	if out, err := s.run(ctx, "pg_ctl", "-D", data, "-l", filepath.Join(s.Dir, "log"), "-m", "fast", "-w", "-t", "60", "restart"); err != nil {
		return fmt.Errorf("pg_ctl restart: %w\n%s", err, out)
	}
	return nil
}

// Stop stops the server and removes its files.
func (s *Server) Stop() {
	if _, err := os.Stat(filepath.Join(s.Dir, "data", "postmaster.pid")); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = s.run(ctx, "pg_ctl", "-D", filepath.Join(s.Dir, "data"), "-m", "immediate", "-w", "stop")
		cancel()
	}
	_ = os.RemoveAll(s.Dir)
	if s.release != nil {
		s.release()
	}
}

// Main is a TestMain body for packages whose tests need PostgreSQL: it
// starts a server, stores it in *srv, runs the tests and stops it. A
// missing PostgreSQL fails the tests; it never skips them.
func Main(m interface{ Run() int }, pkg string, srv **Server) int {
	s, err := Start(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests need PostgreSQL: %v\n", pkg, err)
		return 1
	}
	defer s.Stop()
	*srv = s
	return m.Run()
}

// FlywayHistoryDDL creates flyway_schema_history as Flyway does, for tests
// and benches that play Flyway's part.
const FlywayHistoryDDL = `CREATE TABLE flyway_schema_history (
	installed_rank INT NOT NULL PRIMARY KEY,
	version VARCHAR(50),
	description VARCHAR(200) NOT NULL,
	type VARCHAR(20) NOT NULL,
	script VARCHAR(1000) NOT NULL,
	checksum INT,
	installed_by VARCHAR(100) NOT NULL,
	installed_on TIMESTAMP NOT NULL DEFAULT now(),
	execution_time INT NOT NULL,
	success BOOLEAN NOT NULL)`

// Freeze stops every process of the server (the postmaster and each
// backend) with SIGSTOP, as a stalled database host or a failover does:
// connections stay open and every query hangs. thaw (SIGCONT) resumes it.
func (s *Server) Freeze() (thaw func(), err error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, "data", "postmaster.pid"))
	if err != nil {
		return nil, err
	}
	var pm int
	if _, err := fmt.Sscan(strings.SplitN(string(b), "\n", 2)[0], &pm); err != nil {
		return nil, fmt.Errorf("postmaster.pid: %w", err)
	}
	pids := []int{pm}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid := 0
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; read after ')'.
		rest := string(st[strings.LastIndexByte(string(st), ')')+1:])
		var state string
		var ppid int
		if _, err := fmt.Sscan(rest, &state, &ppid); err == nil && ppid == pm {
			pids = append(pids, pid)
		}
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGSTOP)
	}
	return func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	}, nil
}
