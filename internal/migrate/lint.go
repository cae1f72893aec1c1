package migrate

import (
	"fmt"
	"os"
	"sort"
)

// Severity of a lint finding.
type Severity string

// Severities.
const (
	SevError   Severity = "error"
	SevWarning Severity = "warning"
	SevInfo    Severity = "info"
)

// Finding is one lint result, at a file and line.
type Finding struct {
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Rule     string   `json:"rule"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s:%d: %s: %s [%s]", f.File, f.Line, f.Severity, f.Message, f.Rule)
}

// LintScript checks one undo or migration script with the PostgreSQL
// grammar:
//   - destructive: every statement that destroys data or schema;
//   - null-before-drop: UPDATE ... SET col = NULL before DROP COLUMN col,
//     a full-table rewrite (and lock) that the drop makes pointless;
//   - drop-without-if-exists: a re-run after a partial failure fails;
//   - access-exclusive: the statement blocks every read and write of the
//     table while it runs or waits;
//   - non-transactional: cannot run inside the undo's transaction.
func LintScript(file, script string) ([]Finding, error) {
	infos, err := AnalyzeScript(file, script)
	if err != nil {
		return nil, err
	}
	var out []Finding
	add := func(in StmtInfo, rule string, sev Severity, format string, a ...any) {
		out = append(out, Finding{File: file, Line: in.Line, Rule: rule, Severity: sev, Message: fmt.Sprintf(format, a...)})
	}
	nulled := map[ColumnRef]StmtInfo{}
	for _, in := range infos {
		for _, c := range in.NullingColumns {
			nulled[c] = in
		}
		for _, c := range in.DropColumns {
			if prev, ok := nulled[c]; ok {
				add(prev, "null-before-drop", SevWarning,
					"UPDATE %s SET %s = NULL rewrites every row under a lock only to have line %d drop the column; remove the UPDATE", c.Table, c.Column, in.Line)
			}
		}
		if in.Destructive() {
			what := in.Kind
			switch {
			case len(in.DropTables) > 0:
				what = fmt.Sprintf("drops table %v", in.DropTables)
			case len(in.DropColumns) > 0:
				what = fmt.Sprintf("drops column(s) %v", in.DropColumns)
			case len(in.NullingColumns) > 0:
				what = fmt.Sprintf("sets column(s) %v to NULL in every row", in.NullingColumns)
			}
			add(in, "destructive", SevInfo, "destroys data: %s; a snapshot is taken before an undo unless --snapshot=none", what)
		}
		if in.DropWithoutIfExists {
			add(in, "drop-without-if-exists", SevWarning, "DROP without IF EXISTS: a re-run after a partial failure fails; add IF EXISTS")
		}
		if in.AccessExclusive {
			add(in, "access-exclusive", SevWarning, "takes an ACCESS EXCLUSIVE lock on %v: reads and writes wait while it runs or waits (the undo's lock_timeout bounds the wait)", in.Tables)
		}
		if in.NonTransactional {
			add(in, "non-transactional", SevWarning, "cannot run in a transaction: it runs alone, outside the undo's transaction")
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out, nil
}

// LintScriptFor lints one script for engine (LintPostgres, LintMariaDB or
// LintMySQL).
func LintScriptFor(file, script, engine string) ([]Finding, error) {
	if engine == LintMariaDB || engine == LintMySQL {
		return LintMySQLScript(file, script, engine), nil
	}
	return LintScript(file, script)
}

// LintSourceFor lints every undo script of a directory for engine.
func LintSourceFor(src *Source, engine string) ([]Finding, error) {
	var out []Finding
	for _, m := range src.Migrations {
		if m.Undo == nil {
			out = append(out, Finding{File: m.Up.Path, Line: 1, Rule: "missing-undo", Severity: SevError,
				Message: fmt.Sprintf("version %s has no undo script: it cannot be rolled back", m.Version)})
			continue
		}
		b, err := os.ReadFile(m.Undo.Path)
		if err != nil {
			return nil, err
		}
		fs, err := LintScriptFor(m.Undo.Path, string(b), engine)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}
