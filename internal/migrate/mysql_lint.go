package migrate

import (
	"fmt"
	"regexp"
	"strings"
)

// Lint targets: the engine whose online-DDL rules apply.
const (
	LintPostgres = "postgres"
	LintMariaDB  = "mariadb" // MariaDB 10.6 and later (10.11 LTS)
	LintMySQL    = "mysql"   // MySQL 8.0.29 and later
)

// LintEngine is the lint target for a connection string: mariadb for a
// mariadb:// DSN, mysql for mysql:// (the online rules of MariaDB 10.11 and
// MySQL 8 differ where it matters, so say which with --engine), else
// postgres.
func LintEngine(dsn string) string {
	switch {
	case strings.HasPrefix(dsn, "mariadb://"):
		return LintMariaDB
	case strings.HasPrefix(dsn, "mysql://"):
		return LintMySQL
	}
	return LintPostgres
}

var (
	modifyTypeRe = regexp.MustCompile(`(?is)^(modify|change)\s`)
	pkRe         = regexp.MustCompile(`(?is)^(add\s+(constraint\s+\S+\s+)?primary\s+key|drop\s+primary\s+key)`)
	convertRe    = regexp.MustCompile(`(?is)^convert\s+to\s+character\s+set`)
	autoIncRe    = regexp.MustCompile(`(?is)^add\s.*\bauto_increment\b`)
	storedRe     = regexp.MustCompile(`(?is)^(add|modify|change)\s.*\b(as\s*\(|generated\s+always).*\bstored\b`)
	rebuildRe    = regexp.MustCompile(`(?is)^(force|engine\s*=|row_format\s*=|key_block_size\s*=)`)
	fulltextRe   = regexp.MustCompile(`(?is)^add\s+(fulltext|spatial)\b`)
	addFKRe      = regexp.MustCompile(`(?is)^add\s+(constraint\s+\S+\s+)?foreign\s+key`)
	placeRe      = regexp.MustCompile(`(?is)^add\s.*\b(first|after\s+\S+)\s*$`)
	createFTRe   = regexp.MustCompile(`(?is)^create\s+(fulltext|spatial)\s+index`)
	lockTablesRe = regexp.MustCompile(`(?is)^(lock\s+tables?|flush\s+tables?\b.*\bwith\s+read\s+lock)`)
	optimizeRe   = regexp.MustCompile(`(?is)^optimize\s+(no_write_to_binlog\s+|local\s+)?table`)
	truncateRe   = regexp.MustCompile(`(?is)^truncate\s`)
	deleteAllRe  = regexp.MustCompile(`(?is)^delete\s+from\s+\S+\s*$`)
	fkChecksOff  = regexp.MustCompile(`(?is)^set\s+(session\s+)?(@@session\.)?foreign_key_checks\s*=\s*(0|off)`)
)

// LintMySQLScript checks one script against the online-DDL rules of
// MariaDB 10.11 (engine mariadb) or MySQL 8 (engine mysql):
//   - copy-table: the statement needs ALGORITHM=COPY: the table is copied
//     and writes to it wait for the whole copy;
//   - shared-lock: at best LOCK=SHARED (FULLTEXT and SPATIAL indexes):
//     reads go on, writes wait;
//   - rebuild: runs in place with writes allowed, but rebuilds the table
//     (time and I/O grow with it);
//   - foreign-key: adding a foreign key with foreign_key_checks on copies
//     the table;
//   - lock-tables: explicit table locks in a migration (an error);
//   - not-atomic: more than one DDL statement: each commits by itself;
//   - destructive: drops or empties data (a snapshot is taken first).
func LintMySQLScript(file, script, engine string) []Finding {
	var out []Finding
	add := func(line int, rule string, sev Severity, format string, a ...any) {
		out = append(out, Finding{File: file, Line: line, Rule: rule, Severity: sev, Message: fmt.Sprintf(format, a...)})
	}
	name := "MariaDB 10.11"
	if engine == LintMySQL {
		name = "MySQL 8"
	}
	ddl := 0
	fkOff := false
	for _, st := range SplitMySQL(script) {
		s := strings.TrimRight(stripMySQLComments(st.SQL), "; \t\r\n")
		switch ClassifyMySQL(st.SQL) {
		case KindSession:
			if fkChecksOff.MatchString(s) {
				fkOff = true
			}
			continue
		case KindDML:
			if deleteAllRe.MatchString(s) {
				add(st.Line, "destructive", SevInfo, "deletes every row; a snapshot is taken before an undo unless --snapshot=none")
			}
			continue
		}
		ddl++
		switch {
		case lockTablesRe.MatchString(s):
			add(st.Line, "lock-tables", SevError, "explicit table locks in a migration stall every session that touches the tables; remove them (the undo bounds its own lock waits)")
			continue
		case optimizeRe.MatchString(s):
			add(st.Line, "rebuild", SevWarning, "OPTIMIZE TABLE rebuilds the table; it does not belong in a rollback")
			continue
		case truncateRe.MatchString(s):
			add(st.Line, "destructive", SevInfo, "empties the table; a snapshot is taken before an undo unless --snapshot=none")
			continue
		case createFTRe.MatchString(s):
			add(st.Line, "shared-lock", SevWarning, "a FULLTEXT or SPATIAL index is built with LOCK=SHARED at best on %s: writes to the table wait until it is built", name)
			continue
		}
		if m := dropTableRe.FindStringSubmatch(s); m != nil {
			add(st.Line, "destructive", SevInfo, "drops table(s) %s and their rows; a snapshot is taken before an undo unless --snapshot=none", strings.TrimSpace(m[1]))
			continue
		}
		m := alterTableRe.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		table := lastPart(m[1])
		for _, cl := range splitTop(m[len(m)-1], ',') {
			cl = strings.TrimSpace(cl)
			switch {
			case convertRe.MatchString(cl):
				add(st.Line, "copy-table", SevWarning, "CONVERT TO CHARACTER SET copies %s (ALGORITHM=COPY on %s): writes wait for the whole copy", table, name)
			case pkRe.MatchString(cl):
				add(st.Line, "copy-table", SevWarning, "changing the primary key of %s rebuilds it; dropping it without adding one copies it (ALGORITHM=COPY on %s)", table, name)
			case autoIncRe.MatchString(cl):
				add(st.Line, "copy-table", SevWarning, "adding an AUTO_INCREMENT column copies %s (ALGORITHM=COPY on %s)", table, name)
			case storedRe.MatchString(cl):
				add(st.Line, "copy-table", SevWarning, "a STORED generated column copies %s (ALGORITHM=COPY on %s)", table, name)
			case modifyTypeRe.MatchString(cl):
				add(st.Line, "copy-table", SevWarning, "%s: changing a column's type copies %s on %s (only renames, defaults and widening a VARCHAR within its length byte run in place): writes wait for the whole copy", firstLine(cl), table, name)
			case fulltextRe.MatchString(cl):
				add(st.Line, "shared-lock", SevWarning, "a FULLTEXT or SPATIAL index is built with LOCK=SHARED at best on %s: writes to %s wait until it is built", name, table)
			case addFKRe.MatchString(cl) && !fkOff:
				add(st.Line, "foreign-key", SevWarning, "adding a foreign key with foreign_key_checks on copies %s (ALGORITHM=COPY); with SET foreign_key_checks=0 first it runs in place, unchecked", table)
			case rebuildRe.MatchString(cl):
				add(st.Line, "rebuild", SevWarning, "%s rebuilds %s in place: writes go on, but time and I/O grow with the table", firstLine(cl), table)
			case placeRe.MatchString(cl) && engine == LintMySQL:
				add(st.Line, "rebuild", SevInfo, "adding a column FIRST or AFTER another is INSTANT only from MySQL 8.0.29 (at the end only before that); on MariaDB 10.4+ it is INSTANT")
			case dropColumnRe.MatchString(cl) && strings.EqualFold(strings.Fields(cl)[0], "drop") && !notColumnWord.MatchString(strings.Fields(cl + " x")[1]):
				add(st.Line, "destructive", SevInfo, "drops a column of %s and its data; a snapshot is taken before an undo unless --snapshot=none", table)
			}
		}
	}
	if ddl > 1 {
		add(1, "not-atomic", SevInfo, "%d DDL statements: on %s each commits by itself, so a failure half-way leaves the schema between versions (golang-migrate marks it dirty); 'rollback db undo' journals each statement and resumes where it stopped", ddl, name)
	}
	return out
}
