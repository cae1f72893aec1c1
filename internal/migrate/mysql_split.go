package migrate

import "strings"

// SplitMySQL cuts a MySQL or MariaDB script into statements as the
// mariadb client does: at the delimiter (';', or what a DELIMITER line
// sets) outside quotes ('…' and "…" with backslash escapes, `…`) and
// comments (-- , # and /* */). Executable comments (/*! … */) stay in their
// statement. Empty statements are dropped.
func SplitMySQL(script string) []Statement {
	var out []Statement
	delim := ";"
	line, start, startLine := 1, 0, 1
	inStmt := false
	flush := func(end int) {
		s := strings.TrimSpace(script[start:end])
		if s != "" && !onlyMySQLComments(s) {
			out = append(out, Statement{SQL: s, Line: startLine})
		}
	}
	i := 0
	for i < len(script) {
		c := script[i]
		// DELIMITER x, on a line of its own, outside a statement.
		if !inStmt {
			rest := script[i:]
			if len(rest) > 10 && strings.EqualFold(rest[:10], "delimiter ") {
				end := strings.IndexByte(rest, '\n')
				if end < 0 {
					end = len(rest)
				}
				if d := strings.TrimSpace(rest[10:end]); d != "" {
					delim = d
				}
				i += end
				start = i
				continue
			}
		}
		lineComment := c == '#' || c == '-' && strings.HasPrefix(script[i:], "-- ") || c == '-' && (strings.HasPrefix(script[i:], "--\n") || script[i:] == "--")
		blockComment := c == '/' && strings.HasPrefix(script[i:], "/*") && !strings.HasPrefix(script[i:], "/*!")
		if !inStmt && !isSpace(c) && !lineComment && !blockComment {
			inStmt, startLine, start = true, line, i
		}
		switch {
		case c == '\n':
			line++
			i++
		case lineComment:
			for i < len(script) && script[i] != '\n' {
				i++
			}
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			end := strings.Index(script[i+2:], "*/")
			body := script[i:]
			if end >= 0 {
				body = script[i : i+2+end+2]
			}
			line += strings.Count(body, "\n")
			i += len(body)
		case c == '\'' || c == '"' || c == '`':
			i++
			for i < len(script) {
				ch := script[i]
				if ch == '\n' {
					line++
				}
				if ch == '\\' && c != '`' && i+1 < len(script) {
					if script[i+1] == '\n' {
						line++
					}
					i += 2
					continue
				}
				if ch == c {
					if i+1 < len(script) && script[i+1] == c { // doubled quote
						i += 2
						continue
					}
					i++
					break
				}
				i++
			}
		case inStmt && strings.HasPrefix(script[i:], delim):
			flush(i)
			inStmt = false
			i += len(delim)
			start = i
		default:
			i++
		}
	}
	if inStmt {
		flush(len(script))
	}
	return out
}

func onlyMySQLComments(s string) bool {
	for _, st := range strings.Split(s, "\n") {
		t := strings.TrimSpace(st)
		if t != "" && !strings.HasPrefix(t, "--") && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}
