package migrate

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	pgq "github.com/pganalyze/pg_query_go/v6"
	pg_query "github.com/wasilibs/go-pgquery"
)

// What 'rollback db record' captures, and where the undo finds it.

// ErrNoKey is a table whose destroyed data cannot be given back by key.
var ErrNoKey = errors.New("no key to merge by")

// tableInfo is what the capture needs of a table: its key columns (the
// primary key, else a unique index on NOT NULL columns) and its stored
// columns with their types.
type tableInfo struct {
	ident string   // quoted, schema-qualified
	keys  []string // column names
	cols  []string // insertable columns (no generated ones)
	types map[string]string
}

func readTable(ctx context.Context, db DB, table string) (*tableInfo, bool, error) {
	var oid uint32
	var ident string
	err := db.QueryRow(ctx, `SELECT c.oid, format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, table).Scan(&oid, &ident)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("table %s: %w", table, err)
	}
	ti := &tableInfo{ident: ident, types: map[string]string{}}
	rows, err := db.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod), attgenerated <> '' FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, false, err
	}
	for rows.Next() {
		var name, typ string
		var generated bool
		if err := rows.Scan(&name, &typ, &generated); err != nil {
			return nil, false, err
		}
		ti.types[name] = typ
		if !generated {
			ti.cols = append(ti.cols, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	// The primary key first, then the unique indexes whose columns are
	// all NOT NULL, the narrowest first.
	err = db.QueryRow(ctx, `SELECT array_agg(a.attname ORDER BY k.ord) FROM (
		  SELECT i.indexrelid, i.indisprimary, i.indnkeyatts FROM pg_index i
		  WHERE i.indrelid = $1 AND (i.indisprimary OR (i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
		    AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) c JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = c WHERE NOT a.attnotnull)))
		  ORDER BY i.indisprimary DESC, i.indnkeyatts, i.indexrelid LIMIT 1) best
		JOIN pg_index i ON i.indexrelid = best.indexrelid
		CROSS JOIN LATERAL unnest(i.indkey[0:best.indnkeyatts-1]) WITH ORDINALITY k(att, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att`, oid).Scan(&ti.keys)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, false, err
	}
	return ti, true, nil
}

// captureQuery is the SELECT that reads what d destroys, keyed: k1..kn,
// then pre (the value destroyed) and post (the value the statement
// leaves) for a column, or the whole row for a row kind.
func (d *Destruction) captureQuery(ti *tableInfo) (string, error) {
	ref := d.rel.GetRelname()
	if a := d.rel.GetAlias(); a != nil {
		ref = a.GetAliasname()
	}
	colRef := func(name string) *pgq.Node {
		return pgq.MakeColumnRefNode([]*pgq.Node{pgq.MakeStrNode(ref), pgq.MakeStrNode(name)}, -1)
	}
	sel := &pgq.SelectStmt{FromClause: append([]*pgq.Node{{Node: &pgq.Node_RangeVar{RangeVar: d.rel}}}, d.from...), WhereClause: d.where}
	for i, k := range ti.keys {
		sel.TargetList = append(sel.TargetList, pgq.MakeResTargetNodeWithNameAndVal(fmt.Sprintf("k%d", i+1), colRef(k), -1))
		// A join (UPDATE ... FROM, DELETE ... USING) may meet a row
		// twice: each key once.
		sel.DistinctClause = append(sel.DistinctClause, colRef(k))
	}
	switch d.Kind {
	case DestroyColumn, DestroyType, DestroyUpdate:
		sel.TargetList = append(sel.TargetList, pgq.MakeResTargetNodeWithNameAndVal("pre", colRef(d.Column), -1))
		if d.post != nil && d.Scoped {
			sel.TargetList = append(sel.TargetList, pgq.MakeResTargetNodeWithNameAndVal("post", d.post, -1))
		}
	default:
		for i, c := range ti.cols {
			sel.TargetList = append(sel.TargetList, pgq.MakeResTargetNodeWithNameAndVal(fmt.Sprintf("c%d", i+1), colRef(c), -1))
		}
	}
	if !d.Scoped {
		// Unscoped (its WHERE may name a WITH query): every row, for a
		// person to restore.
		sel.WhereClause, sel.FromClause = nil, sel.FromClause[:1]
	}
	return pg_query.Deparse(&pgq.ParseResult{Stmts: []*pgq.RawStmt{{Stmt: &pgq.Node{Node: &pgq.Node_SelectStmt{SelectStmt: sel}}}}})
}

// Captured is one statement's destroyed data, kept for the undo.
type Captured struct {
	Destruction
	Version  string `json:"version"`
	Seq      int    `json:"seq"`
	Store    string `json:"store"` // rollback_capture.TABLE
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum"`
	Note     string `json:"note,omitempty"`

	ident   string   // the captured table, quoted
	keys    []string // its key columns
	cols    []string // its row's columns (row kinds)
	colType string   // the column's type before the release (column kinds)
}

const captureDDL = `CREATE SCHEMA IF NOT EXISTS rollback;
CREATE SCHEMA IF NOT EXISTS rollback_capture;
CREATE TABLE IF NOT EXISTS rollback.captures (
	version   text NOT NULL,
	seq       int NOT NULL,
	release   text NOT NULL,
	kind      text NOT NULL,
	tbl       text NOT NULL,
	col       text NOT NULL DEFAULT '',
	col_type  text NOT NULL DEFAULT '',
	keys      text[] NOT NULL,
	cols      text[] NOT NULL,
	scoped    boolean NOT NULL,
	reason    text NOT NULL DEFAULT '',
	store     text NOT NULL,
	rows      bigint NOT NULL,
	checksum  text NOT NULL,
	file      text NOT NULL,
	line      int NOT NULL,
	captured_at timestamptz NOT NULL DEFAULT now(),
	merged_at timestamptz,
	PRIMARY KEY (version, seq)
);
ALTER TABLE rollback.captures ADD COLUMN IF NOT EXISTS undone_at timestamptz,
	ADD COLUMN IF NOT EXISTS merged_rn bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS restored bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS conflicts bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS not_resurrected bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS kept bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS conflict_keys text[] NOT NULL DEFAULT '{}'`

// checksumSQL is a capture's row count and checksum (md5 over its rows
// in key order).
const checksumSQL = `SELECT count(*), coalesce(md5(string_agg(md5(c::text), '' ORDER BY c.rn)), '') FROM %s c`

// Capture analyses the up scripts that have not run yet (newer than the
// history's version) and captures, keyed, what each of their statements
// will destroy, replacing earlier captures of those versions. It runs
// as one transaction of reads and CREATE TABLE AS (no lock that stalls
// writers): a refusal or failure leaves nothing. A table the release
// destroys data of without a primary key or a unique key on NOT NULL
// columns is refused (ErrNoKey), before the release.
func Capture(ctx context.Context, conn *pgx.Conn, release string, src *Source, st *State) ([]Captured, error) {
	if src == nil {
		return nil, errors.New("capture: the migration scripts are needed (--dir)")
	}
	if pending, err := pendingMerges(ctx, conn); err != nil {
		return nil, err
	} else if len(pending) > 0 {
		return nil, fmt.Errorf("the merge of what version %s destroyed is not finished: run 'rollback db undo' (or resume the incident) before recording a release", pending[0].Version)
	}
	// One consistent view of every table captured; never queued behind a
	// lock for long (the reads take none that stall writers).
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, captureDDL); err != nil {
		return nil, fmt.Errorf("create rollback.captures: %w", err)
	}
	var out []Captured
	var refused []string
	for _, m := range src.Migrations {
		if m.Version.Compare(st.Current) <= 0 || m.Up == nil {
			continue
		}
		v := m.Version.String()
		if err := dropCaptures(ctx, tx, v); err != nil {
			return nil, err
		}
		ds, err := upDestructions(m.Up)
		if err != nil {
			return nil, err
		}
		for i, d := range ds {
			c := Captured{Destruction: d, Version: v, Seq: i + 1}
			ti, exists, err := readTable(ctx, tx, d.regclass())
			if err != nil {
				return nil, err
			}
			if !exists {
				c.Note = "the table does not exist before the release: nothing to capture"
				out = append(out, c)
				continue
			}
			if d.Column != "" && ti.types[d.Column] == "" {
				c.Note = "the column does not exist before the release: nothing to capture"
				out = append(out, c)
				continue
			}
			if len(ti.keys) == 0 {
				refused = append(refused, noKey(d, ti.ident))
				continue
			}
			if d.Column != "" && slices.Contains(ti.keys, d.Column) && d.Scoped {
				d.Scoped, d.Reason = false, "it changes the table's key"
				c.Destruction = d
			}
			c.keys, c.cols, c.colType = ti.keys, ti.cols, ti.types[d.Column]
			c.Table, c.ident = ti.ident, ti.ident
			q, err := d.captureQuery(ti)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: capture query: %w", d.File, d.Line, err)
			}
			name := fmt.Sprintf("v%s_%d", strings.NewReplacer(".", "_", "-", "_").Replace(v), i+1)
			c.Store = "rollback_capture." + name // name: [a-z0-9_]
			order := make([]string, len(ti.keys))
			for j := range ti.keys {
				order[j] = fmt.Sprintf("k%d", j+1)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TABLE %s AS SELECT row_number() OVER (ORDER BY %s) AS rn, q.* FROM (%s) q", c.Store, strings.Join(order, ", "), q)); err != nil {
				return nil, fmt.Errorf("%s:%d: capture %s: %w", d.File, d.Line, d.Table, err)
			}
			// Merged batch by batch (rn) and looked up by key; with its
			// statistics, a batch is planned as the index lookups it is,
			// not a scan of the whole table per batch.
			if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (rn); CREATE INDEX ON %s (%s); ANALYZE %s", c.Store, c.Store, strings.Join(order, ", "), c.Store)); err != nil {
				return nil, fmt.Errorf("%s:%d: index the capture of %s: %w", d.File, d.Line, d.Table, err)
			}
			if err := tx.QueryRow(ctx, fmt.Sprintf(checksumSQL, c.Store)).Scan(&c.Rows, &c.Checksum); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO rollback.captures (version, seq, release, kind, tbl, col, col_type, keys, cols, scoped, reason, store, rows, checksum, file, line)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
				v, c.Seq, release, d.Kind, ti.ident, d.Column, c.colType, c.keys, c.cols, d.Scoped, d.Reason, c.Store, c.Rows, c.Checksum, d.File, d.Line); err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	if len(refused) > 0 {
		return nil, fmt.Errorf("%w: nothing was recorded:\n  %s", ErrNoKey, strings.Join(refused, "\n  "))
	}
	return out, tx.Commit(ctx)
}

func dropCaptures(ctx context.Context, tx pgx.Tx, version string) error {
	rows, err := tx.Query(ctx, `SELECT store FROM rollback.captures WHERE version = $1`, version)
	if err != nil {
		return err
	}
	stores, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, s := range stores {
		if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+s); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `DELETE FROM rollback.captures WHERE version = $1`, version)
	return err
}

// LoadCaptures reads the captures of the plan's versions not merged yet:
// its undo merges them.
func (p *Plan) LoadCaptures(ctx context.Context, db DB) error {
	caps, err := loadCaptures(ctx, db, p)
	if err != nil {
		return fmt.Errorf("read the release's captures: %w", err)
	}
	p.captures, p.Captured = caps, nil
	for _, s := range p.Steps {
		p.Captured = append(p.Captured, caps[s.Version.String()]...)
	}
	p.Destroyed = destroyedBy(p, caps)
	return nil
}

// Destroyed is what an undone step's up script destroyed, and whether
// 'rollback db record' captured it before the release.
type Destroyed struct {
	Destruction
	Version  string `json:"version"`
	Captured bool   `json:"captured"`
	Store    string `json:"store,omitempty"`
	Rows     int64  `json:"rows,omitempty"`
	Note     string `json:"note,omitempty"`
}

func (d Destroyed) String() string {
	s := d.Destruction.String()
	switch {
	case d.Captured:
		s += fmt.Sprintf(": captured %d row(s) in %s, merged back by key after the down script", d.Rows, d.Store)
	case d.Note != "":
		s += ": " + d.Note
	}
	return s
}

// destroyedBy lists what the plan's steps destroyed, from their up
// scripts, each with its capture (or why there is none).
func destroyedBy(p *Plan, caps map[string][]*Captured) []Destroyed {
	var out []Destroyed
	for _, s := range p.Steps {
		if s.Up == nil {
			continue
		}
		ds, err := upDestructions(s.Up)
		if err != nil {
			// Said, not dropped: the plan cannot tell what this step destroyed.
			out = append(out, Destroyed{Destruction: Destruction{File: s.Up.Name()}, Version: s.Version.String(), Note: "not analysed: " + err.Error()})
			continue
		}
		for i, d := range ds {
			x := Destroyed{Destruction: d, Version: s.Version.String(),
				Note: "not captured (no 'rollback db record --release' before the release migrated): the down script recreates the shape only; the data is in the snapshot"}
			for _, c := range caps[s.Version.String()] {
				if c.Seq == i+1 {
					x.Captured, x.Store, x.Rows, x.Note = true, c.Store, c.Rows, ""
				}
			}
			out = append(out, x)
		}
	}
	return out
}

func loadCaptures(ctx context.Context, db DB, p *Plan) (map[string][]*Captured, error) {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('rollback.captures') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	var versions []string
	for _, s := range p.Steps {
		versions = append(versions, s.Version.String())
	}
	caps, err := queryCaptures(ctx, db, `version = ANY($1) AND merged_at IS NULL ORDER BY version, seq DESC`, versions)
	if err != nil {
		return nil, err
	}
	out := map[string][]*Captured{}
	for _, c := range caps {
		out[c.Version] = append(out[c.Version], c)
	}
	return out, nil
}

func queryCaptures(ctx context.Context, db DB, where string, args ...any) ([]*Captured, error) {
	rows, err := db.Query(ctx, `SELECT version, seq, kind, tbl, col, col_type, keys, cols, scoped, reason, store, rows, checksum, file, line
		FROM rollback.captures WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Captured
	for rows.Next() {
		c := &Captured{}
		if err := rows.Scan(&c.Version, &c.Seq, &c.Kind, &c.ident, &c.Column, &c.colType, &c.keys, &c.cols, &c.Scoped, &c.Reason, &c.Store, &c.Rows, &c.Checksum, &c.File, &c.Line); err != nil {
			return nil, err
		}
		// What the catalog names goes into SQL: it must be what rollback
		// wrote there (a capture table of its own; a table as format('%I.%I')
		// quoted it).
		if !storeName.MatchString(c.Store) || !quotedTable.MatchString(c.ident) {
			return nil, fmt.Errorf("rollback.captures names %q and %q: not what rollback wrote", c.Store, c.ident)
		}
		c.Table = c.ident
		out = append(out, c)
	}
	return out, rows.Err()
}

var (
	storeName   = regexp.MustCompile(`^rollback_capture\.v[0-9_]+$`)
	ident       = `([a-z_][a-z0-9_$]*|"([^"]|"")+")`
	quotedTable = regexp.MustCompile(`^` + ident + `\.` + ident + `$`)
)
