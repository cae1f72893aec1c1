package migrate

import "strings"

// Statement is one SQL statement of a script with the line it starts on.
type Statement struct {
	SQL  string
	Line int
}

// Split cuts a SQL script into statements at top-level semicolons, keeping
// quoted strings, quoted identifiers, dollar-quoted bodies and comments
// (nested block comments included) intact. Empty statements are dropped.
func Split(script string) []Statement {
	var out []Statement
	line, start, startLine := 1, 0, 1
	inStmt := false
	flush := func(end int) {
		s := strings.TrimSpace(script[start:end])
		if s != "" && !onlyComments(s) {
			out = append(out, Statement{SQL: s, Line: startLine})
		}
	}
	i := 0
	for i < len(script) {
		c := script[i]
		comment := i+1 < len(script) && (c == '-' && script[i+1] == '-' || c == '/' && script[i+1] == '*')
		if !inStmt && !isSpace(c) && !comment {
			inStmt, startLine = true, line
			start = i
		}
		switch {
		case c == '\n':
			line++
			i++
		case c == '-' && i+1 < len(script) && script[i+1] == '-':
			for i < len(script) && script[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(script) && script[i+1] == '*':
			depth := 0
			for i < len(script) {
				if script[i] == '/' && i+1 < len(script) && script[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if script[i] == '*' && i+1 < len(script) && script[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				if script[i] == '\n' {
					line++
				}
				i++
			}
		case c == '\'' || c == '"':
			i++
			for i < len(script) {
				if script[i] == '\n' {
					line++
				}
				if script[i] == c {
					if i+1 < len(script) && script[i+1] == c { // doubled quote
						i += 2
						continue
					}
					i++
					break
				}
				i++
			}
		case c == '$':
			tag, ok := dollarTag(script[i:])
			if !ok {
				i++
				continue
			}
			end := strings.Index(script[i+len(tag):], tag)
			body := script[i:]
			if end >= 0 {
				body = script[i : i+len(tag)+end+len(tag)]
			}
			line += strings.Count(body, "\n")
			i += len(body)
		case c == ';':
			flush(i)
			inStmt = false
			i++
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

// dollarTag returns the $tag$ at the start of s, if s starts with one.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		c := s[j]
		if c == '$' {
			return s[:j+1], true
		}
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || j > 1 && c >= '0' && c <= '9') {
			return "", false
		}
	}
	return "", false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

func onlyComments(s string) bool {
	for _, st := range strings.Split(s, "\n") {
		t := strings.TrimSpace(st)
		if t != "" && !strings.HasPrefix(t, "--") {
			return false
		}
	}
	return strings.HasPrefix(strings.TrimSpace(s), "--")
}
