package migrate

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

var dmlTableRe = regexp.MustCompile(`(?is)^(?:insert\s+(?:ignore\s+)?into|replace\s+(?:into\s+)?|update\s+(?:ignore\s+)?|delete\s+(?:ignore\s+)?from)\s*` + myQualified)

// myTouchedTables lists the tables the plan's down scripts name; opaque
// names the first statement whose reach cannot be read ("" when none).
func (p *Plan) myTouchedTables() (tables []string, opaque string) {
	seen := map[string]bool{}
	for _, s := range p.Steps {
		for _, st := range myStatements(s.Script) {
			switch st.kind {
			case KindSession:
				continue
			case KindDML:
				m := dmlTableRe.FindStringSubmatch(stripMySQLComments(st.SQL))
				if m == nil {
					return nil, st.where(s)
				}
				seen[lastPart(m[1])] = true
			default:
				checks, ok := effectChecks(st.SQL)
				if !ok {
					return nil, st.where(s)
				}
				for _, c := range checks {
					seen[c.table] = true
				}
			}
		}
	}
	for t := range seen {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	return tables, ""
}

// mysqlDump finds mariadb-dump or mysqldump.
func mysqlDump() string {
	for _, p := range []string{"mariadb-dump", "mysqldump"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

// snapshot dumps the tables the undo touches (or the whole database) into
// dir before the undo: with mariadb-dump or mysqldump in one consistent
// read (--single-transaction), else through the driver, the same way; a
// NAME.sha256 beside it, and the exact restore command.
func (m *MySQL) snapshot(ctx context.Context, dsn string, p *Plan, mode SnapshotMode, dir string, now time.Time) (*Snapshot, error) {
	if mode == SnapshotNone {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	name := fmt.Sprintf("before-undo-%s-to-%s-%s.sql", p.From, p.To, now.UTC().Format("20060102T150405Z"))
	s := &Snapshot{Path: filepath.Join(dir, name)}
	var tables []string
	if mode == SnapshotTables {
		named, opaque := p.myTouchedTables()
		switch {
		case opaque != "":
			s.Note = "full dump: cannot tell which tables " + opaque + " touches"
		case len(named) == 0:
			s.Note = "full dump: the undo scripts name no tables"
		}
		for _, t := range named {
			if ok, err := m.tableExists(ctx, t); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
			} else if ok {
				tables = append(tables, t)
			}
		}
		if s.Note == "" && len(tables) == 0 {
			s.Note = "full dump: none of the tables the undo names exists"
		}
		if s.Note != "" {
			tables = nil
		}
	}
	if tables == nil {
		all, err := m.userTables(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
		}
		tables = all
	}
	s.Tables = tables
	f, err := os.OpenFile(s.Path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	f.Close()
	restoreWith := "mariadb"
	if dump := mysqlDump(); dump != "" {
		if strings.HasSuffix(dump, "mysqldump") {
			restoreWith = "mysql"
		}
		args, cleanup, err := mysqlClientArgs(dsn, "")
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
		}
		defer cleanup()
		argv := append([]string{args[0], "--single-transaction", "--skip-lock-tables", "--hex-blob", "--no-tablespaces",
			"--skip-triggers", "--result-file=" + s.Path}, args[1:]...)
		argv = append(argv, tables...)
		out, err := exec.CommandContext(ctx, dump, argv...).CombinedOutput()
		if err != nil {
			_ = os.Remove(s.Path)
			return nil, fmt.Errorf("%w: %s: %v: %s", ErrSnapshot, filepath.Base(dump), err, Redact(string(out), dsn))
		}
	} else {
		if err := m.nativeDump(ctx, tables, s.Path); err != nil {
			_ = os.Remove(s.Path)
			return nil, fmt.Errorf("%w: without mariadb-dump: %v", ErrSnapshot, err)
		}
		s.Note = strings.TrimPrefix(s.Note+"; written through the driver (mariadb-dump not installed), in one consistent read", "; ")
	}
	cfg, _ := mysqlConfig(dsn)
	host := ""
	if cfg.Net == "unix" {
		host = "--socket=" + cfg.Addr
	} else {
		h, port, _ := strings.Cut(cfg.Addr, ":")
		host = fmt.Sprintf("-h %s -P %s", h, port)
	}
	s.Restore = fmt.Sprintf("sha256sum -c %s.sha256 && %s %s -u %s -p %s < %s", s.Path, restoreWith, host, cfg.User, cfg.DBName, s.Path)
	return finishSnapshot(s, name)
}

// userTables lists the database's base tables but rollback's own.
func (m *MySQL) userTables(ctx context.Context) ([]string, error) {
	var out []string
	err := m.lines(ctx, `SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()
		AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME NOT IN ('rollback_releases', 'rollback_undo_journal') ORDER BY TABLE_NAME`, &out)
	return out, err
}

// nativeDump writes tables' definitions and rows as SQL, read in one
// consistent snapshot on a connection of its own.
func (m *MySQL) nativeDump(ctx context.Context, tables []string, path string) error {
	// Values as the server writes them (ParseTime off: a DATETIME stays
	// '2024-01-02 03:04:05', not Go's time format), in UTC.
	cfg := *m.cfg
	cfg.ParseTime = false
	connector, err := mysql.NewConnector(&cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, q := range []string{"SET SESSION time_zone = '+00:00'", "SET NAMES utf8mb4", "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	if _, err := c.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		return err
	}
	defer func() { _, _ = c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") }()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "-- rollback snapshot of %d table(s)\nSET NAMES utf8mb4;\nSET time_zone = '+00:00';\nSET FOREIGN_KEY_CHECKS=0;\n", len(tables))
	for _, t := range tables {
		var name, ddl string
		if err := c.QueryRowContext(ctx, "SHOW CREATE TABLE "+quoteIdent(t)).Scan(&name, &ddl); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nDROP TABLE IF EXISTS %s;\n%s;\n", quoteIdent(t), ddl)
		if err := dumpRows(ctx, c, t, w); err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
	}
	fmt.Fprintf(w, "SET FOREIGN_KEY_CHECKS=1;\n")
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Sync()
}

func dumpRows(ctx context.Context, c *sql.Conn, table string, w *bufio.Writer) error {
	// Generated columns cannot be inserted: the stored ones are computed
	// again on restore.
	var cols []string
	crows, err := c.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?
		AND EXTRA NOT LIKE '%GENERATED%' AND EXTRA NOT IN ('VIRTUAL', 'PERSISTENT', 'STORED') ORDER BY ORDINAL_POSITION`, table)
	if err != nil {
		return err
	}
	for crows.Next() {
		var n string
		if err := crows.Scan(&n); err != nil {
			crows.Close()
			return err
		}
		cols = append(cols, quoteIdent(n))
	}
	crows.Close()
	if len(cols) == 0 {
		return fmt.Errorf("no columns to copy")
	}
	list := strings.Join(cols, ", ")
	rows, err := c.QueryContext(ctx, "SELECT "+list+" FROM "+quoteIdent(table))
	if err != nil {
		return err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return err
	}
	vals := make([]sql.RawBytes, len(types))
	ptrs := make([]any, len(types))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		fmt.Fprintf(w, "INSERT INTO %s (%s) VALUES (", quoteIdent(table), list)
		for i, v := range vals {
			if i > 0 {
				w.WriteString(", ")
			}
			switch t := strings.ToUpper(types[i].DatabaseTypeName()); {
			case v == nil:
				w.WriteString("NULL")
			case strings.Contains(t, "BLOB") || strings.Contains(t, "BINARY") || t == "BIT" || t == "GEOMETRY":
				w.WriteString("X'" + hex.EncodeToString(v) + "'")
			default:
				w.WriteString(quoteMySQLString(string(v)))
			}
		}
		w.WriteString(");\n")
	}
	return rows.Err()
}

// quoteMySQLString quotes s as a string literal under any sql_mode (with
// or without NO_BACKSLASH_ESCAPES): a hex literal cast to the connection's
// character set whenever s holds a quote, backslash or control byte.
func quoteMySQLString(s string) string {
	if !strings.ContainsAny(s, "'\\\x00\n\r\x1a\"") {
		return "'" + s + "'"
	}
	return "CONVERT(X'" + hex.EncodeToString([]byte(s)) + "' USING utf8mb4)"
}
