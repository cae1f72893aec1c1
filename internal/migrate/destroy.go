package migrate

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	pgq "github.com/pganalyze/pg_query_go/v6"
	pg_query "github.com/wasilibs/go-pgquery"
)

// A release's forward migration can destroy data: a dropped column or
// table, a type change that loses information, an UPDATE that rewrites
// values, a DELETE or TRUNCATE. A down script recreates the shape, never
// the data. So before the release migrates ('rollback db record'), what
// each pending up statement will destroy is captured with its key, in the
// database itself (schema rollback_capture; capture.go), and the undo
// merges it back by key after the down script (merge.go): rows that still
// exist get their destroyed values back, rows written since stay as they
// are, rows deleted since stay deleted, and a value the new version wrote
// since is a conflict (the new write wins; the key is listed). This file
// is what the grammar says a statement destroys.

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

// upDestructions reads a migration's up script and lists what it destroys.
func upDestructions(up *File) ([]Destruction, error) {
	b, err := os.ReadFile(up.Path)
	if err != nil {
		return nil, err
	}
	return Destructions(up.Name(), string(b))
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
		mds, err := upDestructions(m.Up)
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
