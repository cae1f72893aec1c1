package migrate

import (
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQL-family connection strings: the scheme mysql:// or mariadb://
// chooses the engine, followed by either golang-migrate's form
// (user:pass@tcp(host:port)/db?params, the driver's own DSN) or a URL
// (user:pass@host:port/db?params, ?socket=/path for a Unix socket).
// golang-migrate's x-* parameters are read by it, not the driver, and are
// dropped here.

// IsMySQL reports whether dsn names a MySQL-family database.
func IsMySQL(dsn string) bool {
	return strings.HasPrefix(dsn, "mysql://") || strings.HasPrefix(dsn, "mariadb://")
}

func mysqlScheme(dsn string) (scheme, rest string) {
	i := strings.Index(dsn, "://")
	return dsn[:i+3], dsn[i+3:]
}

// mysqlConfig is the driver's configuration for dsn, as written (no
// defaults of rollback's own added).
func mysqlConfig(dsn string) (*mysql.Config, error) {
	if !IsMySQL(dsn) {
		return nil, errUnparseable
	}
	_, rest := mysqlScheme(dsn)
	// The driver's form: a protocol with its address in parentheses.
	if strings.Contains(rest, "tcp(") || strings.Contains(rest, "unix(") {
		cfg, err := mysql.ParseDSN(dropCustomParams(rest))
		if err != nil {
			return nil, errUnparseable
		}
		return cfg, nil
	}
	u, err := url.Parse("x://" + rest)
	if err != nil || u.Host == "" && u.Query().Get("socket") == "" {
		return nil, errUnparseable
	}
	q := u.Query()
	socket := q.Get("socket")
	q.Del("socket")
	for k := range q {
		if strings.HasPrefix(k, "x-") {
			q.Del(k)
		}
	}
	cfg, err := mysql.ParseDSN("/?" + q.Encode())
	if err != nil {
		return nil, errUnparseable
	}
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
	}
	switch {
	case socket != "":
		cfg.Net, cfg.Addr = "unix", socket
	default:
		host, port := u.Hostname(), u.Port()
		if !hostRe.MatchString(host) {
			return nil, errUnparseable
		}
		if port == "" {
			port = "3306"
		}
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(host, port)
	}
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if strings.Contains(cfg.DBName, "/") {
		return nil, errUnparseable
	}
	return cfg, nil
}

var hostRe = regexp.MustCompile(`^[A-Za-z0-9._:%-]+$`)

// dropCustomParams removes golang-migrate's x-* query parameters from a
// driver DSN.
func dropCustomParams(dsn string) string {
	i := strings.LastIndex(dsn, "?")
	if i < 0 || strings.LastIndex(dsn, "/") > i {
		return dsn
	}
	var kept []string
	for _, kv := range strings.Split(dsn[i+1:], "&") {
		if !strings.HasPrefix(kv, "x-") && kv != "" {
			kept = append(kept, kv)
		}
	}
	if len(kept) == 0 {
		return dsn[:i]
	}
	return dsn[:i+1] + strings.Join(kept, "&")
}

// mysqlConnConfig is what rollback connects with: dsn's configuration,
// pointed at db when not empty, with times parsed, one statement per call
// and a bounded dial.
func mysqlConnConfig(dsn, db string) (*mysql.Config, error) {
	cfg, err := mysqlConfig(dsn)
	if err != nil {
		return nil, err
	}
	if db != "" {
		cfg.DBName = db
	}
	cfg.ParseTime = true
	cfg.MultiStatements = false
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	return cfg, nil
}

// mysqlSafeDSN is dsn without its password, in the driver's form.
func mysqlSafeDSN(dsn string) string {
	cfg, err := mysqlConfig(dsn)
	if err != nil {
		return Unparseable
	}
	scheme, _ := mysqlScheme(dsn)
	cfg.Passwd = ""
	return scheme + cfg.FormatDSN()
}

// mysqlRedact replaces the password (as written and as decoded) in s.
func mysqlRedact(s, dsn string) string {
	cfg, err := mysqlConfig(dsn)
	if err != nil || cfg.Passwd == "" {
		return s
	}
	for _, secret := range []string{cfg.Passwd, url.QueryEscape(cfg.Passwd), url.PathEscape(cfg.Passwd)} {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "***")
		}
	}
	return s
}

// mysqlClientArgs is how a MySQL client program (mariadb-dump, mariadb)
// reaches dsn's database: connection options for its command line and
// the password in an option file readable by this user only (remove it
// with cleanup), never in argv, where any user's ps would show it.
func mysqlClientArgs(dsn, db string) (args []string, cleanup func(), err error) {
	cfg, err := mysqlConfig(dsn)
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() {}
	f, err := os.CreateTemp("", "rollback-my-*.cnf")
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() { _ = os.Remove(f.Name()) }
	quote := func(s string) string {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
	}
	body := "[client]\nuser=" + quote(cfg.User) + "\n"
	if cfg.Passwd != "" {
		body += "password=" + quote(cfg.Passwd) + "\n"
	}
	if cfg.Net == "unix" {
		body += "socket=" + quote(cfg.Addr) + "\n"
	} else {
		host, port, _ := net.SplitHostPort(cfg.Addr)
		body += "host=" + quote(host) + "\nport=" + port + "\nprotocol=TCP\n"
	}
	if err := f.Chmod(0o600); err == nil {
		_, err = f.WriteString(body)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if db == "" {
		db = cfg.DBName
	}
	// --defaults-file: this file only, so a [client] section of the
	// user's ~/.my.cnf cannot point the client elsewhere.
	return []string{"--defaults-file=" + f.Name(), db}, cleanup, nil
}
