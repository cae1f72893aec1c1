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
}

// Destructive reports whether the statement destroys data or schema.
func (s *StmtInfo) Destructive() bool {
	return len(s.DropColumns) > 0 || len(s.DropTables) > 0 || len(s.NullingColumns) > 0 ||
		s.Kind == "TruncateStmt" || s.Kind == "DeleteStmt" || s.Kind == "DropStmt"
}

// AnalyzeScript splits a script and parses each statement with the
// PostgreSQL grammar (libpg_query, run as WebAssembly: no cgo).
func AnalyzeScript(file, script string) ([]StmtInfo, error) {
	var out []StmtInfo
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
		b, _ := body.(node)
		info.Tables = relnames(b)
		inspect(&info, kind, b)
	}
	return info, nil
}

func inspect(info *StmtInfo, kind string, b node) {
	switch kind {
	case "AlterTableStmt":
		table := rel(b["relation"])
		info.AccessExclusive = false
		for _, c := range list(b["cmds"]) {
			cmd, _ := c.(node)["AlterTableCmd"].(node)
			sub, _ := cmd["subtype"].(string)
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
			var parts []string
			for _, it := range list(o.(node)["List"].(node)["items"]) {
				if s, ok := it.(node)["String"].(node); ok {
					parts = append(parts, fmt.Sprint(s["sval"]))
				}
			}
			name := strings.Join(parts, ".")
			info.Tables = append(info.Tables, name)
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
			rt, _ := t.(node)["ResTarget"].(node)
			val, _ := rt["val"].(node)
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
