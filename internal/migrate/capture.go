package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	pgq "github.com/pganalyze/pg_query_go/v6"
	pg_query "github.com/wasilibs/go-pgquery"
)

// A release's forward migration can destroy data: a dropped column or
// table, a type change that loses information, an UPDATE that rewrites
// values, a DELETE or TRUNCATE. A down script recreates the shape, never
// the data. So before the release migrates ('rollback db record'), what
// each pending up statement will destroy is captured with its key, in the
// database itself (schema rollback_capture), and the undo merges it back
// by key in the down script's own transaction: rows that still exist get
// their destroyed values back, rows written since stay as they are, rows
// deleted since stay deleted, and a value the new version wrote since is
// a conflict (the new write wins; the key is listed).

// Destruction kinds.
const (
	DestroyColumn   = "drop-column"
	DestroyTable    = "drop-table"
	DestroyType     = "type-change"
	DestroyUpdate   = "update"
	DestroyDelete   = "delete"
	DestroyTruncate = "truncate"
)

// Destruction is what one statement of a pending up script destroys.
type Destruction struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Kind   string `json:"kind"`
	Table  string `json:"table"`
	Column string `json:"column,omitempty"`
	// Scoped: the grammar says exactly which rows and values the statement
	// changes, so the undo merges them back by key. Unscoped statements
	// (Reason says why) are captured whole and not merged automatically.
	Scoped bool   `json:"scoped"`
	Reason string `json:"reason,omitempty"`

	// The statement's parse, for building the capture query.
	rel   *pgq.RangeVar
	from  []*pgq.Node // UPDATE ... FROM, DELETE ... USING
	where *pgq.Node
	post  *pgq.Node // the value the statement leaves (UPDATE's SET, a type change's cast)
}

func (d Destruction) String() string {
	what := d.Table
	if d.Column != "" {
		what += "." + d.Column
	}
	s := fmt.Sprintf("%s:%d: %s %s", d.File, d.Line, d.Kind, what)
	if !d.Scoped {
		s += " (not scoped: " + d.Reason + "; captured whole, restored by hand)"
	}
	return s
}

// Destructions analyses an up script with the PostgreSQL grammar and lists
// what each statement destroys, in order.
func Destructions(file, script string) (out []Destruction, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("%s: cannot analyze (%v); please report this statement", file, r)
		}
	}()
	written := map[string]bool{}
	for _, st := range Split(script) {
		tree, err := pg_query.Parse(st.SQL)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: SQL syntax: %w", file, st.Line, err)
		}
		for _, raw := range tree.GetStmts() {
			for _, d := range destructionsOf(raw.GetStmt()) {
				d.File, d.Line = file, st.Line
				// What is captured is the table before the release: a
				// statement after another that changed the table would be
				// captured wrong.
				if written[d.Table] && d.Scoped {
					d.Scoped, d.Reason, d.post = false, "an earlier statement of the release changes "+d.Table+" first", nil
				}
				out = append(out, d)
			}
			for _, t := range writtenBy(raw.GetStmt()) {
				written[t] = true
			}
		}
	}
	return out, nil
}

// writtenBy are the tables a statement changes the rows or columns of.
func writtenBy(n *pgq.Node) []string {
	switch {
	case n.GetInsertStmt() != nil:
		return []string{relName(n.GetInsertStmt().GetRelation())}
	case n.GetUpdateStmt() != nil:
		return []string{relName(n.GetUpdateStmt().GetRelation())}
	case n.GetDeleteStmt() != nil:
		return []string{relName(n.GetDeleteStmt().GetRelation())}
	case n.GetAlterTableStmt() != nil:
		// A dropped column changes no value the later statements read; a
		// type change rewrites them.
		for _, c := range n.GetAlterTableStmt().GetCmds() {
			if c.GetAlterTableCmd().GetSubtype() == pgq.AlterTableType_AT_AlterColumnType {
				return []string{relName(n.GetAlterTableStmt().GetRelation())}
			}
		}
		return nil
	case n.GetTruncateStmt() != nil:
		var out []string
		for _, r := range n.GetTruncateStmt().GetRelations() {
			out = append(out, relName(r.GetRangeVar()))
		}
		return out
	}
	return nil
}

func destructionsOf(n *pgq.Node) []Destruction {
	var out []Destruction
	switch {
	case n.GetAlterTableStmt() != nil:
		a := n.GetAlterTableStmt()
		for _, c := range a.GetCmds() {
			cmd := c.GetAlterTableCmd()
			switch cmd.GetSubtype() {
			case pgq.AlterTableType_AT_DropColumn:
				out = append(out, Destruction{Kind: DestroyColumn, Table: relName(a.GetRelation()), Column: cmd.GetName(), Scoped: true, rel: a.GetRelation()})
			case pgq.AlterTableType_AT_AlterColumnType:
				def := cmd.GetDef().GetColumnDef()
				col := pgq.MakeColumnRefNode([]*pgq.Node{pgq.MakeStrNode(cmd.GetName())}, -1)
				post := def.GetRawDefault() // USING
				if post == nil {
					post = &pgq.Node{Node: &pgq.Node_TypeCast{TypeCast: &pgq.TypeCast{Arg: col, TypeName: def.GetTypeName(), Location: -1}}}
				}
				out = append(out, Destruction{Kind: DestroyType, Table: relName(a.GetRelation()), Column: cmd.GetName(), Scoped: true, rel: a.GetRelation(), post: post})
			}
		}
	case n.GetDropStmt() != nil:
		d := n.GetDropStmt()
		if d.GetRemoveType() != pgq.ObjectType_OBJECT_TABLE {
			break
		}
		for _, o := range d.GetObjects() {
			var parts []string
			for _, s := range o.GetList().GetItems() {
				parts = append(parts, s.GetString_().GetSval())
			}
			rv := &pgq.RangeVar{Relname: parts[len(parts)-1], Inh: true, Relpersistence: "p", Location: -1}
			if len(parts) > 1 {
				rv.Schemaname = parts[len(parts)-2]
			}
			out = append(out, Destruction{Kind: DestroyTable, Table: relName(rv), Scoped: true, rel: rv})
		}
	case n.GetTruncateStmt() != nil:
		for _, r := range n.GetTruncateStmt().GetRelations() {
			rv := r.GetRangeVar()
			out = append(out, Destruction{Kind: DestroyTruncate, Table: relName(rv), Scoped: true, rel: rv})
		}
	case n.GetDeleteStmt() != nil:
		d := n.GetDeleteStmt()
		x := Destruction{Kind: DestroyDelete, Table: relName(d.GetRelation()), Scoped: true, rel: d.GetRelation(), from: d.GetUsingClause(), where: d.GetWhereClause()}
		if d.GetWithClause() != nil {
			x.Scoped, x.Reason = false, "a WITH clause"
		}
		out = append(out, x)
	case n.GetUpdateStmt() != nil:
		u := n.GetUpdateStmt()
		for _, t := range u.GetTargetList() {
			rt := t.GetResTarget()
			x := Destruction{Kind: DestroyUpdate, Table: relName(u.GetRelation()), Column: rt.GetName(), Scoped: true,
				rel: u.GetRelation(), from: u.GetFromClause(), where: u.GetWhereClause(), post: rt.GetVal()}
			switch {
			case u.GetWithClause() != nil:
				x.Scoped, x.Reason = false, "a WITH clause"
			case len(rt.GetIndirection()) > 0:
				x.Scoped, x.Reason = false, "it sets part of a column (an array element or field)"
			case rt.GetVal().GetMultiAssignRef() != nil:
				x.Scoped, x.Reason = false, "a multi-column assignment"
			case rt.GetVal().GetSetToDefault() != nil:
				x.Scoped, x.Reason, x.post = false, "it sets the column's default", nil
			}
			out = append(out, x)
		}
	}
	return out
}

func relName(rv *pgq.RangeVar) string {
	if rv.GetSchemaname() != "" {
		return rv.GetSchemaname() + "." + rv.GetRelname()
	}
	return rv.GetRelname()
}

// regclass is the relation as to_regclass must see it: quoted, so a
// mixed-case or dotted name is the table the script named.
func (d *Destruction) regclass() string {
	if d.rel.GetSchemaname() != "" {
		return pgx.Identifier{d.rel.GetSchemaname(), d.rel.GetRelname()}.Sanitize()
	}
	return pgx.Identifier{d.rel.GetRelname()}.Sanitize()
}

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
		b, err := os.ReadFile(m.Up.Path)
		if err != nil {
			return nil, err
		}
		ds, err := Destructions(m.Up.Name(), string(b))
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
		b, err := os.ReadFile(s.Up.Path)
		if err != nil {
			continue
		}
		ds, err := Destructions(s.Up.Name(), string(b))
		if err != nil {
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

// Merged counts what a capture's merge did.
type Merged struct {
	Capture string `json:"capture"` // what it gives back: TABLE.COLUMN (kind)
	// Restored rows got their destroyed values back (or came back whole).
	Restored int64 `json:"restored"`
	// Kept rows are the table's rows the capture does not hold (written
	// since the release, or never touched by it): unchanged.
	Kept int64 `json:"kept"`
	// NotResurrected rows were deleted since the release: still deleted.
	NotResurrected int64 `json:"notResurrected"`
	// Conflicts: the new version wrote the value (or a row took the key)
	// since the release; the new write won. ConflictKeys lists the first.
	Conflicts    int64    `json:"conflicts"`
	ConflictKeys []string `json:"conflictKeys,omitempty"`
	// ByHand: captured whole, not merged (the statement was not scoped).
	ByHand int64 `json:"byHand,omitempty"`
}

func (m Merged) String() string {
	if m.ByHand > 0 {
		return fmt.Sprintf("%s: %d row(s) captured, not merged (restore by hand)", m.Capture, m.ByHand)
	}
	s := fmt.Sprintf("%s: %d restored, %d kept, %d not resurrected, %d conflict(s)", m.Capture, m.Restored, m.Kept, m.NotResurrected, m.Conflicts)
	if len(m.ConflictKeys) > 0 {
		s += " (new write kept for key " + strings.Join(m.ConflictKeys, "; ") + ")"
	}
	return s
}

// mergeBatch is how many captured rows one merge statement (and, for a
// batched merge, one transaction) handles.
var mergeBatch int64 = 5000

// DefaultInlineMergeRows: a step whose captures hold at most this many
// rows is merged inside the down script's transaction (all or nothing,
// and the lock it holds lasts milliseconds longer); a larger one is
// merged after it commits, in batches of their own (make bench-merge: a
// 100,000-row merge inside the transaction held readers for 1.2 s).
const DefaultInlineMergeRows = 5000

// mergeSQL is the capture's merge statements: what counts the rows of a
// range (not resurrected, conflicts, their keys) and what puts them back.
func (c *Captured) mergeSQL(ctx context.Context, tx pgx.Tx) (count, put string, err error) {
	var match, keyText []string
	for i, k := range c.keys {
		match = append(match, fmt.Sprintf("t.%s = c.k%d", pgx.Identifier{k}.Sanitize(), i+1))
		keyText = append(keyText, fmt.Sprintf("c.k%d::text", i+1))
	}
	on := strings.Join(match, " AND ")
	key := "concat_ws(',', " + strings.Join(keyText, ", ") + ")"
	rng := "c.rn BETWEEN $1 AND $2"
	switch c.Kind {
	case DestroyColumn, DestroyType, DestroyUpdate:
		col := pgx.Identifier{c.Column}.Sanitize()
		// A value is the release's (and so given back) while it is what
		// the statement left: the cast or the SET value, or, for a column
		// the down script recreated, its default. Anything else was
		// written since, and wins.
		// Compared as text in the column's type: json, xml or point have
		// no equality operator, and the same value prints the same.
		untouched := fmt.Sprintf("t.%s::text IS NOT DISTINCT FROM CAST(c.post AS %s)::text", col, c.colType)
		if c.Kind == DestroyColumn {
			var def *string
			err := tx.QueryRow(ctx, `SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
				WHERE d.adrelid = $1::regclass AND a.attname = $2`, c.Table, c.Column).Scan(&def)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return "", "", err
			}
			untouched = fmt.Sprintf("t.%s IS NULL", col)
			if def != nil {
				untouched = fmt.Sprintf("(t.%s IS NULL OR t.%s IS NOT DISTINCT FROM (%s))", col, col, *def)
			}
		}
		// One join: a row of the range is gone (no match), or a
		// conflict (a match the new version wrote).
		present := fmt.Sprintf("t.%s IS NOT NULL", pgx.Identifier{c.keys[0]}.Sanitize())
		count = fmt.Sprintf(`SELECT count(*) FILTER (WHERE NOT %[7]s),
			count(*) FILTER (WHERE %[7]s AND NOT (%[4]s)),
			coalesce((array_agg(%[5]s ORDER BY c.rn) FILTER (WHERE %[7]s AND NOT (%[4]s)))[1:20], '{}')
			FROM %[2]s c LEFT JOIN %[1]s t ON %[3]s WHERE %[6]s`, c.Table, c.Store, on, untouched, key, rng, present)
		put = fmt.Sprintf(`UPDATE %s t SET %s = c.pre FROM %s c WHERE %s AND %s AND %s`, c.Table, col, c.Store, on, untouched, rng)
	default:
		count = fmt.Sprintf(`SELECT 0::bigint, count(*), coalesce((array_agg(%[4]s ORDER BY c.rn))[1:20], '{}')
			FROM %[2]s c WHERE %[5]s AND EXISTS (SELECT 1 FROM %[1]s t WHERE %[3]s)`, c.Table, c.Store, on, key, rng)
		cols := make([]string, len(c.cols))
		vals := make([]string, len(c.cols))
		for i, name := range c.cols {
			cols[i], vals[i] = pgx.Identifier{name}.Sanitize(), fmt.Sprintf("c.c%d", i+1)
		}
		put = fmt.Sprintf(`INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s c WHERE %s AND NOT EXISTS (SELECT 1 FROM %s t WHERE %s) ON CONFLICT DO NOTHING`,
			c.Table, strings.Join(cols, ", "), strings.Join(vals, ", "), c.Store, rng, c.Table, on)
	}
	return count, put, nil
}

// verifyCapture checks the capture's rows against its checksum.
func (c *Captured) verifyCapture(ctx context.Context, db DB) error {
	var n int64
	var sum string
	if err := db.QueryRow(ctx, fmt.Sprintf(checksumSQL, c.Store)).Scan(&n, &sum); err != nil {
		return fmt.Errorf("capture %s: %w", c.Store, err)
	}
	if n != c.Rows || sum != c.Checksum {
		return fmt.Errorf("capture %s changed since it was taken (%d rows, checksum %s; recorded %d, %s): not merged", c.Store, n, sum, c.Rows, c.Checksum)
	}
	return nil
}

func (c *Captured) name() string {
	n := c.Table
	if c.Column != "" {
		n += "." + c.Column
	}
	return n + " (" + c.Kind + ")"
}

// mergeRange puts back the capture's rows lo..hi in tx and adds what
// happened to m.
func (c *Captured) mergeRange(ctx context.Context, tx pgx.Tx, count, put string, lo, hi int64, m *Merged) error {
	// A batch is a few thousand key lookups: the table's statistics
	// predate the down script (a recreated column looks selective), and
	// the planner would scan the whole table per batch (a 1,000,000-row
	// merge took 68 s that way). For the rest of this transaction only.
	if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"); err != nil {
		return err
	}
	var gone, conflicts int64
	var keys []string
	if err := tx.QueryRow(ctx, count, lo, hi).Scan(&gone, &conflicts, &keys); err != nil {
		return fmt.Errorf("merge %s: %w", m.Capture, err)
	}
	tag, err := tx.Exec(ctx, put, lo, hi)
	if err != nil {
		return fmt.Errorf("merge %s: %w", m.Capture, err)
	}
	// Only the batch: later statements of an inline segment plan as usual.
	if _, err := tx.Exec(ctx, "RESET enable_seqscan; RESET enable_hashjoin; RESET enable_mergejoin"); err != nil {
		return err
	}
	if c.Column == "" {
		// A row kept out by another unique index (ON CONFLICT DO
		// NOTHING) is a conflict too: a new row holds what it would.
		inRange := min(hi, c.Rows) - lo + 1
		if extra := inRange - conflicts - tag.RowsAffected(); extra > 0 {
			m.Conflicts += extra
		}
	}
	m.Restored += tag.RowsAffected()
	m.NotResurrected += gone
	m.Conflicts += conflicts
	if room := 20 - len(m.ConflictKeys); room > 0 {
		m.ConflictKeys = append(m.ConflictKeys, keys[:min(room, len(keys))]...)
	}
	return nil
}

// finish counts the rows kept, advances a recreated table's sequences
// and marks the capture merged, in tx.
func (c *Captured) finish(ctx context.Context, tx pgx.Tx, m *Merged) error {
	on := make([]string, len(c.keys))
	for i, k := range c.keys {
		on[i] = fmt.Sprintf("t.%s = c.k%d", pgx.Identifier{k}.Sanitize(), i+1)
	}
	if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s t WHERE NOT EXISTS (SELECT 1 FROM %s c WHERE %s)`, c.Table, c.Store, strings.Join(on, " AND "))).Scan(&m.Kept); err != nil {
		return err
	}
	if c.Column == "" {
		// A recreated table's sequences start again at 1: move them past
		// the restored keys.
		if err := advanceSequences(ctx, tx, c.Table); err != nil {
			return fmt.Errorf("merge %s: advance its sequences: %w", m.Capture, err)
		}
	}
	_, err := tx.Exec(ctx, `UPDATE rollback.captures SET merged_at = now(), merged_rn = rows, restored = $3, conflicts = $4, not_resurrected = $5, kept = $6, conflict_keys = coalesce($7::text[], '{}')
		WHERE version = $1 AND seq = $2`, c.Version, c.Seq, m.Restored, m.Conflicts, m.NotResurrected, m.Kept, m.ConflictKeys)
	return err
}

// merge puts a capture back by key inside the down script's transaction
// (a small one: see DefaultInlineMergeRows).
func (c *Captured) merge(ctx context.Context, tx pgx.Tx) (Merged, error) {
	m := Merged{Capture: c.name()}
	if err := c.verifyCapture(ctx, tx); err != nil {
		return m, err
	}
	if !c.Scoped {
		m.ByHand = c.Rows
		_, err := tx.Exec(ctx, `UPDATE rollback.captures SET merged_at = now(), undone_at = now() WHERE version = $1 AND seq = $2`, c.Version, c.Seq)
		return m, err
	}
	count, put, err := c.mergeSQL(ctx, tx)
	if err != nil {
		return m, err
	}
	for lo := int64(1); lo <= c.Rows; lo += mergeBatch {
		if err := c.mergeRange(ctx, tx, count, put, lo, lo+mergeBatch-1, &m); err != nil {
			return m, err
		}
	}
	return m, c.finish(ctx, tx, &m)
}

// finishMerges merges, batch by batch, every capture whose step was
// undone (its down script committed) and whose merge has not finished:
// each batch is its own transaction under the undo's lock_timeout, with
// its progress (the last key merged, the counts so far) written in the
// same transaction, so a kill resumes at the next batch and no row is
// merged twice. Readers never wait on it (no DDL lock; row locks only).
// It returns the versions whose merges it finished.
func finishMerges(ctx context.Context, conn *pgx.Conn, o UndoOptions, logf func(string, ...any)) ([]string, error) {
	caps, err := pendingMerges(ctx, conn)
	if err != nil || len(caps) == 0 {
		return nil, err
	}
	var versions []string
	for _, c := range caps {
		m, err := c.mergeBatched(ctx, conn, o, logf)
		if err != nil {
			return versions, err
		}
		logf("merged %s", m)
		if !slices.Contains(versions, c.Version) {
			versions = append(versions, c.Version)
		}
	}
	return versions, nil
}

// reportMerges is what the merges of the versions gave back, as the
// catalog counted them (an interrupted merge's earlier batches included),
// newest first.
func reportMerges(ctx context.Context, db DB, versions []string) ([]Merged, error) {
	if len(versions) == 0 {
		return nil, nil
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('rollback.captures') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT kind, tbl, col, scoped, rows, restored, conflicts, not_resurrected, kept, conflict_keys
		FROM rollback.captures WHERE version = ANY($1) AND merged_at IS NOT NULL ORDER BY version DESC, seq DESC`, versions)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Merged
	for rows.Next() {
		var c Captured
		var m Merged
		var n int64
		if err := rows.Scan(&c.Kind, &c.Table, &c.Column, &c.Scoped, &n, &m.Restored, &m.Conflicts, &m.NotResurrected, &m.Kept, &m.ConflictKeys); err != nil {
			return nil, err
		}
		m.Capture = c.name()
		if !c.Scoped {
			m = Merged{Capture: m.Capture, ByHand: n}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (c *Captured) mergeBatched(ctx context.Context, conn *pgx.Conn, o UndoOptions, logf func(string, ...any)) (Merged, error) {
	m := Merged{Capture: c.name()}
	if err := c.verifyCapture(ctx, conn); err != nil {
		return m, err
	}
	if !c.Scoped {
		m.ByHand = c.Rows
		_, err := conn.Exec(ctx, `UPDATE rollback.captures SET merged_at = now() WHERE version = $1 AND seq = $2`, c.Version, c.Seq)
		return m, err
	}
	for {
		done := false
		err := withLockRetries(ctx, o, logf, "merge of "+m.Capture, func() error {
			tx, err := conn.Begin(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", o.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			// The progress so far, locked: one merger at a time.
			var at int64
			var merged *time.Time
			cur := Merged{Capture: m.Capture}
			if err := tx.QueryRow(ctx, `SELECT merged_rn, merged_at, restored, conflicts, not_resurrected, conflict_keys FROM rollback.captures
				WHERE version = $1 AND seq = $2 FOR UPDATE`, c.Version, c.Seq).Scan(&at, &merged, &cur.Restored, &cur.Conflicts, &cur.NotResurrected, &cur.ConflictKeys); err != nil {
				return err
			}
			if merged != nil {
				done = true
				m = cur
				return tx.Rollback(ctx)
			}
			if o.boundary != nil {
				o.boundary(fmt.Sprintf("merge batch after %d", at))
			}
			if at >= c.Rows {
				if err := c.finish(ctx, tx, &cur); err != nil {
					return err
				}
				done, m = true, cur
				return tx.Commit(ctx)
			}
			count, put, err := c.mergeSQL(ctx, tx)
			if err != nil {
				return err
			}
			hi := min(at+mergeBatch, c.Rows)
			if err := c.mergeRange(ctx, tx, count, put, at+1, hi, &cur); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE rollback.captures SET merged_rn = $3, restored = $4, conflicts = $5, not_resurrected = $6, conflict_keys = coalesce($7::text[], '{}')
				WHERE version = $1 AND seq = $2`, c.Version, c.Seq, hi, cur.Restored, cur.Conflicts, cur.NotResurrected, cur.ConflictKeys); err != nil {
				return err
			}
			return tx.Commit(ctx)
		})
		if err != nil {
			return m, err
		}
		if done {
			return m, nil
		}
	}
}

// pendingMerges are the captures whose step was undone and whose merge
// has not finished (a batched merge, or one a kill interrupted).
func pendingMerges(ctx context.Context, db DB) ([]*Captured, error) {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('rollback.captures') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	return queryCaptures(ctx, db, `undone_at IS NOT NULL AND merged_at IS NULL ORDER BY undone_at, version DESC, seq DESC`)
}

// advanceSequences moves each serial or identity sequence of a table past
// the largest value its column holds.
func advanceSequences(ctx context.Context, tx pgx.Tx, table string) error {
	rows, err := tx.Query(ctx, `SELECT a.attname, pg_get_serial_sequence($1, a.attname) FROM pg_attribute a
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND pg_get_serial_sequence($1, a.attname) IS NOT NULL`, table)
	if err != nil {
		return err
	}
	type seq struct{ col, seq string }
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seq, error) {
		var s seq
		return s, r.Scan(&s.col, &s.seq)
	})
	if err != nil {
		return err
	}
	for _, s := range seqs {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SELECT setval($1, m) FROM (SELECT max(%s)::bigint AS m FROM %s) x
			WHERE m > coalesce(pg_sequence_last_value($1::regclass), 0)`, pgx.Identifier{s.col}.Sanitize(), table), s.seq); err != nil {
			return err
		}
	}
	return nil
}

// MergeSummary is the merges of an undo in one line ("" when none).
func MergeSummary(ms []Merged) string {
	if len(ms) == 0 {
		return ""
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return "gave back what the release destroyed: " + strings.Join(parts, "; ")
}

func noKey(d Destruction, table string) string {
	return fmt.Sprintf("%s:%d: %s destroys data of %s, which has no primary key (nor a unique index on NOT NULL columns): add one before the release, or capture the table yourself", d.File, d.Line, d.Kind, table)
}

// Assess lists what the migrations newer than since will destroy and,
// with a database (db not nil), the tables among them that have no key
// to give their data back by: 'rollback check' before a release.
func Assess(ctx context.Context, db DB, src *Source, since Version) (ds []Destruction, problems []string, err error) {
	for _, m := range src.Migrations {
		if m.Version.Compare(since) <= 0 || m.Up == nil {
			continue
		}
		b, err := os.ReadFile(m.Up.Path)
		if err != nil {
			return nil, nil, err
		}
		mds, err := Destructions(m.Up.Name(), string(b))
		if err != nil {
			return nil, nil, err
		}
		for _, d := range mds {
			ds = append(ds, d)
			if db == nil {
				continue
			}
			ti, exists, err := readTable(ctx, db, d.regclass())
			if err != nil {
				return nil, nil, err
			}
			if exists && len(ti.keys) == 0 {
				problems = append(problems, noKey(d, ti.ident))
			}
		}
	}
	return ds, problems, nil
}

// sample is what a drill wrote after the forward migration, per capture:
// rows deleted (which must stay deleted) and rows inserted (which must be
// kept).
type sample struct {
	deleted  map[string][]string // capture store -> keys
	inserted map[string]int64    // table -> rows
	notes    []string
}

func (s sample) String() string {
	var parts []string
	for store, keys := range s.deleted {
		parts = append(parts, fmt.Sprintf("%d captured row(s) of %s deleted", len(keys), store))
	}
	for table, n := range s.inserted {
		parts = append(parts, fmt.Sprintf("%d row(s) inserted into %s", n, table))
	}
	return strings.Join(append(parts, s.notes...), "; ")
}

// sampleWrites writes what customers would after the release: for each
// capture whose table still exists, it deletes two captured rows and
// inserts two rows copied from others (their key from its default; a
// table whose key has none, or whose copy breaks a constraint, gets no
// inserts and the sample says so).
func sampleWrites(ctx context.Context, conn *pgx.Conn, caps []Captured) (sample, error) {
	s := sample{deleted: map[string][]string{}, inserted: map[string]int64{}}
	for _, c := range caps {
		if c.Store == "" || !c.Scoped {
			continue
		}
		ti, exists, err := readTable(ctx, conn, c.ident)
		if err != nil {
			return s, err
		}
		if !exists {
			continue // dropped by the release
		}
		var match, keyText []string
		for i, k := range c.keys {
			match = append(match, fmt.Sprintf("t.%s = c.k%d", pgx.Identifier{k}.Sanitize(), i+1))
			keyText = append(keyText, fmt.Sprintf("c.k%d::text", i+1))
		}
		dtx, err := conn.Begin(ctx)
		if err != nil {
			return s, err
		}
		rows, err := dtx.Query(ctx, fmt.Sprintf(`DELETE FROM %s t USING (SELECT * FROM %s ORDER BY rn LIMIT 2) c WHERE %s RETURNING concat_ws(',', %s)`,
			ti.ident, c.Store, strings.Join(match, " AND "), strings.Join(keyText, ", ")))
		var keys []string
		if err == nil {
			keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			// A foreign key to these rows, say: no sample deletes here.
			_ = dtx.Rollback(ctx)
			s.notes = append(s.notes, fmt.Sprintf("no sample deletes from %s (%v)", ti.ident, err))
			keys = nil
		} else if err := dtx.Commit(ctx); err != nil {
			return s, err
		}
		s.deleted[c.Store] = keys
		if _, done := s.inserted[ti.ident]; done {
			continue
		}
		var cols []string
		for _, col := range ti.cols {
			if !slices.Contains(ti.keys, col) {
				cols = append(cols, pgx.Identifier{col}.Sanitize())
			}
		}
		list := strings.Join(cols, ", ")
		tx, err := conn.Begin(ctx)
		if err != nil {
			return s, err
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s LIMIT 2`, ti.ident, list, list, ti.ident))
		if err != nil {
			_ = tx.Rollback(ctx)
			s.notes = append(s.notes, fmt.Sprintf("no sample inserts into %s (%v)", ti.ident, err))
			s.inserted[ti.ident] = 0
			continue
		}
		if err := tx.Commit(ctx); err != nil {
			return s, err
		}
		s.inserted[ti.ident] = tag.RowsAffected()
	}
	return s, nil
}

// check: every captured row is accounted for (restored, not resurrected
// or a conflict), the rows the sample deleted stayed deleted and the rows
// it inserted were kept.
func (s sample) check(ctx context.Context, conn *pgx.Conn, caps []Captured, merged []Merged) error {
	byCapture := map[string]Merged{}
	for _, m := range merged {
		byCapture[m.Capture] = m
	}
	for _, c := range caps {
		if c.Store == "" || !c.Scoped {
			continue
		}
		name := c.Table
		if c.Column != "" {
			name += "." + c.Column
		}
		m, ok := byCapture[name+" ("+c.Kind+")"]
		if !ok {
			return fmt.Errorf("the capture of %s was not merged", name)
		}
		if got := m.Restored + m.NotResurrected + m.Conflicts; got != c.Rows {
			return fmt.Errorf("merge of %s accounts for %d of %d captured row(s): %s", name, got, c.Rows, m)
		}
		if d := int64(len(s.deleted[c.Store])); c.Column != "" && m.NotResurrected < d {
			return fmt.Errorf("merge of %s: %d row(s) deleted after the release, %d counted as not resurrected", name, d, m.NotResurrected)
		}
		if n := s.inserted[c.Table]; m.Kept < n {
			return fmt.Errorf("merge of %s: %d row(s) inserted after the release, %d kept", name, n, m.Kept)
		}
	}
	return nil
}
