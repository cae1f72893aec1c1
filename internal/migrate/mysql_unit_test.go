package migrate

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"
)

// Both forms golang-migrate and users write, odd passwords, sockets and
// golang-migrate's own parameters; the password never shows.
func TestMySQLConnectionStrings(t *testing.T) {
	for _, c := range []struct {
		dsn, net, addr, user, pass, db string
	}{
		{"mysql://app:s3cr%2Ft@db.internal:3307/payments?tls=skip-verify&x-migrations-table=hist", "tcp", "db.internal:3307", "app", "s3cr/t", "payments"},
		{"mariadb://app@10.0.0.5/payments", "tcp", "10.0.0.5:3306", "app", "", "payments"},
		{"mysql://app:p@ss:w@rd@tcp(db:3306)/payments?x-no-lock=true", "tcp", "db:3306", "app", "p@ss:w@rd", "payments"},
		{"mysql://root@unix(/run/mysqld/mysqld.sock)/app", "unix", "/run/mysqld/mysqld.sock", "root", "", "app"},
		{"mysql://root@localhost/app?socket=/tmp/my%20sock", "unix", "/tmp/my sock", "root", "", "app"},
		{"mysql://u:pw@[::1]:3306/db", "tcp", "[::1]:3306", "u", "pw", "db"},
	} {
		cfg, err := mysqlConfig(c.dsn)
		if err != nil {
			t.Errorf("%s: %v", c.dsn, err)
			continue
		}
		if cfg.Net != c.net || cfg.Addr != c.addr || cfg.User != c.user || cfg.Passwd != c.pass || cfg.DBName != c.db {
			t.Errorf("%s: got %s %s %s %q %s", c.dsn, cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName)
		}
		if DatabaseName(c.dsn) != c.db {
			t.Errorf("%s: DatabaseName %q", c.dsn, DatabaseName(c.dsn))
		}
		safe := SafeDSN(c.dsn)
		if c.pass != "" && strings.Contains(safe, c.pass) {
			t.Errorf("%s: SafeDSN shows the password: %s", c.dsn, safe)
		}
		if red := Redact("connect "+c.dsn+" failed for "+c.pass, c.dsn); c.pass != "" && strings.Contains(red, c.pass) {
			t.Errorf("Redact left the password: %s", red)
		}
	}
	for _, bad := range []string{"mysql://", "mysql://tcp(", "mysql://a@host/db/extra", "postgres://x@y/z"} {
		if _, err := mysqlConfig(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if SafeDSN("mysql://tcp(") != Unparseable {
		t.Errorf("unparseable shows as %q", SafeDSN("mysql://tcp("))
	}
}

// A client program gets the password in a 0600 option file, never argv.
func TestMySQLClientArgsKeepThePasswordOffArgv(t *testing.T) {
	args, cleanup, err := mysqlClientArgs("mysql://app:top%22secret@db:3306/payments", "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(args, " "), "secret") || args[len(args)-1] != "payments" {
		t.Fatalf("argv %v", args)
	}
	file := strings.TrimPrefix(args[0], "--defaults-file=")
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("option file %v %v", fi, err)
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), `password="top\"secret"`) {
		t.Errorf("option file:\n%s", b)
	}
	// The real client reads the file as written.
	if p, err := exec.LookPath("my_print_defaults"); err == nil {
		out, err := exec.Command(p, "--defaults-file="+file, "client").Output()
		if err != nil || !strings.Contains(string(out), `--password=top"secret`) {
			t.Errorf("my_print_defaults: %v %s", err, out)
		}
	}
	cleanup()
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("option file left: %v", err)
	}
}

func TestSplitMySQL(t *testing.T) {
	script := "# a comment; not a statement\n" +
		"-- another;\n" +
		"INSERT INTO t VALUES ('a;b', \"c;d\", 'it\\'s;', 'x''y;');\n" +
		"ALTER TABLE `we;ird` ADD COLUMN `c;` INT; /* trailing; */\n" +
		"/*!40101 SET NAMES utf8mb4 */;\n" +
		"DELIMITER $$\n" +
		"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END$$\n" +
		"DELIMITER ;\n" +
		"DROP TABLE t"
	got := SplitMySQL(script)
	want := []string{
		"INSERT INTO t VALUES ('a;b', \"c;d\", 'it\\'s;', 'x''y;')",
		"ALTER TABLE `we;ird` ADD COLUMN `c;` INT",
		"/*!40101 SET NAMES utf8mb4 */",
		"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END",
		"DROP TABLE t",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d statements: %+v", len(got), got)
	}
	for i := range want {
		if got[i].SQL != want[i] {
			t.Errorf("statement %d: %q, want %q", i, got[i].SQL, want[i])
		}
	}
	if got[0].Line != 3 || got[3].Line != 7 || got[4].Line != 9 {
		t.Errorf("lines %d %d %d", got[0].Line, got[3].Line, got[4].Line)
	}
}

func FuzzSplitMySQL(f *testing.F) {
	f.Add("ALTER TABLE t ADD COLUMN a INT; DROP TABLE `x;y`;")
	f.Add("DELIMITER //\nSELECT 1//\nDELIMITER ;\n# c\nSELECT 'a\\';'")
	f.Add("/* unterminated")
	f.Fuzz(func(t *testing.T, s string) {
		for _, st := range SplitMySQL(s) {
			if strings.TrimSpace(st.SQL) == "" || st.Line < 1 || !strings.Contains(s, st.SQL) {
				t.Fatalf("bad statement %+v of %q", st, s)
			}
			if utf8.ValidString(s) && !utf8.ValidString(st.SQL) {
				t.Fatalf("split inside a rune: %q", st.SQL)
			}
		}
	})
}

func FuzzMySQLConfig(f *testing.F) {
	f.Add("mysql://a:b@tcp(h:1)/d?x-y=z")
	f.Add("mariadb://u:p%40@h/db?socket=/s")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := mysqlConfig("mysql://" + s)
		if err != nil {
			return
		}
		// What is shown reads back as the same database, without the
		// password.
		safe := SafeDSN("mysql://" + s)
		back, err := mysqlConfig(safe)
		if err != nil {
			t.Fatalf("SafeDSN %q does not parse: %v", safe, err)
		}
		if back.Passwd != "" || back.User != cfg.User || back.Addr != cfg.Addr || back.DBName != cfg.DBName {
			t.Fatalf("%q shows as %q: %+v", s, safe, back)
		}
	})
}

// Which facts each kind of DDL leaves, and which the schema cannot show.
func TestEffectChecks(t *testing.T) {
	for _, c := range []struct {
		sql  string
		want string // "" for cannot tell
	}{
		{"CREATE TABLE IF NOT EXISTS `a``b` (id int)", "table a`b present"},
		{"DROP TABLE IF EXISTS x, `y`", "table x absent; table y absent"},
		{"DROP TABLE IF EXISTS db.x, `y`", ""}, // another database's: not looked up in this one
		{"RENAME TABLE a TO b, c TO d", "table a absent; table b present; table c absent; table d present"},
		{"CREATE UNIQUE INDEX i ON t (c)", "index t.i present"},
		{"DROP INDEX `i` ON `t`", "index t.i absent"},
		{"ALTER TABLE t ADD COLUMN c INT, DROP COLUMN d, ADD INDEX ix (c), ALGORITHM=INSTANT", "column t.c present; column t.d absent; index t.ix present"},
		{"ALTER TABLE t RENAME COLUMN a TO b", "column t.a absent; column t.b present"},
		{"ALTER TABLE t CHANGE COLUMN a b INT", "column t.a absent; column t.b present"},
		{"ALTER TABLE t MODIFY c VARCHAR(20)", "column t.c of type VARCHAR(20)"},
		{"ALTER TABLE t MODIFY c VARCHAR(20) NOT NULL", ""}, // NULL-ness is not compared
		{"DROP TABLE foo_cascade", "table foo_cascade absent"},
		{"DROP TABLE t CASCADE", "table t absent"},
		{"DROP TABLE other.t", ""},
		{"ALTER TABLE t ADD UNIQUE KEY (c)", ""},
		{"ALTER TABLE t ADD CONSTRAINT FOREIGN KEY (a) REFERENCES u (id)", ""},
		{"ALTER TABLE t DROP COLUMN c -- why; it goes\n", "column t.c absent"},
		{"ALTER TABLE `we``ird.t` DROP COLUMN `a.b`", "column we`ird.t.a.b absent"},
		{"ALTER TABLE t DROP FOREIGN KEY fk, ADD CONSTRAINT fk2 FOREIGN KEY (a) REFERENCES u (id)", "constraint t.fk absent; constraint t.fk2 present"},
		{"ALTER TABLE t ALTER COLUMN c SET DEFAULT 'x'", "column t.c default 'x'"},
		{"ALTER TABLE t ALTER c DROP DEFAULT", "column t.c without a default"},
		{"ALTER TABLE t DROP PRIMARY KEY", ""},
		{"ALTER TABLE t ADD PARTITION (PARTITION p1 VALUES LESS THAN (10))", ""},
		{"CREATE OR REPLACE VIEW v AS SELECT 1", ""},
		{"TRUNCATE t", ""},
	} {
		checks, ok := effectChecks(c.sql)
		var got []string
		for _, ch := range checks {
			got = append(got, describeCheck(ch))
		}
		if !ok {
			got = nil
		}
		if strings.Join(got, "; ") != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.sql, strings.Join(got, "; "), c.want)
		}
	}
	if !sameColumnType("int(11)", "INT") || !sameColumnType("varchar(20)", "VARCHAR(20)") || sameColumnType("bigint(20)", "INT") {
		t.Error("sameColumnType")
	}
}

func TestClassifyAndRefuse(t *testing.T) {
	for sql, want := range map[string]StatementKind{"SET sql_log_bin = 0": KindSession, "SET foreign_key_checks=0": KindSession, "SET GLOBAL max_connections = 10": KindDDL,
		"UPDATE t SET a = 1": KindDML, "/* x */ DELETE FROM t": KindDML, "ALTER TABLE t ADD c INT": KindDDL} {
		if got := ClassifyMySQL(sql); got != want {
			t.Errorf("%s: kind %d, want %d", sql, got, want)
		}
	}
	for _, sql := range []string{"USE other", "SET autocommit = 0", "SET @@autocommit=0", "START TRANSACTION", "COMMIT", "LOCK TABLES t WRITE"} {
		if RefusedInUndo(sql) == "" {
			t.Errorf("%s is not refused", sql)
		}
	}
	if RefusedInUndo("UPDATE users SET committed = 1") != "" {
		t.Error("an UPDATE was refused")
	}
	if unquote("`") != "`" {
		t.Error("unquote of a lone backtick")
	}
}

func TestOnlineForms(t *testing.T) {
	if f := onlineForms("ALTER TABLE t DROP COLUMN c -- a note"); f[0] != "ALTER TABLE t DROP COLUMN c, ALGORITHM=INSTANT" {
		t.Errorf("a trailing comment swallowed the algorithm: %q", f[0])
	}
	if f := onlineForms("ALTER TABLE t DROP COLUMN c"); len(f) != 3 || f[0] != "ALTER TABLE t DROP COLUMN c, ALGORITHM=INSTANT" || f[1] != "ALTER TABLE t DROP COLUMN c, ALGORITHM=INPLACE, LOCK=NONE" {
		t.Errorf("forms %q", f)
	}
	for _, s := range []string{"ALTER TABLE t DROP COLUMN c, ALGORITHM=COPY", "DROP TABLE t", "ALTER TABLE t ADD PARTITION (PARTITION p VALUES LESS THAN (1))"} {
		if f := onlineForms(s); len(f) != 1 {
			t.Errorf("%s: forms %q", s, f)
		}
	}
}

func TestLintMySQL(t *testing.T) {
	script := "ALTER TABLE orders MODIFY COLUMN total BIGINT;\n" +
		"ALTER TABLE orders ADD FULLTEXT INDEX ft (note);\n" +
		"ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (c) REFERENCES c (id);\n" +
		"LOCK TABLES orders WRITE;\n" +
		"ALTER TABLE orders DROP COLUMN status, CONVERT TO CHARACTER SET utf8mb4;\n" +
		"ALTER TABLE orders ADD COLUMN x INT AFTER id;\n"
	got := map[string]int{}
	for _, f := range LintMySQLScript("d.sql", script, LintMySQL) {
		got[f.Rule+"@"+string(rune('0'+f.Line))]++
	}
	for _, want := range []string{"copy-table@1", "shared-lock@2", "foreign-key@3", "lock-tables@4", "destructive@5", "copy-table@5", "rebuild@6", "not-atomic@1"} {
		if got[want] == 0 {
			t.Errorf("missing %s in %v", want, got)
		}
	}
	// MariaDB adds a column anywhere instantly; checks off, a foreign key runs in place.
	fs := LintMySQLScript("d.sql", "SET foreign_key_checks = 0;\nALTER TABLE o ADD COLUMN x INT AFTER id, ADD CONSTRAINT fk FOREIGN KEY (c) REFERENCES c (id);\n", LintMariaDB)
	if len(fs) != 0 {
		t.Errorf("findings %v", fs)
	}
}
