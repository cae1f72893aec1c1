package migrate

import (
	"strings"
	"testing"
)

// ddlCorpus holds one statement of every DROP, ALTER and CREATE kind the
// PostgreSQL grammar has, and other statements undo scripts use.
var ddlCorpus = []string{
	"DROP TABLE IF EXISTS a, s.b CASCADE", "DROP VIEW v", "DROP MATERIALIZED VIEW mv", "DROP SEQUENCE sq",
	"DROP INDEX CONCURRENTLY IF EXISTS i", "DROP TYPE IF EXISTS s", "DROP TYPE t1, s.t2 CASCADE",
	"DROP DOMAIN d", "DROP FUNCTION IF EXISTS f(int, text)", "DROP FUNCTION f", "DROP PROCEDURE p()",
	"DROP ROUTINE r", "DROP AGGREGATE agg(int)", "DROP OPERATOR ===(int, int)", "DROP OPERATOR CLASS oc USING btree",
	"DROP OPERATOR FAMILY of USING btree", "DROP CAST (text AS int)", "DROP COLLATION c", "DROP CONVERSION cv",
	"DROP SCHEMA IF EXISTS s CASCADE", "DROP SCHEMA a, b", "DROP EXTENSION IF EXISTS pgcrypto", "DROP EXTENSION hstore CASCADE",
	"DROP TRIGGER IF EXISTS tr ON t", "DROP POLICY p ON t", "DROP RULE r ON t", "DROP STATISTICS st",
	"DROP TEXT SEARCH CONFIGURATION tsc", "DROP TEXT SEARCH DICTIONARY tsd", "DROP TEXT SEARCH PARSER tsp", "DROP TEXT SEARCH TEMPLATE tst",
	"DROP FOREIGN TABLE ft", "DROP SERVER srv", "DROP FOREIGN DATA WRAPPER fdw", "DROP USER MAPPING FOR u SERVER srv",
	"DROP PUBLICATION pub", "DROP SUBSCRIPTION sub", "DROP EVENT TRIGGER et", "DROP ACCESS METHOD am", "DROP LANGUAGE plx",
	"DROP TRANSFORM FOR int LANGUAGE sql", "DROP OWNED BY someone", "DROP ROLE r", "DROP GROUP g", "DROP USER u",
	"DROP DATABASE IF EXISTS d", "DROP TABLESPACE ts",
	"ALTER TABLE t DROP COLUMN IF EXISTS c", "ALTER TABLE t ADD COLUMN c int", "ALTER TABLE t RENAME COLUMN a TO b",
	"ALTER TABLE t RENAME TO u", "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u(a)", "ALTER TABLE t SET SCHEMA s",
	"ALTER TYPE s ADD VALUE 'y'", "ALTER TYPE s RENAME VALUE 'x' TO 'z'", "ALTER TYPE s RENAME TO s2", "ALTER DOMAIN d SET NOT NULL",
	"ALTER FUNCTION f() RENAME TO g", "ALTER SCHEMA s RENAME TO s2", "ALTER EXTENSION hstore UPDATE", "ALTER SEQUENCE sq RESTART",
	"ALTER INDEX i RENAME TO j", "ALTER VIEW v RENAME TO w", "ALTER MATERIALIZED VIEW mv RENAME TO mw", "ALTER POLICY p ON t USING (true)",
	"ALTER TRIGGER tr ON t RENAME TO tr2", "ALTER ROLE r SET search_path = s", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r",
	"ALTER SYSTEM SET work_mem = '4MB'", "ALTER DATABASE d SET timezone = 'UTC'",
	"CREATE TYPE s AS ENUM ('x')", "CREATE TYPE c AS (a int)", "CREATE DOMAIN d AS int", "CREATE SCHEMA s",
	"CREATE EXTENSION IF NOT EXISTS pgcrypto", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
	"CREATE TABLE t (a int)", "CREATE TABLE t2 AS SELECT 1", "CREATE INDEX CONCURRENTLY i ON t (a)", "CREATE VIEW v AS SELECT 1",
	"CREATE MATERIALIZED VIEW mv AS SELECT 1", "CREATE SEQUENCE sq", "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
	"CREATE POLICY p ON t USING (true)", "CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", "CREATE STATISTICS st ON a, b FROM t",
	"COMMENT ON TABLE t IS 'x'", "GRANT SELECT ON t TO r", "REVOKE ALL ON t FROM r", "TRUNCATE t", "REINDEX INDEX CONCURRENTLY i",
	"VACUUM FULL t", "CLUSTER t USING i", "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "REFRESH MATERIALIZED VIEW mv",
	"UPDATE t SET c = NULL", "DELETE FROM flyway_schema_history WHERE version = '1.2.0'", "INSERT INTO t VALUES (1)",
	"SELECT drop_partition('t')", "SELECT 1", "DO $$ BEGIN EXECUTE 'DROP TABLE x'; END $$", "CALL p()",
	"SET lock_timeout = '1s'", "BEGIN", "COMMIT", "NOTIFY ch", "CREATE OR REPLACE FUNCTION g() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
}

func TestAnalyzeEveryStatementKind(t *testing.T) {
	for _, sql := range ddlCorpus {
		infos, err := AnalyzeScript("U1__corpus.sql", sql+";")
		if err != nil {
			t.Errorf("%s: %v", sql, err)
			continue
		}
		if len(infos) != 1 {
			t.Errorf("%s: %d statements, want 1", sql, len(infos))
		}
	}
}

// The repro: DROP TYPE, DROP FUNCTION, DROP SCHEMA and DROP
// EXTENSION crashed the analysis behind the snapshot.
func TestAnalyzeDropsOfNonTables(t *testing.T) {
	for sql, opaque := range map[string]bool{
		"DROP TYPE IF EXISTS s;":             true,
		"DROP FUNCTION IF EXISTS f(int);":    true,
		"DROP SCHEMA s CASCADE;":             true,
		"DROP EXTENSION IF EXISTS pgcrypto;": true,
		"DROP TABLE IF EXISTS a;":            false,
		"DROP TABLE a CASCADE;":              true,
		"ALTER TABLE t DROP COLUMN c;":       false,
		"SELECT cleanup();":                  true,
		"DO $$ BEGIN NULL; END $$;":          true,
		"UPDATE t SET c = NULL;":             false,
	} {
		infos, err := AnalyzeScript("U1__a.sql", sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if got := infos[0].Opaque; got != opaque {
			t.Errorf("%s: opaque %v, want %v", sql, got, opaque)
		}
	}
	infos, _ := AnalyzeScript("U1__a.sql", "DROP TYPE IF EXISTS s;")
	if len(infos[0].Tables) != 0 || len(infos[0].DropTables) != 0 {
		t.Errorf("DROP TYPE names tables %v / %v, want none", infos[0].Tables, infos[0].DropTables)
	}
}

// The snapshot of an undo whose reach the grammar cannot tell falls back
// to the whole database and says so.
func TestTouchedTablesOpaque(t *testing.T) {
	p := &Plan{Steps: []*Step{{Undo: &File{Path: "U1__a.sql"}, Script: "DROP TYPE IF EXISTS s;\n"}}}
	if _, err := p.TouchedTables(); err == nil || !strings.Contains(err.Error(), "U1__a.sql:1 DropStmt") {
		t.Fatalf("got %v, want ErrOpaque naming the statement", err)
	}
}

func FuzzAnalyze(f *testing.F) {
	for _, s := range ddlCorpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		for _, st := range Split(script) {
			_, _ = analyze(st) // must not panic: AnalyzeScript's recover is only a last resort
		}
	})
}
