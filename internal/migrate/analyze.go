package migrate

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/wasilibs/go-pgquery/parser"
)

// ColumnRef names a column of a table.
type ColumnRef struct {
	Table  string `json:"table"`
	Column string `json:"column"`
}

// StmtInfo is what the PostgreSQL grammar says about one statement.
type StmtInfo struct {
	Statement
	File string `json:"file"`
	// Kind is the parse node, e.g. AlterTableStmt.
	Kind string `json:"kind"`
	// Tables are the relations the statement names (schema-qualified
	// when the script qualifies them).
	Tables []string `json:"tables,omitempty"`
	// DropColumns and DropTables are what the statement destroys.
	DropColumns []ColumnRef `json:"dropColumns,omitempty"`
	DropTables  []string    `json:"dropTables,omitempty"`
	// NullingColumns are columns an UPDATE without WHERE sets to NULL.
	NullingColumns []ColumnRef `json:"nullingColumns,omitempty"`
	// DropWithoutIfExists is a DROP (or DROP COLUMN) that fails when the
	// object is already gone, so a re-run after a partial failure breaks.
	DropWithoutIfExists bool `json:"dropWithoutIfExists,omitempty"`
	// AccessExclusive: the statement takes an ACCESS EXCLUSIVE lock.
	AccessExclusive bool `json:"accessExclusive,omitempty"`
	// NonTransactional: PostgreSQL refuses to run it in a transaction.
	NonTransactional bool `json:"nonTransactional,omitempty"`
	// Opaque: the grammar alone cannot say which tables the statement
	// changes (a DROP ... CASCADE, a function call, a DO block, a schema
	// or extension dropped), so a snapshot of "the tables it touches"
	// would miss some: a snapshot falls back to the whole database.
	Opaque bool `json:"opaque,omitempty"`
}

// Destructive reports whether the statement destroys data or schema.
func (s *StmtInfo) Destructive() bool {
	return len(s.DropColumns) > 0 || len(s.DropTables) > 0 || len(s.NullingColumns) > 0 ||
		s.Kind == "TruncateStmt" || s.Kind == "DeleteStmt" || s.Kind == "DropStmt"
}

// AnalyzeScript splits a script and parses each statement with the
// PostgreSQL grammar (libpg_query, run as WebAssembly: no cgo).
func AnalyzeScript(file, script string) (out []StmtInfo, err error) {
	defer func() {
		// The parse tree is a generic JSON document: a shape this code did
		// not expect is an error naming the file, never a crash of the
		// rollback that is reading it.
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("%s: cannot analyze (%v); please report this statement", file, r)
		}
	}()
	for _, st := range Split(script) {
		info, err := analyze(st)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, st.Line, err)
		}
		info.File = file
		out = append(out, info)
	}
	return out, nil
}

type node = map[string]any

func analyze(st Statement) (StmtInfo, error) {
	info := StmtInfo{Statement: st}
	js, err := parser.ParseToJSON(st.SQL)
	if err != nil {
		return info, fmt.Errorf("SQL syntax: %w", err)
	}
	var tree struct {
		Stmts []struct {
			Stmt node `json:"stmt"`
		} `json:"stmts"`
	}
	if err := json.Unmarshal([]byte(js), &tree); err != nil {
		return info, err
	}
	if len(tree.Stmts) == 0 {
		info.Kind = "Empty"
		return info, nil
	}
	for kind, body := range tree.Stmts[0].Stmt {
		info.Kind = kind
		b := obj(body)
		info.Tables = relnames(b)
		inspect(&info, kind, b)
		info.Opaque = info.Opaque || opaque(kind, b)
	}
	return info, nil
}

// tableScoped are the statement kinds whose effect on data is limited to
// the relations they name.
var tableScoped = map[string]bool{
	"AlterTableStmt": true, "UpdateStmt": true, "DeleteStmt": true, "InsertStmt": true,
	"TruncateStmt": true, "IndexStmt": true, "CreateStmt": true, "RenameStmt": true,
	"CommentStmt": true, "ClusterStmt": true, "ReindexStmt": true, "VacuumStmt": true,
	"LockStmt": true, "ViewStmt": true, "CreateTableAsStmt": true, "RefreshMatViewStmt": true,
	"CreateSeqStmt": true, "AlterSeqStmt": true, "GrantStmt": true, "CreateTrigStmt": true,
	"CreatePolicyStmt": true, "AlterPolicyStmt": true, "CreateStatsStmt": true,
	// Statements that change no table data.
	"VariableSetStmt": true, "VariableShowStmt": true, "TransactionStmt": true, "Empty": true,
	"CreateSchemaStmt": true, "CreateEnumStmt": true, "CompositeTypeStmt": true, "CreateDomainStmt": true,
	"CreateFunctionStmt": true, "CreateExtensionStmt": true, "AlterEnumStmt": true,
}

// opaque reports a statement whose reach the parse tree does not show.
func opaque(kind string, b node) bool {
	if s, _ := b["behavior"].(string); s == "DROP_CASCADE" {
		return true // CASCADE drops dependent objects, in any table
	}
	if kind == "DropStmt" {
		switch str(b["removeType"]) {
		case "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_INDEX":
			return false
		}
		return true // types, functions, schemas, extensions: their columns and callers go with them
	}
	if kind == "SelectStmt" {
		// A SELECT changes nothing unless it calls a function.
		return strings.Contains(fmt.Sprint(b), "FuncCall")
	}
	return !tableScoped[kind]
}

func inspect(info *StmtInfo, kind string, b node) {
	switch kind {
	case "AlterTableStmt":
		table := rel(b["relation"])
		info.AccessExclusive = false
		for _, c := range list(b["cmds"]) {
			cmd := obj(obj(c)["AlterTableCmd"])
			sub := str(cmd["subtype"])
			switch sub {
			case "AT_SetStatistics", "AT_ValidateConstraint", "AT_SetOptions", "AT_ResetOptions", "AT_ClusterOn", "AT_DropCluster":
			case "AT_AddConstraint":
				// Adding a foreign key takes SHARE ROW EXCLUSIVE; the rest
				// ACCESS EXCLUSIVE.
				if !strings.Contains(fmt.Sprint(cmd["def"]), "CONSTR_FOREIGN") {
					info.AccessExclusive = true
				}
			default:
				info.AccessExclusive = true
			}
			if sub == "AT_DropColumn" {
				name, _ := cmd["name"].(string)
				info.DropColumns = append(info.DropColumns, ColumnRef{Table: table, Column: name})
				if ok, _ := cmd["missing_ok"].(bool); !ok {
					info.DropWithoutIfExists = true
				}
			}
		}
	case "DropStmt":
		rt, _ := b["removeType"].(string)
		if ok, _ := b["missing_ok"].(bool); !ok {
			info.DropWithoutIfExists = true
		}
		conc, _ := b["concurrent"].(bool)
		info.NonTransactional = conc
		switch rt {
		case "OBJECT_TABLE", "OBJECT_MATVIEW", "OBJECT_VIEW", "OBJECT_SEQUENCE":
			info.AccessExclusive = true
		case "OBJECT_INDEX":
			info.AccessExclusive = !conc
		}
		for _, o := range list(b["objects"]) {
			name := objectName(obj(o))
			if name == "" {
				continue
			}
			switch rt {
			case "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_INDEX":
				info.Tables = append(info.Tables, name)
			}
			if rt == "OBJECT_TABLE" {
				info.DropTables = append(info.DropTables, name)
			}
		}
	case "TruncateStmt", "RenameStmt", "ClusterStmt", "ReindexStmt":
		info.AccessExclusive = true
		if kind == "ReindexStmt" && strings.Contains(fmt.Sprint(b["params"]), "concurrently") {
			info.AccessExclusive, info.NonTransactional = false, true
		}
	case "IndexStmt":
		if conc, _ := b["concurrent"].(bool); conc {
			info.NonTransactional = true
		}
	case "VacuumStmt":
		info.NonTransactional = true
		info.AccessExclusive = strings.Contains(fmt.Sprint(b["options"]), "full")
	case "CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt":
		info.NonTransactional = true
	case "LockStmt":
		mode, _ := b["mode"].(float64)
		info.AccessExclusive = mode == 0 || mode == 8
	case "UpdateStmt":
		if _, hasWhere := b["whereClause"]; hasWhere {
			return
		}
		table := rel(b["relation"])
		for _, t := range list(b["targetList"]) {
			rt := obj(obj(t)["ResTarget"])
			val := obj(rt["val"])
			if c, ok := val["A_Const"].(node); ok {
				if isnull, _ := c["isnull"].(bool); isnull {
					info.NullingColumns = append(info.NullingColumns, ColumnRef{Table: table, Column: fmt.Sprint(rt["name"])})
				}
			}
		}
	}
}

func rel(v any) string {
	r, _ := v.(node)
	if r == nil {
		return ""
	}
	name, _ := r["relname"].(string)
	if s, ok := r["schemaname"].(string); ok && s != "" {
		return s + "." + name
	}
	return name
}

// relnames collects every relation named anywhere in a parse tree.
func relnames(b any) []string {
	seen := map[string]bool{}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case node:
			if _, ok := t["relname"]; ok {
				if n := rel(t); n != "" && !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
			for _, c := range t {
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(b)
	return out
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// obj is v as a parse node, or an empty one.
func obj(v any) node {
	n, _ := v.(node)
	return n
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// objectName is a dropped object's qualified name: a List of String
// items (tables, indexes), a bare String (schemas, extensions), or a
// TypeName / ObjectWithArgs (types, functions), whatever the grammar gives.
func objectName(o node) string {
	var items []any
	switch {
	case o["List"] != nil:
		items = list(obj(o["List"])["items"])
	case o["String"] != nil:
		return str(obj(o["String"])["sval"])
	case o["TypeName"] != nil:
		items = list(obj(o["TypeName"])["names"])
	case o["ObjectWithArgs"] != nil:
		items = list(obj(o["ObjectWithArgs"])["objname"])
	}
	var parts []string
	for _, it := range items {
		if s := str(obj(obj(it)["String"])["sval"]); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ".")
}
