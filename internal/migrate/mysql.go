package migrate

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQL is a MariaDB or MySQL database: one session (its named locks and
// session variables live there) and a second connection for watching it.
type MySQL struct {
	db     *sql.DB
	conn   *sql.Conn
	connID int64
	cfg    *mysql.Config
	// Version is the server's version string ("10.11.9-MariaDB…").
	Version string
	// MariaDB is true for MariaDB, false for Oracle's MySQL.
	MariaDB bool
}

// openMySQL connects to dsn's database.
func openMySQL(ctx context.Context, dsn string) (*MySQL, error) {
	cfg, err := mysqlConnConfig(dsn, "")
	if err != nil {
		return nil, fmt.Errorf("%w: the connection string cannot be parsed (expected mysql://user:pass@tcp(host:3306)/db, mysql://user:pass@host:3306/db or mariadb://…)", ErrBadOptions)
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("%w: connection string %s names no database: end it with /DATABASE (mysql://user@tcp(host:3306)/payments)", ErrBadOptions, SafeDSN(dsn))
	}
	return openMySQLConfig(ctx, cfg)
}

var quietDriver sync.Once

func openMySQLConfig(ctx context.Context, cfg *mysql.Config) (*MySQL, error) {
	// The driver logs lost connections to stderr itself; rollback reports
	// each error where it happens instead.
	quietDriver.Do(func() { _ = mysql.SetLogger(log.New(io.Discard, "", 0)) })
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	m := &MySQL{db: sql.OpenDB(connector), cfg: cfg}
	m.db.SetMaxOpenConns(4)
	if m.conn, err = m.db.Conn(ctx); err != nil {
		m.db.Close()
		return nil, err
	}
	if err := m.conn.QueryRowContext(ctx, `SELECT CONNECTION_ID(), VERSION()`).Scan(&m.connID, &m.Version); err != nil {
		m.close()
		return nil, err
	}
	m.MariaDB = strings.Contains(strings.ToLower(m.Version), "mariadb")
	return m, nil
}

func (m *MySQL) close() {
	if m.conn != nil {
		_ = m.conn.Close()
	}
	_ = m.db.Close()
}

// Engine names the server for messages ("MariaDB 10.11.9").
func (m *MySQL) Engine() string {
	v, _, _ := strings.Cut(m.Version, "-")
	if m.MariaDB {
		return "MariaDB " + v
	}
	return "MySQL " + v
}

// quoteIdent quotes a MySQL identifier.
func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func (m *MySQL) tableExists(ctx context.Context, table string) (bool, error) {
	var n int
	err := m.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, table).Scan(&n)
	return n > 0, err
}

// state reads the history table as ReadState does on PostgreSQL.
func (m *MySQL) state(ctx context.Context, format Format, table string) (*State, error) {
	table = historyTable(format, table)
	st := &State{Format: format, Table: table}
	ok, err := m.tableExists(ctx, table)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", table, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: table %s does not exist in %s; is this the right database (and --format)?", ErrNoHistory, table, m.cfg.DBName)
	}
	if format == GolangMigrate {
		var v int64
		err := m.conn.QueryRowContext(ctx, `SELECT version, dirty FROM `+quoteIdent(table)+` LIMIT 1`).Scan(&v, &st.Dirty)
		if errors.Is(err, sql.ErrNoRows) {
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		st.at(v)
		return st, nil
	}
	rows, err := m.conn.QueryContext(ctx, `SELECT installed_rank, version, description, type, script, checksum,
		installed_by, installed_on, execution_time, success FROM `+quoteIdent(table)+` ORDER BY installed_rank`)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	var all []Applied
	for rows.Next() {
		var a Applied
		var ver sql.NullString
		var sum sql.NullInt32
		if err := rows.Scan(&a.Rank, &ver, &a.Description, &a.Type, &a.Script, &sum,
			&a.InstalledBy, &a.InstalledOn, &a.ExecTimeMS, &a.Success); err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		if sum.Valid {
			a.Checksum = &sum.Int32
		}
		a.VersionText = ver.String
		all = append(all, a)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return st, replayFlyway(st, all)
}

func historyTable(format Format, table string) string {
	if table != "" {
		return table
	}
	if format == GolangMigrate {
		return GolangMigrateTable
	}
	return FlywayTable
}

// rollback's own tables in a MySQL database (a MySQL database has no
// schemas within it): left out of the fingerprint and the snapshot.
const (
	myReleases = "rollback_releases"
	myJournal  = "rollback_undo_journal"
)

// fingerprint reads the schema from information_schema: tables, columns
// (type, nullability, default, extra), indexes, constraints, one line
// each, sorted, as TakeFingerprint does on PostgreSQL.
func (m *MySQL) fingerprint(ctx context.Context) (*Fingerprint, error) {
	const skip = ` NOT IN ('flyway_schema_history', 'schema_migrations', 'rollback_releases', 'rollback_undo_journal')`
	queries := []string{
		`SELECT CONCAT(LOWER(TABLE_TYPE), ' ', TABLE_NAME) FROM information_schema.TABLES
		  WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME` + skip,
		`SELECT CONCAT('column ', TABLE_NAME, '.', COLUMN_NAME, ' ', COLUMN_TYPE,
		               IF(IS_NULLABLE = 'NO', ' not null', ''),
		               IF(COLUMN_DEFAULT IS NULL, '', CONCAT(' default ', COLUMN_DEFAULT)),
		               IF(EXTRA = '', '', CONCAT(' ', EXTRA)),
		               IF(COLLATION_NAME IS NULL, '', CONCAT(' collate ', COLLATION_NAME)))
		   FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME` + skip,
		`SELECT CONCAT('index ', TABLE_NAME, '.', INDEX_NAME, IF(NON_UNIQUE = 0, ' unique', ''), ' ', INDEX_TYPE, ' (',
		               GROUP_CONCAT(CONCAT(COLUMN_NAME, IFNULL(CONCAT('(', SUB_PART, ')'), '')) ORDER BY SEQ_IN_INDEX SEPARATOR ', '), ')')
		   FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME` + skip + `
		  GROUP BY TABLE_NAME, INDEX_NAME, NON_UNIQUE, INDEX_TYPE`,
		`SELECT CONCAT('constraint ', k.TABLE_NAME, '.', k.CONSTRAINT_NAME, ' foreign key (',
		               GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ', '), ') references ',
		               k.REFERENCED_TABLE_NAME, ' (', GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ', '),
		               ') on update ', r.UPDATE_RULE, ' on delete ', r.DELETE_RULE)
		   FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r
		     ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME
		  WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL AND k.TABLE_NAME` + skip + `
		  GROUP BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.REFERENCED_TABLE_NAME, r.UPDATE_RULE, r.DELETE_RULE`,
		// CHECK_CONSTRAINTS has no TABLE_NAME on MySQL 8 (MariaDB's has):
		// the table comes from TABLE_CONSTRAINTS on both.
		`SELECT CONCAT('check ', t.TABLE_NAME, '.', c.CONSTRAINT_NAME, ' ', c.CHECK_CLAUSE)
		   FROM information_schema.CHECK_CONSTRAINTS c JOIN information_schema.TABLE_CONSTRAINTS t
		     ON t.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA AND t.CONSTRAINT_NAME = c.CONSTRAINT_NAME AND t.CONSTRAINT_TYPE = 'CHECK'
		  WHERE c.CONSTRAINT_SCHEMA = DATABASE() AND t.TABLE_NAME` + skip,
	}
	fp := &Fingerprint{}
	for _, q := range queries {
		if err := m.lines(ctx, q, &fp.Lines); err != nil {
			return nil, fmt.Errorf("read schema: %w", err)
		}
	}
	sort.Strings(fp.Lines)
	h := sha256.Sum256([]byte(strings.Join(fp.Lines, "\n")))
	fp.Hash = hex.EncodeToString(h[:])
	return fp, nil
}

func (m *MySQL) lines(ctx context.Context, q string, out *[]string, args ...any) error {
	rows, err := m.conn.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			return err
		}
		if s.Valid {
			*out = append(*out, s.String)
		}
	}
	return rows.Err()
}

const myReleasesDDL = `CREATE TABLE IF NOT EXISTS rollback_releases (
	release_name VARCHAR(255) NOT NULL PRIMARY KEY,
	format       VARCHAR(32) NOT NULL,
	version      VARCHAR(100) NOT NULL,
	fingerprint  LONGTEXT NOT NULL,
	recorded_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`

// record stores the current version and fingerprint for a release.
func (m *MySQL) record(ctx context.Context, release string, st *State) (*Release, error) {
	fp, err := m.fingerprint(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := m.conn.ExecContext(ctx, myReleasesDDL); err != nil {
		return nil, fmt.Errorf("create %s: %w", myReleases, err)
	}
	b, err := json.Marshal(fp)
	if err != nil {
		return nil, err
	}
	r := &Release{Name: release, Format: st.Format, Version: st.Current.String(), Fingerprint: fp}
	if _, err := m.conn.ExecContext(ctx, `INSERT INTO rollback_releases (release_name, format, version, fingerprint) VALUES (?, ?, ?, ?)
		ON DUPLICATE KEY UPDATE format = VALUES(format), version = VALUES(version), fingerprint = VALUES(fingerprint), recorded_at = CURRENT_TIMESTAMP(6)`,
		release, string(st.Format), r.Version, string(b)); err != nil {
		return nil, fmt.Errorf("record release %s: %w", release, err)
	}
	err = m.conn.QueryRowContext(ctx, `SELECT recorded_at FROM rollback_releases WHERE release_name = ?`, release).Scan(&r.RecordedAt)
	return r, err
}

// loadRelease reads the record of a release.
func (m *MySQL) loadRelease(ctx context.Context, release string) (*Release, error) {
	ok, err := m.tableExists(ctx, myReleases)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w %s: nothing was recorded in this database; run 'rollback db record --release %s' before migrating, or pass --to-version", ErrNoRecord, release, release)
	}
	r := &Release{Name: release}
	var format, fp string
	err = m.conn.QueryRowContext(ctx, `SELECT format, version, fingerprint, recorded_at FROM rollback_releases WHERE release_name = ?`, release).
		Scan(&format, &r.Version, &fp, &r.RecordedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w %s; record it with 'rollback db record --release %s' before migrating, or pass --to-version", ErrNoRecord, release, release)
	}
	if err != nil {
		return nil, err
	}
	r.Format = Format(format)
	r.Fingerprint = &Fingerprint{}
	return r, json.Unmarshal([]byte(fp), r.Fingerprint)
}

// verify is Verify on MySQL.
func (m *MySQL) verify(ctx context.Context, format Format, table string, want Version, rel *Release) (*Verification, error) {
	st, err := m.state(ctx, format, table)
	if err != nil {
		return nil, err
	}
	v := &Verification{WantVersion: want.String(), GotVersion: st.Current.String()}
	v.OK = st.Current.Compare(want) == 0 && !st.Dirty
	if rel != nil {
		fp, err := m.fingerprint(ctx)
		if err != nil {
			return nil, err
		}
		v.Fingerprint = true
		if v.SchemaDiff = fp.Diff(rel.Fingerprint); len(v.SchemaDiff) > 0 {
			v.OK = false
		}
	}
	return v, nil
}

// MySQLLockName is the named lock (GET_LOCK) the migration tool takes
// while it migrates a MySQL-family database: golang-migrate's is the
// decimal CRC32 of "database:table" times its salt (database.
// GenerateAdvisoryLockId); Flyway's is "Flyway-" and the Java hashCode of
// the quoted history table, `database`.`table` (MySQLNamedLockTemplate).
func MySQLLockName(format Format, database, table string) string {
	table = historyTable(format, table)
	if format == Flyway {
		return fmt.Sprintf("Flyway-%d", javaHash(quoteIdent(database)+"."+quoteIdent(table)))
	}
	sum := crc32.ChecksumIEEE([]byte(database + ":" + table))
	return fmt.Sprint(sum * 1486364155)
}

// lock takes the migration tool's named lock, trying for the undo's
// retry budget; it is held by this session until unlock.
func (m *MySQL) lock(ctx context.Context, format Format, table string, o UndoOptions) (func(), error) {
	name := MySQLLockName(format, m.cfg.DBName, table)
	logf := logger(o)
	for try := 0; ; try++ {
		var got sql.NullInt64
		if err := m.conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, name).Scan(&got); err != nil {
			return nil, err
		}
		if got.Valid && got.Int64 == 1 {
			break
		}
		if try >= o.Retries {
			var holder sql.NullInt64
			_ = m.conn.QueryRowContext(ctx, `SELECT IS_USED_LOCK(?)`, name).Scan(&holder)
			return nil, fmt.Errorf("%w: %s's named lock %q is held by connection %d; wait for the migration to finish (SHOW PROCESSLIST)", ErrMigrationLocked, format, name, holder.Int64)
		}
		wait := backoff(o.Backoff, try)
		logf("named lock %q is held; retry %d/%d in %s", name, try+1, o.Retries, wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = m.conn.ExecContext(ctx, `DO RELEASE_LOCK(?)`, name)
	}, nil
}

func logger(o UndoOptions) func(string, ...any) {
	return func(format string, a ...any) {
		if o.Log != nil {
			o.Log(fmt.Sprintf(format, a...))
		}
	}
}
