package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
)

// On MySQL and MariaDB every DDL statement commits on its own: a down
// script killed half-way leaves the schema between two versions. The undo
// journals each statement before and after it runs; a statement journaled
// as started but not finished is judged here, from information_schema,
// before anything runs again: done, not run, or something a person must
// look at.

// Effect is what the live schema says about a statement.
type Effect int

// Effects.
const (
	EffectUnknown Effect = iota // the statement's effect cannot be read from the schema
	EffectDone                  // every change the statement makes is there
	EffectNotRun                // none of it is there
	EffectPartial               // some of it: a person must look
)

func (e Effect) String() string {
	return [...]string{"cannot tell", "done", "not run", "partly there"}[e]
}

// StatementKind says how a statement of a MySQL script runs.
type StatementKind int

// Statement kinds.
const (
	KindDDL     StatementKind = iota // commits by itself; judged by its effect
	KindDML                          // runs in a transaction with its journal row
	KindSession                      // sets session state: runs again on every resume
)

var (
	dmlRe     = regexp.MustCompile(`(?is)^(insert|update|delete|replace)\b`)
	setRe     = regexp.MustCompile(`(?is)^set\s`)
	globalRe  = regexp.MustCompile(`(?is)^set\s+(global\s|@@global\.|persist\s|persist_only\s|@@persist)`)
	refusedRe = regexp.MustCompile(`(?is)^(use\s|set\s+(session\s+|@@session\.|@@)?autocommit\b|(start\s+transaction|begin|commit|rollback)\b|lock\s+tables?\b)`)
)

// RefusedInUndo says why a statement cannot be part of a journaled undo
// ("" when it can): USE would move the journal and the history fix to
// another database; autocommit and transaction control would leave the
// journal's own writes uncommitted or commit them early.
func RefusedInUndo(stmt string) string {
	if refusedRe.MatchString(stripMySQLComments(stmt)) {
		return "rollback runs a MySQL down script statement by statement in the connection string's database, each with its own journal entry: remove USE, autocommit, transaction control and LOCK TABLES from it"
	}
	return ""
}

// ClassifyMySQL says how stmt runs in an undo.
func ClassifyMySQL(stmt string) StatementKind {
	s := stripMySQLComments(stmt)
	switch {
	case dmlRe.MatchString(s):
		return KindDML
	case setRe.MatchString(s) && !globalRe.MatchString(s):
		return KindSession // SET of anything but the server's: this session's
	}
	return KindDDL
}

// stripMySQLComments drops leading comments (-- , #, /* */ but not /*! */).
func stripMySQLComments(sql string) string {
	for {
		t := strings.TrimLeft(sql, " \t\r\n")
		switch {
		case strings.HasPrefix(t, "--") || strings.HasPrefix(t, "#"):
			i := strings.IndexByte(t, '\n')
			if i < 0 {
				return ""
			}
			sql = t[i+1:]
		case strings.HasPrefix(t, "/*") && !strings.HasPrefix(t, "/*!"):
			i := strings.Index(t, "*/")
			if i < 0 {
				return ""
			}
			sql = t[i+2:]
		default:
			return t
		}
	}
}

// check is one fact a statement leaves in the schema.
type check struct {
	what   string // "column", "index", "table", "constraint", "type", "default"
	table  string
	name   string
	want   bool   // present (true) or absent (false)
	detail string // type or default text, for "type" and "default"
}

const myIdent = "(`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
const myQualified = "((?:" + myIdent + `\s*\.\s*)?` + myIdent + ")"

var (
	createTableRe = regexp.MustCompile(`(?is)^create\s+(?:temporary\s+)?table\s+(?:if\s+not\s+exists\s+)?` + myQualified)
	dropTableRe   = regexp.MustCompile(`(?is)^drop\s+(?:temporary\s+)?tables?\s+(?:if\s+exists\s+)?(.+?)(?:\s+(?:restrict|cascade))?$`)
	renameTableRe = regexp.MustCompile(`(?is)^rename\s+tables?\s+(.+)$`)
	createIndexRe = regexp.MustCompile(`(?is)^create\s+(?:or\s+replace\s+)?(?:unique\s+|fulltext\s+|spatial\s+)?index\s+(?:if\s+not\s+exists\s+)?` + myIdent + `\s+(?:using\s+\w+\s+)?on\s+` + myQualified)
	dropIndexRe   = regexp.MustCompile(`(?is)^drop\s+index\s+(?:if\s+exists\s+)?` + myIdent + `\s+on\s+` + myQualified)
	createViewRe  = regexp.MustCompile(`(?is)^create\s+(?:algorithm\s*=\s*\w+\s+)?(?:definer\s*=\s*\S+\s+)?(?:sql\s+security\s+\w+\s+)?view\s+(?:if\s+not\s+exists\s+)?` + myQualified)
	dropViewRe    = regexp.MustCompile(`(?is)^drop\s+view\s+(?:if\s+exists\s+)?(.+?)(?:\s+(?:restrict|cascade))?$`)
	alterTableRe  = regexp.MustCompile(`(?is)^alter\s+(?:online\s+)?(?:ignore\s+)?table\s+(?:if\s+exists\s+)?` + myQualified + `\s+(.*)$`)

	addIndexRe      = regexp.MustCompile(`(?is)^add\s+(?:unique\s+|fulltext\s+|spatial\s+)?(?:index|key)\s+(?:if\s+not\s+exists\s+)?` + myIdent)
	addUniqueRe     = regexp.MustCompile(`(?is)^add\s+unique\s+(?:if\s+not\s+exists\s+)?` + myIdent + `\s*\(`)
	addConstraintRe = regexp.MustCompile(`(?is)^add\s+constraint\s+(?:if\s+not\s+exists\s+)?` + myIdent)
	dropIndexCl     = regexp.MustCompile(`(?is)^drop\s+(?:index|key)\s+(?:if\s+exists\s+)?` + myIdent)
	dropConstrRe    = regexp.MustCompile(`(?is)^drop\s+(?:foreign\s+key|constraint|check)\s+(?:if\s+exists\s+)?` + myIdent)
	renameColRe     = regexp.MustCompile(`(?is)^rename\s+column\s+` + myIdent + `\s+to\s+` + myIdent)
	renameToRe      = regexp.MustCompile(`(?is)^rename\s+(?:to\s+|as\s+)?` + myQualified + `$`)
	changeColRe     = regexp.MustCompile(`(?is)^change\s+(?:column\s+)?(?:if\s+exists\s+)?` + myIdent + `\s+` + myIdent + `\s+(\S+)`)
	modifyColRe     = regexp.MustCompile(`(?is)^modify\s+(?:column\s+)?(?:if\s+exists\s+)?` + myIdent + `\s+(\S+)`)
	alterDefaultRe  = regexp.MustCompile(`(?is)^alter\s+(?:column\s+)?` + myIdent + `\s+(set\s+default\s+(.+)|drop\s+default)$`)
	addColumnRe     = regexp.MustCompile(`(?is)^add\s+(?:column\s+)?(?:if\s+not\s+exists\s+)?` + myIdent + `\s+\S`)
	dropColumnRe    = regexp.MustCompile(`(?is)^drop\s+(?:column\s+)?(?:if\s+exists\s+)?` + myIdent + `$`)
	notColumnWord   = regexp.MustCompile(`(?i)^(index|key|unique|fulltext|spatial|constraint|primary|foreign|partition|check|period|system)$`)
	algoClauseRe    = regexp.MustCompile(`(?is)^(algorithm|lock)\s*=?\s*\w+$`)
)

// keywordName: a bare keyword where a name may stand (ADD UNIQUE KEY (c),
// ADD CONSTRAINT FOREIGN KEY …): the object is unnamed and its effect
// cannot be looked up.
var keywordName = regexp.MustCompile(`(?i)^(key|index|foreign|check|unique|primary|constraint|using|fulltext|spatial)$`)

func named(id string) bool { return !keywordName.MatchString(id) }

func unquote(id string) string {
	if len(id) >= 2 && strings.HasPrefix(id, "`") && strings.HasSuffix(id, "`") {
		return strings.ReplaceAll(id[1:len(id)-1], "``", "`")
	}
	return id
}

// lastPart is the table of a possibly database-qualified name.
func lastPart(q string) string {
	parts := splitTop(q, '.')
	return unquote(strings.TrimSpace(parts[len(parts)-1]))
}

// qualifiedElsewhere: the name is qualified with a database (its effect
// would be looked up in the wrong one).
func qualifiedElsewhere(q string) bool { return len(splitTop(q, '.')) > 1 }

// splitTop splits s at sep outside parentheses, quotes and backticks.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote != '`' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"' || c == '`':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == sep && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// effectChecks lists the facts stmt leaves in the schema; ok is false
// when they cannot be read from it.
func effectChecks(stmt string) (checks []check, ok bool) {
	s := strings.TrimRight(stripAllMySQLComments(stmt), "; \t\r\n")
	qualified := false
	names := func(list string) []string {
		var out []string
		for _, n := range splitTop(list, ',') {
			qualified = qualified || qualifiedElsewhere(strings.TrimSpace(n))
			out = append(out, lastPart(n))
		}
		return out
	}
	defer func() {
		if qualified {
			checks, ok = nil, false
		}
	}()
	switch {
	case createTableRe.MatchString(s):
		m := createTableRe.FindStringSubmatch(s)[1]
		qualified = qualifiedElsewhere(m)
		return []check{{what: "table", table: lastPart(m), want: true}}, true
	case dropTableRe.MatchString(s):
		for _, t := range names(dropTableRe.FindStringSubmatch(s)[1]) {
			checks = append(checks, check{what: "table", table: t})
		}
		return checks, true
	case renameTableRe.MatchString(s):
		for _, pair := range splitTop(renameTableRe.FindStringSubmatch(s)[1], ',') {
			from, to, found := cutFold(pair, " to ")
			if !found {
				return nil, false
			}
			qualified = qualified || qualifiedElsewhere(strings.TrimSpace(from)) || qualifiedElsewhere(strings.TrimSpace(to))
			checks = append(checks, check{what: "table", table: lastPart(from)}, check{what: "table", table: lastPart(to), want: true})
		}
		return checks, true
	case createIndexRe.MatchString(s):
		m := createIndexRe.FindStringSubmatch(s)
		qualified = qualifiedElsewhere(m[2])
		return []check{{what: "index", name: unquote(m[1]), table: lastPart(m[2]), want: true}}, named(m[1])
	case dropIndexRe.MatchString(s):
		m := dropIndexRe.FindStringSubmatch(s)
		qualified = qualifiedElsewhere(m[2])
		return []check{{what: "index", name: unquote(m[1]), table: lastPart(m[2])}}, true
	case createViewRe.MatchString(s) && !regexp.MustCompile(`(?i)^create\s+or\s+replace`).MatchString(s):
		m := createViewRe.FindStringSubmatch(s)[1]
		qualified = qualifiedElsewhere(m)
		return []check{{what: "table", table: lastPart(m), want: true}}, true
	case dropViewRe.MatchString(s):
		for _, t := range names(dropViewRe.FindStringSubmatch(s)[1]) {
			checks = append(checks, check{what: "table", table: t})
		}
		return checks, true
	case alterTableRe.MatchString(s):
		m := alterTableRe.FindStringSubmatch(s)
		qualified = qualifiedElsewhere(m[1])
		table := lastPart(m[1])
		for _, cl := range splitTop(m[len(m)-1], ',') {
			cl = strings.TrimSpace(cl)
			c, ok := clauseCheck(table, cl)
			if !ok {
				return nil, false
			}
			checks = append(checks, c...)
		}
		return checks, len(checks) > 0
	}
	return nil, false
}

func cutFold(s, sep string) (before, after string, found bool) {
	i := strings.Index(strings.ToLower(s), sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// clauseCheck is the fact one ALTER TABLE clause leaves.
func clauseCheck(table, cl string) ([]check, bool) {
	first := strings.Fields(cl + " x")
	second := ""
	if len(first) > 2 {
		second = first[1]
	}
	switch {
	case algoClauseRe.MatchString(cl):
		return nil, true // ALGORITHM=…, LOCK=…: no fact of its own
	case addIndexRe.MatchString(cl):
		n := addIndexRe.FindStringSubmatch(cl)[1]
		return []check{{what: "index", table: table, name: unquote(n), want: true}}, named(n)
	case addUniqueRe.MatchString(cl):
		n := addUniqueRe.FindStringSubmatch(cl)[1]
		return []check{{what: "index", table: table, name: unquote(n), want: true}}, named(n)
	case addConstraintRe.MatchString(cl):
		n := addConstraintRe.FindStringSubmatch(cl)[1]
		return []check{{what: "constraint", table: table, name: unquote(n), want: true}}, named(n)
	case dropIndexCl.MatchString(cl):
		return []check{{what: "index", table: table, name: unquote(dropIndexCl.FindStringSubmatch(cl)[1])}}, true
	case dropConstrRe.MatchString(cl):
		return []check{{what: "constraint", table: table, name: unquote(dropConstrRe.FindStringSubmatch(cl)[1])}}, true
	case renameColRe.MatchString(cl):
		m := renameColRe.FindStringSubmatch(cl)
		return []check{{what: "column", table: table, name: unquote(m[1])}, {what: "column", table: table, name: unquote(m[2]), want: true}}, true
	case changeColRe.MatchString(cl):
		m := changeColRe.FindStringSubmatch(cl)
		from, to := unquote(m[1]), unquote(m[2])
		if !strings.EqualFold(from, to) {
			return []check{{what: "column", table: table, name: from}, {what: "column", table: table, name: to, want: true}}, true
		}
		// Only a bare type change can be read back: NULL, DEFAULT and the
		// rest of a definition are not compared.
		return []check{{what: "type", table: table, name: to, want: true, detail: m[3]}}, bareType(cl, m[0])
	case modifyColRe.MatchString(cl):
		m := modifyColRe.FindStringSubmatch(cl)
		return []check{{what: "type", table: table, name: unquote(m[1]), want: true, detail: m[2]}}, bareType(cl, m[0])
	case alterDefaultRe.MatchString(cl):
		m := alterDefaultRe.FindStringSubmatch(cl)
		if m[3] == "" {
			return []check{{what: "default", table: table, name: unquote(m[1]), want: false}}, true
		}
		return []check{{what: "default", table: table, name: unquote(m[1]), want: true, detail: strings.TrimSpace(m[3])}}, true
	case strings.EqualFold(first[0], "rename") && renameToRe.MatchString(cl):
		return []check{{what: "table", table: table}, {what: "table", table: lastPart(renameToRe.FindStringSubmatch(cl)[1]), want: true}}, true
	case strings.EqualFold(first[0], "add") && !notColumnWord.MatchString(second) && second != "(" && addColumnRe.MatchString(cl):
		name := addColumnRe.FindStringSubmatch(cl)[1]
		if strings.EqualFold(name, "column") {
			return nil, false
		}
		return []check{{what: "column", table: table, name: unquote(name), want: true}}, true
	case strings.EqualFold(first[0], "drop") && !notColumnWord.MatchString(second) && dropColumnRe.MatchString(cl):
		return []check{{what: "column", table: table, name: unquote(dropColumnRe.FindStringSubmatch(cl)[1])}}, true
	}
	return nil, false
}

// bareType: the clause ends with its type (nothing after what matched).
func bareType(clause, matched string) bool { return strings.TrimSpace(clause[len(matched):]) == "" }

// stripAllMySQLComments removes -- , # and /* */ comments (not /*! */)
// outside quotes.
func stripAllMySQLComments(sql string) string {
	var b strings.Builder
	var quote byte
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case quote != 0:
			b.WriteByte(c)
			if c == '\\' && quote != '`' && i+1 < len(sql) {
				i++
				b.WriteByte(sql[i])
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"' || c == '`':
			quote = c
			b.WriteByte(c)
		case c == '#' || c == '-' && strings.HasPrefix(sql[i:], "-- ") || c == '-' && strings.HasPrefix(sql[i:], "--\n"):
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			b.WriteByte('\n')
		case c == '/' && strings.HasPrefix(sql[i:], "/*") && !strings.HasPrefix(sql[i:], "/*!"):
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return strings.TrimSpace(b.String())
			}
			i += 2 + end + 1
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// effect reads stmt's effect from the live schema.
func (m *MySQL) effect(ctx context.Context, stmt string) (Effect, string, error) {
	checks, ok := effectChecks(stmt)
	if !ok {
		return EffectUnknown, "rollback cannot read this statement's effect from information_schema", nil
	}
	var there, missing []string
	for _, c := range checks {
		present, err := m.fact(ctx, c)
		if err != nil {
			return EffectUnknown, "", err
		}
		desc := describeCheck(c)
		if present == c.want {
			there = append(there, desc)
		} else {
			missing = append(missing, desc)
		}
	}
	switch {
	case len(missing) == 0:
		return EffectDone, "in information_schema: " + strings.Join(there, "; "), nil
	case len(there) == 0:
		return EffectNotRun, "not in information_schema: " + strings.Join(missing, "; "), nil
	}
	return EffectPartial, "in information_schema: " + strings.Join(there, "; ") + "; but not: " + strings.Join(missing, "; "), nil
}

func describeCheck(c check) string {
	state := "absent"
	if c.want {
		state = "present"
	}
	switch c.what {
	case "table":
		return fmt.Sprintf("table %s %s", c.table, state)
	case "type":
		return fmt.Sprintf("column %s.%s of type %s", c.table, c.name, c.detail)
	case "default":
		if !c.want {
			return fmt.Sprintf("column %s.%s without a default", c.table, c.name)
		}
		return fmt.Sprintf("column %s.%s default %s", c.table, c.name, c.detail)
	}
	return fmt.Sprintf("%s %s.%s %s", c.what, c.table, c.name, state)
}

// fact reports whether c's object is present (for "type" and "default":
// whether the column has that type or default).
func (m *MySQL) fact(ctx context.Context, c check) (bool, error) {
	var n int
	var err error
	switch c.what {
	case "table":
		err = m.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, c.table).Scan(&n)
	case "column":
		err = m.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?`, c.table, c.name).Scan(&n)
	case "index":
		err = m.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ?`, c.table, c.name).Scan(&n)
	case "constraint":
		err = m.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = ?`, c.table, c.name).Scan(&n)
	case "type":
		var typ string
		err = m.conn.QueryRowContext(ctx, `SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?`, c.table, c.name).Scan(&typ)
		if err == sql.ErrNoRows {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return sameColumnType(typ, c.detail), nil
	case "default":
		var def sql.NullString
		err = m.conn.QueryRowContext(ctx, `SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?`, c.table, c.name).Scan(&def)
		if err == sql.ErrNoRows {
			return false, nil
		}
		if !c.want {
			return !def.Valid || strings.EqualFold(def.String, "NULL"), err
		}
		return def.Valid && strings.Trim(def.String, "'") == strings.Trim(c.detail, "'"), err
	}
	return n > 0, err
}

var intDisplayWidth = regexp.MustCompile(`^(tinyint|smallint|mediumint|int|integer|bigint)\(\d+\)`)

// sameColumnType compares information_schema's COLUMN_TYPE with the type
// a statement names ("VARCHAR(100)", "INT"): case, an integer's display
// width (MariaDB keeps it, MySQL 8 drops it) and INTEGER = INT aside.
func sameColumnType(got, want string) bool {
	g := strings.ToLower(strings.TrimSpace(got))
	w := strings.ToLower(strings.TrimSpace(want))
	w = strings.TrimSuffix(strings.TrimSuffix(w, ","), ";")
	if !strings.Contains(w, "(") {
		g = intDisplayWidth.ReplaceAllString(g, "$1")
	}
	if f := strings.Fields(g); len(f) > 0 {
		g = f[0]
	}
	if w == "integer" {
		w = "int"
	}
	if w == "bool" || w == "boolean" {
		w = "tinyint(1)"
	}
	return g == w
}
