package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"
)

// PostgresMaxConns is the most connections a PostgreSQL store opens.
const PostgresMaxConns = 64

// sqlStore implements Store for SQLite and PostgreSQL; the SQL is shared,
// only placeholders differ.
type sqlStore struct {
	db       *sql.DB
	postgres bool
}

var _ Store = (*sqlStore)(nil)

// Open opens the store at location: a postgres:// or postgresql:// URL,
// or a path of an SQLite file (created, with its directory, when missing).
func Open(ctx context.Context, location string) (Store, error) {
	s := &sqlStore{}
	var err error
	if strings.HasPrefix(location, "postgres://") || strings.HasPrefix(location, "postgresql://") {
		s.postgres = true
		s.db, err = sql.Open("pgx", location)
		if err == nil {
			// Bounded: each run holds one connection for its advisory
			// lock (so serve caps its runs below this), the rest serve
			// requests; idle ones are closed, old ones recycled (a
			// failover's new primary is picked up).
			s.db.SetMaxOpenConns(PostgresMaxConns)
			s.db.SetMaxIdleConns(8)
			s.db.SetConnMaxIdleTime(5 * time.Minute)
			s.db.SetConnMaxLifetime(30 * time.Minute)
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(location), 0o700); err != nil {
			return nil, err
		}
		// Incidents, journals and blocks are for the owner only; SQLite
		// gives its -wal and -shm files the database file's mode.
		f, err := os.OpenFile(location, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		f.Close()
		s.db, err = sql.Open("sqlite", "file:"+location+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
		if err == nil {
			s.db.SetMaxOpenConns(1) // one writer; WAL keeps readers cheap
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// Two processes opening a new SQLite store at once can see SQLITE_BUSY
	// outside the busy handler's reach (a lock upgrade); try again.
	for try := 0; ; try++ {
		err = s.migrate(ctx)
		if err == nil || try >= 50 || !isBusy(err) {
			break
		}
		time.Sleep(time.Duration(20+try*10) * time.Millisecond)
	}
	if err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

func isBusy(err error) bool {
	return strings.Contains(err.Error(), "SQLITE_BUSY") || strings.Contains(err.Error(), "database is locked")
}

// schema is applied in order; store_schema records how far a store is.
var schema = []string{
	// 1: incidents, journal, leases, blocks
	`CREATE TABLE incidents (
		id TEXT PRIMARY KEY, service TEXT NOT NULL, severity TEXT NOT NULL DEFAULT '',
		bad_version TEXT NOT NULL DEFAULT '', good_version TEXT NOT NULL DEFAULT '',
		decision TEXT NOT NULL DEFAULT '', rationale TEXT NOT NULL DEFAULT '',
		status TEXT NOT NULL, opened_at TEXT NOT NULL, closed_at TEXT);
	CREATE INDEX incidents_service ON incidents (service, opened_at);
	CREATE TABLE events (
		incident TEXT NOT NULL REFERENCES incidents(id), seq INTEGER NOT NULL,
		at TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL, key TEXT,
		message TEXT NOT NULL DEFAULT '', evidence TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (incident, seq), UNIQUE (incident, key));
	CREATE TABLE leases (service TEXT PRIMARY KEY, holder TEXT NOT NULL, since TEXT NOT NULL, expires TEXT NOT NULL);
	CREATE TABLE blocks (service TEXT NOT NULL, version TEXT NOT NULL, incident TEXT NOT NULL DEFAULT '',
		reason TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (service, version))`,
	// 2: runbook sign-offs
	`CREATE TABLE approvals (service TEXT NOT NULL, release TEXT NOT NULL, approved_by TEXT NOT NULL,
		note TEXT NOT NULL DEFAULT '', at TEXT NOT NULL, PRIMARY KEY (service, release))`,
	// 3: the rollback testing schedule's drills
	`CREATE TABLE drills (service TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL DEFAULT '',
		ok INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '', at TEXT NOT NULL);
	CREATE INDEX drills_service ON drills (service, kind, at)`,
	// 4: listing by status and pages over all incidents stay indexed
	`CREATE INDEX incidents_status ON incidents (status, opened_at);
	CREATE INDEX incidents_opened ON incidents (opened_at, id)`,
}

func (s *sqlStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store schema: %w", err)
	}
	defer tx.Rollback()
	if s.postgres {
		// Serialize concurrent upgrades of one PostgreSQL store.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7316240153)`); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS store_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("store schema: %w", err)
	}
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM store_schema`).Scan(&v); err != nil {
		return fmt.Errorf("store schema: %w", err)
	}
	if v > len(schema) {
		return fmt.Errorf("the store is at schema version %d, newer than this rollback understands (%d): upgrade rollback", v, len(schema))
	}
	for i := v; i < len(schema); i++ {
		for _, stmt := range strings.Split(schema[i], ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("store schema %d: %w", i+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO store_schema (version) VALUES (?)`), i+1); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store schema: %w", err)
	}
	return nil
}

// q rewrites ? placeholders to PostgreSQL's $n.
func (s *sqlStore) q(query string) string {
	if !s.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func (s *sqlStore) Close() error { return s.db.Close() }

func (s *sqlStore) CreateIncident(ctx context.Context, inc *Incident) error {
	if inc.OpenedAt.IsZero() {
		inc.OpenedAt = time.Now()
	}
	if inc.Status == "" {
		inc.Status = StatusOpen
	}
	auto := inc.ID == ""
	for try := 0; try < 50; try++ {
		if auto {
			prefix := "INC-" + inc.OpenedAt.UTC().Format("20060102") + "-"
			var n int
			if err := s.db.QueryRowContext(ctx, s.q(`SELECT count(*) FROM incidents WHERE id LIKE ?`), prefix+"%").Scan(&n); err != nil {
				return err
			}
			inc.ID = prefix + strconv.Itoa(n+1+try)
		}
		_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO incidents (id, service, severity, bad_version, good_version, decision, rationale, status, opened_at, closed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), inc.ID, inc.Service, inc.Severity, inc.BadVersion, inc.GoodVersion,
			inc.Decision, inc.Rationale, inc.Status, ts(inc.OpenedAt), nullTS(inc.ClosedAt))
		if err == nil {
			return nil
		}
		if !auto || !isUnique(err) {
			return fmt.Errorf("create incident: %w", err)
		}
	}
	return fmt.Errorf("create incident: could not find a free id for %s", inc.OpenedAt.Format("2006-01-02"))
}

func nullTS(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ts(*t)
}

func isUnique(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

const incidentCols = `id, service, severity, bad_version, good_version, decision, rationale, status, opened_at, closed_at`

func scanIncident(row interface{ Scan(...any) error }) (*Incident, error) {
	var inc Incident
	var opened string
	var closed sql.NullString
	if err := row.Scan(&inc.ID, &inc.Service, &inc.Severity, &inc.BadVersion, &inc.GoodVersion, &inc.Decision,
		&inc.Rationale, &inc.Status, &opened, &closed); err != nil {
		return nil, err
	}
	inc.OpenedAt = parseTS(opened)
	if closed.Valid {
		t := parseTS(closed.String)
		inc.ClosedAt = &t
	}
	return &inc, nil
}

func (s *sqlStore) GetIncident(ctx context.Context, id string) (*Incident, error) {
	inc, err := scanIncident(s.db.QueryRowContext(ctx, s.q(`SELECT `+incidentCols+` FROM incidents WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotFound)
	}
	return inc, err
}

func (s *sqlStore) UpdateIncident(ctx context.Context, inc *Incident) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE incidents SET service = ?, severity = ?, bad_version = ?, good_version = ?,
		decision = ?, rationale = ?, status = ?, opened_at = ?, closed_at = ? WHERE id = ?`),
		inc.Service, inc.Severity, inc.BadVersion, inc.GoodVersion, inc.Decision, inc.Rationale, inc.Status,
		ts(inc.OpenedAt), nullTS(inc.ClosedAt), inc.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("incident %s: %w", inc.ID, ErrNotFound)
	}
	return nil
}

func (s *sqlStore) ListIncidents(ctx context.Context, service string) ([]Incident, error) {
	return s.QueryIncidents(ctx, IncidentQuery{Service: service})
}

func (s *sqlStore) QueryIncidents(ctx context.Context, q IncidentQuery) ([]Incident, error) {
	where := []string{"1 = 1"}
	var args []any
	if q.Service != "" {
		where = append(where, "service = ?")
		args = append(args, q.Service)
	}
	if len(q.Status) > 0 {
		marks := make([]string, len(q.Status))
		for i, st := range q.Status {
			marks[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "status IN ("+strings.Join(marks, ", ")+")")
	}
	if q.Before != "" {
		where = append(where, "(opened_at < (SELECT opened_at FROM incidents WHERE id = ?) OR opened_at = (SELECT opened_at FROM incidents WHERE id = ?) AND id < ?)")
		args = append(args, q.Before, q.Before, q.Before)
	}
	query := `SELECT ` + incidentCols + ` FROM incidents WHERE ` + strings.Join(where, " AND ") + ` ORDER BY opened_at DESC, id DESC`
	if q.Limit > 0 {
		query += " LIMIT " + strconv.Itoa(q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Incident
	for rows.Next() {
		inc, err := scanIncident(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *inc)
	}
	return out, rows.Err()
}

func (s *sqlStore) AppendEvent(ctx context.Context, ev Event) (bool, error) {
	for try := 0; try < 20; try++ {
		added, err := s.insertEvent(ctx, s.db, ev)
		if err != nil && isUnique(err) { // a concurrent append took this seq
			continue
		}
		return added, err
	}
	return false, fmt.Errorf("journal %s/%s: too much contention", ev.Incident, ev.Step)
}

// insertEvent journals ev with the next seq of its incident (added false:
// its Key is already there). A unique-violation error means a concurrent
// append took the seq: try again.
func (s *sqlStore) insertEvent(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, ev Event) (bool, error) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	var key any
	if ev.Key != "" {
		key = ev.Key
	}
	res, err := db.ExecContext(ctx, s.q(`INSERT INTO events (incident, seq, at, step, phase, key, message, evidence)
		SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ?, ? FROM events WHERE incident = ?
		ON CONFLICT (incident, key) DO NOTHING`),
		ev.Incident, ts(ev.Time), ev.Step, ev.Phase, key, ev.Message, ev.Evidence, ev.Incident)
	if err != nil {
		if isUnique(err) {
			return false, err
		}
		return false, fmt.Errorf("journal %s/%s: %w", ev.Incident, ev.Step, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (s *sqlStore) AppendEvents(ctx context.Context, evs []Event) error {
	for try := 0; try < 20; try++ {
		err := s.appendEvents(ctx, evs)
		if err != nil && isUnique(err) { // a concurrent append took a seq
			continue
		}
		return err
	}
	return fmt.Errorf("journal %d events: too much contention", len(evs))
}

func (s *sqlStore) appendEvents(ctx context.Context, evs []Event) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, ev := range evs {
		if _, err := s.insertEvent(ctx, tx, ev); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *sqlStore) Events(ctx context.Context, incident string) ([]Event, error) {
	m, err := s.EventsOf(ctx, []string{incident})
	return m[incident], err
}

func (s *sqlStore) EventsOf(ctx context.Context, incidents []string) (map[string][]Event, error) {
	out := map[string][]Event{}
	if len(incidents) == 0 {
		return out, nil
	}
	marks := make([]string, len(incidents))
	args := make([]any, len(incidents))
	for i, id := range incidents {
		marks[i], args[i] = "?", id
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT incident, seq, at, step, phase, coalesce(key, ''), message, evidence
		FROM events WHERE incident IN (`+strings.Join(marks, ", ")+`) ORDER BY incident, seq`), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var ev Event
		var at string
		if err := rows.Scan(&ev.Incident, &ev.Seq, &at, &ev.Step, &ev.Phase, &ev.Key, &ev.Message, &ev.Evidence); err != nil {
			return nil, err
		}
		ev.Time = parseTS(at)
		out[ev.Incident] = append(out[ev.Incident], ev)
	}
	return out, rows.Err()
}

// clock is the store's time: PostgreSQL's own clock for a shared store
// (replicas' clocks may disagree; the database's is the one they share),
// this machine's for an SQLite file.
func (s *sqlStore) clock(ctx context.Context) (time.Time, error) {
	if !s.postgres {
		return time.Now(), nil
	}
	var now time.Time
	if err := s.db.QueryRowContext(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
		return time.Time{}, err
	}
	return now, nil
}

// leaseTS formats a lease time with a fixed width, so that the text
// comparison of expiry times orders them as times (RFC 3339 with trimmed
// fractions does not: "…:00Z" sorts after "…:00.5Z").
func leaseTS(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") }

func (s *sqlStore) AcquireLease(ctx context.Context, service, holder string, ttl time.Duration) (*Lease, error) {
	now, err := s.clock(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease %s: store clock: %w", service, err)
	}
	l := &Lease{Service: service, Holder: holder, Since: now, Expires: now.Add(ttl)}
	// A lease released between the two statements below is gone when it
	// is read: try again.
	for try := 0; try < 5; try++ {
		// One statement: take a free or expired lease, or renew our own.
		var since string
		err = s.db.QueryRowContext(ctx, s.q(`INSERT INTO leases (service, holder, since, expires) VALUES (?, ?, ?, ?)
		ON CONFLICT (service) DO UPDATE SET holder = excluded.holder, expires = excluded.expires,
		  since = CASE WHEN leases.holder = excluded.holder THEN leases.since ELSE excluded.since END
		WHERE leases.holder = excluded.holder OR leases.expires < ?
		RETURNING since`), service, holder, leaseTS(l.Since), leaseTS(l.Expires), leaseTS(now)).Scan(&since)
		if err == nil {
			l.Since = parseTS(since)
			return l, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("lease %s: %w", service, err)
		}
		var cur Lease
		var s1, e1 string
		err = s.db.QueryRowContext(ctx, s.q(`SELECT service, holder, since, expires FROM leases WHERE service = ?`), service).
			Scan(&cur.Service, &cur.Holder, &s1, &e1)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lease %s: %w", service, err)
		}
		cur.Since, cur.Expires = parseTS(s1), parseTS(e1)
		return nil, &LeaseError{Lease: cur}
	}
	return nil, fmt.Errorf("lease %s: taken and released too often to read", service)
}

func (s *sqlStore) ReleaseLease(ctx context.Context, service, holder string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM leases WHERE service = ? AND holder = ?`), service, holder)
	return err
}

func (s *sqlStore) SetBlock(ctx context.Context, b Block) error {
	if b.At.IsZero() {
		b.At = time.Now()
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO blocks (service, version, incident, reason, at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (service, version) DO UPDATE SET incident = excluded.incident, reason = excluded.reason, at = excluded.at`),
		b.Service, b.Version, b.Incident, b.Reason, ts(b.At))
	return err
}

func (s *sqlStore) DeleteBlock(ctx context.Context, service, version string) error {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM blocks WHERE service = ? AND version = ?`), service, version)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s %s is not blocked: %w", service, version, ErrNotFound)
	}
	return nil
}

func (s *sqlStore) GetBlock(ctx context.Context, service, version string) (*Block, error) {
	var b Block
	var at string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT service, version, incident, reason, at FROM blocks WHERE service = ? AND version = ?`), service, version).
		Scan(&b.Service, &b.Version, &b.Incident, &b.Reason, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s %s is not blocked: %w", service, version, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	b.At = parseTS(at)
	return &b, nil
}

func (s *sqlStore) ListBlocks(ctx context.Context, service string) ([]Block, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT service, version, incident, reason, at FROM blocks WHERE ? = '' OR service = ? ORDER BY service, at`), service, service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Block
	for rows.Next() {
		var b Block
		var at string
		if err := rows.Scan(&b.Service, &b.Version, &b.Incident, &b.Reason, &at); err != nil {
			return nil, err
		}
		b.At = parseTS(at)
		out = append(out, b)
	}
	return out, rows.Err()
}

func (s *sqlStore) Approve(ctx context.Context, a Approval) error {
	if a.At.IsZero() {
		a.At = time.Now()
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO approvals (service, release, approved_by, note, at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (service, release) DO UPDATE SET approved_by = excluded.approved_by, note = excluded.note, at = excluded.at`),
		a.Service, a.Release, a.By, a.Note, ts(a.At))
	return err
}

func (s *sqlStore) GetApproval(ctx context.Context, service, release string) (*Approval, error) {
	var a Approval
	var at string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT service, release, approved_by, note, at FROM approvals WHERE service = ? AND release = ?`), service, release).
		Scan(&a.Service, &a.Release, &a.By, &a.Note, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("no runbook sign-off for %s %s: %w", service, release, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	a.At = parseTS(at)
	return &a, nil
}

func (s *sqlStore) RecordDrill(ctx context.Context, d Drill) error {
	if d.At.IsZero() {
		d.At = time.Now()
	}
	ok := 0
	if d.OK {
		ok = 1
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO drills (service, kind, subject, ok, detail, at) VALUES (?, ?, ?, ?, ?, ?)`),
		d.Service, d.Kind, d.Subject, ok, d.Detail, ts(d.At))
	return err
}

func (s *sqlStore) ListDrills(ctx context.Context, service string) ([]Drill, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT service, kind, subject, ok, detail, at FROM drills WHERE ? = '' OR service = ? ORDER BY at DESC`), service, service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Drill
	for rows.Next() {
		var d Drill
		var ok int
		var at string
		if err := rows.Scan(&d.Service, &d.Kind, &d.Subject, &ok, &d.Detail, &at); err != nil {
			return nil, err
		}
		d.OK, d.At = ok == 1, parseTS(at)
		out = append(out, d)
	}
	return out, rows.Err()
}
