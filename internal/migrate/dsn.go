package migrate

import (
	"errors"
	"net/url"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Connection strings are read as pgx reads them (pgconn.ParseConfig: URL
// or keyword/value form, query parameters such as dbname= overriding the
// path), so what rollback shows, clones and hands to pg_dump is the
// database pgx would connect to, and no secret survives into output or a
// child's command line.

// Unparseable is what a connection string pgx cannot read prints as.
const Unparseable = "(unparseable DSN)"

// secretKeys are the connection parameters that carry secrets.
var secretKeys = map[string]bool{"password": true, "sslpassword": true}

// connString is a connection string taken apart, to be edited and put
// back together in the same form.
type connString struct {
	url *url.URL // postgres:// form
	kv  []kvPair // keyword=value form
}

type kvPair struct{ key, val string }

var errUnparseable = errors.New("connection string cannot be parsed")

func parseConnString(dsn string) (*connString, error) {
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return nil, errUnparseable
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, errUnparseable
		}
		return &connString{url: u}, nil
	}
	kv, err := parseKV(dsn)
	if err != nil {
		return nil, errUnparseable
	}
	return &connString{kv: kv}, nil
}

// withoutSecrets drops passwords from the user info and every parameter.
func (c *connString) withoutSecrets() *connString {
	if c.url != nil {
		u := *c.url
		if u.User != nil {
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		for k := range secretKeys {
			q.Del(k)
		}
		u.RawQuery = q.Encode()
		return &connString{url: &u}
	}
	var kv []kvPair
	for _, p := range c.kv {
		if !secretKeys[p.key] {
			kv = append(kv, p)
		}
	}
	return &connString{kv: kv}
}

// withDatabase names another database, wherever the original named one.
func (c *connString) withDatabase(db string) *connString {
	if c.url != nil {
		u := *c.url
		u.Path, u.RawPath = "/"+db, ""
		q := u.Query()
		q.Del("dbname")
		u.RawQuery = q.Encode()
		return &connString{url: &u}
	}
	kv := []kvPair{}
	for _, p := range c.kv {
		if p.key != "dbname" {
			kv = append(kv, p)
		}
	}
	return &connString{kv: append(kv, kvPair{"dbname", db})}
}

func (c *connString) String() string {
	if c.url != nil {
		return c.url.String()
	}
	parts := make([]string, len(c.kv))
	for i, p := range c.kv {
		parts[i] = p.key + "=" + quoteKV(p.val)
	}
	return strings.Join(parts, " ")
}

// SafeDSN is the connection string without its secrets, for display: the
// password in the user info, password= and sslpassword= parameters in
// either form. A string pgx cannot parse prints as Unparseable.
func SafeDSN(dsn string) string {
	if IsMySQL(dsn) {
		return mysqlSafeDSN(dsn)
	}
	c, err := parseConnString(dsn)
	if err != nil {
		return Unparseable
	}
	return c.withoutSecrets().String()
}

// DatabaseName is the database pgx connects to for dsn ("" when none).
func DatabaseName(dsn string) string {
	if IsMySQL(dsn) {
		if cfg, err := mysqlConfig(dsn); err == nil {
			return cfg.DBName
		}
		return ""
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	return cfg.Database
}

// connConfig is dsn's pgx configuration, pointed at database db when db
// is not empty.
func connConfig(dsn, db string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errUnparseable
	}
	if db != "" {
		cfg.Database = db
	}
	return cfg, nil
}

// childConn is how a PostgreSQL client program (pg_dump, pg_restore) is
// given dsn pointed at db (db "" keeps dsn's): the connection string
// without secrets for its command line, and the password in its
// environment, which only the same user can read.
func childConn(dsn, db string) (arg string, env []string, err error) {
	c, err := parseConnString(dsn)
	if err != nil {
		return "", nil, err
	}
	if db != "" {
		c = c.withDatabase(db)
	}
	env = os.Environ()
	if cfg, err := pgconn.ParseConfig(dsn); err == nil && cfg.Password != "" {
		env = append(env, "PGPASSWORD="+cfg.Password)
	}
	return c.withoutSecrets().String(), env, nil
}

// Redact replaces dsn's secrets (and the DSN itself) in s, such as a
// client program's error output.
func Redact(s, dsn string) string {
	if dsn != "" {
		s = strings.ReplaceAll(s, dsn, SafeDSN(dsn))
	}
	if IsMySQL(dsn) {
		return mysqlRedact(s, dsn)
	}
	if cfg, err := pgconn.ParseConfig(dsn); err == nil {
		for _, secret := range []string{cfg.Password, sslPassword(dsn)} {
			if secret != "" {
				s = strings.ReplaceAll(s, secret, "***")
			}
		}
	}
	return s
}

func sslPassword(dsn string) string {
	c, err := parseConnString(dsn)
	if err != nil {
		return ""
	}
	if c.url != nil {
		return c.url.Query().Get("sslpassword")
	}
	for _, p := range c.kv {
		if p.key == "sslpassword" {
			return p.val
		}
	}
	return ""
}

// parseKV reads libpq's keyword = value form: values bare or in single
// quotes, a backslash escaping the next character.
func parseKV(s string) ([]kvPair, error) {
	var out []kvPair
	const space = " \t\n\r\v\f"
	s = strings.TrimLeft(s, space)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errUnparseable
		}
		key := strings.TrimRight(s[:eq], space)
		if key == "" || strings.ContainsAny(key, space) {
			return nil, errUnparseable
		}
		s = strings.TrimLeft(s[eq+1:], space)
		var val strings.Builder
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		i := 0
		closed := false
		for ; i < len(s); i++ {
			ch := s[i]
			if ch == '\\' && i+1 < len(s) {
				i++
				val.WriteByte(s[i])
				continue
			}
			if quoted && ch == '\'' {
				closed = true
				i++
				break
			}
			if !quoted && strings.IndexByte(space, ch) >= 0 {
				break
			}
			val.WriteByte(ch)
		}
		if quoted && !closed {
			return nil, errUnparseable
		}
		out = append(out, kvPair{key, val.String()})
		s = strings.TrimLeft(s[i:], space)
	}
	return out, nil
}

func quoteKV(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\v\f'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
