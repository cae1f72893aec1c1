package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Fingerprint is the user schema as the catalog describes it: tables,
// columns (type, default, nullability), indexes and constraints, one line
// each, sorted. The history tables and rollback's own schema are left out.
type Fingerprint struct {
	Hash  string   `json:"hash"`
	Lines []string `json:"lines"`
}

const fingerprintExclude = `NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'rollback', 'rollback_capture')`

// TakeFingerprint reads the schema fingerprint of the connected database.
func TakeFingerprint(ctx context.Context, db DB) (*Fingerprint, error) {
	queries := []string{
		`SELECT format('table %I.%I', n.nspname, c.relname)
		   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		  WHERE c.relkind IN ('r','p','v','m','S') AND n.nspname ` + fingerprintExclude + `
		    AND c.relname NOT IN ('flyway_schema_history', 'schema_migrations')`,
		`SELECT format('column %I.%I.%I %s%s%s', n.nspname, c.relname, a.attname,
		               format_type(a.atttypid, a.atttypmod),
		               CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
		               coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''))
		   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','p','v','m')
		    AND n.nspname ` + fingerprintExclude + ` AND c.relname NOT IN ('flyway_schema_history', 'schema_migrations')`,
		`SELECT format('index %I.%I %s', schemaname, indexname, indexdef) FROM pg_indexes
		  WHERE schemaname ` + fingerprintExclude + ` AND tablename NOT IN ('flyway_schema_history', 'schema_migrations')`,
		`SELECT format('constraint %I.%I.%I %s', n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid))
		   FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		  WHERE n.nspname ` + fingerprintExclude + ` AND c.relname NOT IN ('flyway_schema_history', 'schema_migrations')`,
	}
	fp := &Fingerprint{}
	for _, q := range queries {
		rows, err := db.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("read schema: %w", err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return nil, err
			}
			fp.Lines = append(fp.Lines, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	sort.Strings(fp.Lines)
	h := sha256.Sum256([]byte(strings.Join(fp.Lines, "\n")))
	fp.Hash = hex.EncodeToString(h[:])
	return fp, nil
}

// Diff lists what differs from want to got: "+ line" is only in got,
// "- line" only in want. Empty when the schemas are equal.
func (got *Fingerprint) Diff(want *Fingerprint) []string {
	in := func(lines []string) map[string]bool {
		m := map[string]bool{}
		for _, l := range lines {
			m[l] = true
		}
		return m
	}
	g, w := in(got.Lines), in(want.Lines)
	var out []string
	for _, l := range want.Lines {
		if !g[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range got.Lines {
		if !w[l] {
			out = append(out, "+ "+l)
		}
	}
	return out
}
