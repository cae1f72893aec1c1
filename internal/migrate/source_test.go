package migrate

import (
	"hash/crc32"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		name     string
		rollback bool
		kind     Kind
		format   Format
		version  string
		desc     string
		bad      string
	}{
		{name: "V1_2_0__add_transaction_category.sql", kind: KindVersioned, format: Flyway, version: "1.2.0", desc: "add transaction category"},
		{name: "V1.2.0__add_x.sql", kind: KindVersioned, format: Flyway, version: "1.2.0", desc: "add x"},
		{name: "V2__init.sql", kind: KindVersioned, format: Flyway, version: "2", desc: "init"},
		{name: "U1_2_0__add_x.sql", kind: KindUndo, format: Flyway, version: "1.2.0", desc: "add x"},
		{name: "R__views.sql", kind: KindRepeatable, format: Flyway, desc: "views"},
		{name: "V1_2_0__Undo__add_transaction_category.sql", rollback: true, kind: KindManualUndo, format: Flyway, version: "1.2.0", desc: "add transaction category"},
		{name: "20240101120000_add_x.up.sql", kind: KindVersioned, format: GolangMigrate, version: "20240101120000", desc: "add x"},
		{name: "3_add_x.down.sql", kind: KindUndo, format: GolangMigrate, version: "3", desc: "add x"},
		{name: "V1_2_0_add_x.sql", bad: "not a migration file name"},
		{name: "V__x.sql", bad: "not a migration file name"},
		{name: "V1..2__x.sql", bad: "invalid version"},
		{name: "V1_2__.sql", bad: "not a migration file name"},
		{name: "add_x.sql", bad: "not a migration file name"},
		{name: "V1_2_0__add_x.sql", rollback: true, bad: "not an undo script name"},
		{name: "99999999999999999999_x.up.sql", bad: "not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, format, err := ParseName(tt.name, tt.rollback)
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tt.bad) || !strings.Contains(err.Error(), tt.name) {
					t.Fatalf("got %v, want an error naming the file and containing %q", err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Kind != tt.kind || format != tt.format || f.Description != tt.desc || (tt.version != "" && f.Version.String() != tt.version) {
				t.Errorf("got %s %s %q %q, want %s %s %q %q", f.Kind, format, f.Version, f.Description, tt.kind, tt.format, tt.version, tt.desc)
			}
		})
	}
}

func TestLoadDirErrors(t *testing.T) {
	tests := []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"V1__a.sql": "", "V1_0__b.sql": ""}, "duplicate version 1"},
		{map[string]string{"V1__a.sql": "", "1_a.up.sql": ""}, "keep one layout per directory"},
		{map[string]string{"V1__a.sql": "", "notes.sql": ""}, "notes.sql: not a migration file name"},
		{map[string]string{"V1__a.sql": "", "U2__b.sql": ""}, "no forward migration"},
		{map[string]string{"V1__a.sql": "", "U1__a.sql": "", "rollback/V1__Undo__a.sql": ""}, "two undo scripts for version 1"},
	}
	for _, tt := range tests {
		_, err := LoadDir(writeFiles(t, tt.files))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("files %v: got %v, want %q", tt.files, err, tt.want)
		}
	}
	src, err := LoadDir(writeFiles(t, map[string]string{"V1__a.sql": "", "V2__b.sql": "", "U2__b.sql": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Warnings) != 1 || !strings.Contains(src.Warnings[0], "V1__a.sql has no undo script") {
		t.Errorf("warnings %v, want one for V1__a.sql", src.Warnings)
	}
}

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.2.0", "1.2", 0}, {"1.10", "1.9", 1}, {"1_2_0", "1.2.1", -1}, {"20240101", "3", 1},
	}
	for _, tt := range tests {
		if got := MustVersion(tt.a).Compare(MustVersion(tt.b)); got != tt.want {
			t.Errorf("%s vs %s = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestFlywayChecksum(t *testing.T) {
	lines := []string{"-- add a column", "ALTER TABLE t ADD COLUMN c text;", ""}
	want := int32(crc32.ChecksumIEEE([]byte(strings.Join(lines, ""))))
	for name, body := range map[string]string{
		"LF":   strings.Join(lines, "\n"),
		"CRLF": strings.Join(lines, "\r\n"),
		"CR":   strings.Join(lines, "\r"),
		"BOM":  "\xef\xbb\xbf" + strings.Join(lines, "\n"),
	} {
		if got := FlywayChecksum([]byte(body)); got != want {
			t.Errorf("%s: got %d, want %d", name, got, want)
		}
	}
	if FlywayChecksum([]byte("SELECT 1;")) == FlywayChecksum([]byte("SELECT 2;")) {
		t.Error("different scripts, same checksum")
	}
	// Known value: CRC32("SELECT 1;") as a signed int.
	if got := FlywayChecksum([]byte("SELECT 1;\n")); got != int32(crc32.ChecksumIEEE([]byte("SELECT 1;"))) {
		t.Errorf("got %d", got)
	}
}

func TestSplit(t *testing.T) {
	script := `-- Step 1
UPDATE transactions SET category = NULL;
/* a ; b /* nested ; */ */
CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
INSERT INTO t VALUES ('a;b', 'it''s; fine', E'x');
SELECT "we;ird" FROM t;
-- trailing comment only`
	got := Split(script)
	if len(got) != 4 {
		for _, s := range got {
			t.Logf("%d: %q", s.Line, s.SQL)
		}
		t.Fatalf("got %d statements, want 4", len(got))
	}
	if got[0].Line != 2 || !strings.HasSuffix(got[0].SQL, "SET category = NULL") {
		t.Errorf("first: %+v", got[0])
	}
	if !strings.Contains(got[1].SQL, "$body$ SELECT 1; $body$") || got[1].Line != 4 {
		t.Errorf("dollar-quoted body split or wrong line: %+v", got[1])
	}
	if !strings.Contains(got[2].SQL, "'it''s; fine'") || got[3].Line != 6 {
		t.Errorf("quotes: %+v %+v", got[2], got[3])
	}
}

// FuzzSplit: splitting never loses non-space text outside of statements
// except separators and comments, and never returns an empty statement.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"SELECT 1; SELECT 2", "$a$;$a$;", "'';\"\";", "/* /* */ ; */ x;", "-- c\n;", "$1;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		total := 0
		for _, st := range Split(script) {
			if strings.TrimSpace(st.SQL) == "" {
				t.Fatalf("empty statement from %q", script)
			}
			if st.Line < 1 || st.Line > strings.Count(script, "\n")+1 {
				t.Fatalf("line %d out of range for %q", st.Line, script)
			}
			if !strings.Contains(script, st.SQL) {
				t.Fatalf("statement %q is not a substring of %q", st.SQL, script)
			}
			total += len(st.SQL)
		}
		if total > len(script) {
			t.Fatalf("statements longer than the script")
		}
	})
}

// FuzzParseName: an accepted name round-trips its version, and every
// rejection names the file.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"V1_2_0__add_x.sql", "U1__x.sql", "R__v.sql", "1_a.up.sql", "V1..2__x.sql", "V1__Undo__x.sql"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, name string, rollback bool) {
		file, _, err := ParseName(name, rollback)
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error %q does not name %q", err, name)
			}
			return
		}
		if file.Kind != KindRepeatable {
			v, err := ParseVersion(file.Version.String())
			if err != nil || v.Compare(file.Version) != 0 {
				t.Fatalf("version %s of %q does not round-trip", file.Version, name)
			}
		}
	})
}
