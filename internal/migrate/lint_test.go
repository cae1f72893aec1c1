package migrate

import (
	"strings"
	"testing"
)

func TestLintSeedExample(t *testing.T) {
	fs, err := LintScript("V1_2_0__Undo__add_transaction_category.sql", seedUndo)
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string][]int{}
	for _, f := range fs {
		rules[f.Rule] = append(rules[f.Rule], f.Line)
	}
	if got := rules["null-before-drop"]; len(got) != 1 || got[0] != 4 {
		t.Errorf("null-before-drop at %v, want line 4 (the seed's UPDATE)\n%v", got, fs)
	}
	if got := rules["access-exclusive"]; len(got) != 1 {
		t.Errorf("access-exclusive at %v, want the ALTER TABLE only", got)
	}
	if len(rules["drop-without-if-exists"]) != 0 {
		t.Errorf("the seed uses IF EXISTS; got %v", rules["drop-without-if-exists"])
	}
	if len(rules["destructive"]) != 3 {
		t.Errorf("destructive at %v, want the UPDATE, the DROP COLUMN and the DELETE", rules["destructive"])
	}
}

func TestLintRules(t *testing.T) {
	tests := []struct {
		sql  string
		rule string
		want bool
	}{
		{"DROP TABLE t", "drop-without-if-exists", true},
		{"DROP TABLE IF EXISTS t", "drop-without-if-exists", false},
		{"ALTER TABLE t DROP COLUMN c", "drop-without-if-exists", true},
		{"DROP INDEX CONCURRENTLY i", "non-transactional", true},
		{"DROP INDEX CONCURRENTLY i", "access-exclusive", false},
		{"DROP INDEX i", "access-exclusive", true},
		{"ALTER TABLE t VALIDATE CONSTRAINT c", "access-exclusive", false},
		{"ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id)", "access-exclusive", false},
		{"ALTER TABLE t ALTER COLUMN c TYPE bigint", "access-exclusive", true},
		{"UPDATE t SET c = NULL WHERE id = 1; ALTER TABLE t DROP COLUMN IF EXISTS c", "null-before-drop", false},
		{"UPDATE t SET c = NULL; ALTER TABLE t DROP COLUMN IF EXISTS d", "null-before-drop", false},
		{"UPDATE s.t SET c = NULL; ALTER TABLE s.t DROP COLUMN c", "null-before-drop", true},
		{"TRUNCATE t", "destructive", true},
		{"SELECT 1", "destructive", false},
		{"LOCK TABLE t", "access-exclusive", true},
		{"LOCK TABLE t IN ACCESS SHARE MODE", "access-exclusive", false},
		{"VACUUM t", "non-transactional", true},
	}
	for _, tt := range tests {
		fs, err := LintScript("x.sql", tt.sql)
		if err != nil {
			t.Fatalf("%s: %v", tt.sql, err)
		}
		got := false
		for _, f := range fs {
			got = got || f.Rule == tt.rule
		}
		if got != tt.want {
			t.Errorf("%q: rule %s fired = %v, want %v (%v)", tt.sql, tt.rule, got, tt.want, fs)
		}
	}
}

func TestLintSyntaxError(t *testing.T) {
	_, err := LintScript("bad.sql", "SELECT 1;\nALTER TABL t DROP COLUMN c;")
	if err == nil || !strings.Contains(err.Error(), "bad.sql:2") {
		t.Errorf("got %v, want a syntax error at bad.sql:2", err)
	}
}
