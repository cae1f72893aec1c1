package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Merged counts what a capture's merge did.
type Merged struct {
	Capture string `json:"capture"` // what it gives back: TABLE.COLUMN (kind)
	// Restored rows got their destroyed values back (or came back whole).
	Restored int64 `json:"restored"`
	// Kept rows are the table's rows the capture does not hold (written
	// since the release, or never touched by it): unchanged.
	Kept int64 `json:"kept"`
	// NotResurrected rows were deleted since the release: still deleted.
	NotResurrected int64 `json:"notResurrected"`
	// Conflicts: the new version wrote the value (or a row took the key)
	// since the release; the new write won. ConflictKeys lists the first.
	Conflicts    int64    `json:"conflicts"`
	ConflictKeys []string `json:"conflictKeys,omitempty"`
	// ByHand: captured whole, not merged (the statement was not scoped).
	ByHand int64 `json:"byHand,omitempty"`
}

func (m Merged) String() string {
	if m.ByHand > 0 {
		return fmt.Sprintf("%s: %d row(s) captured, not merged (restore by hand)", m.Capture, m.ByHand)
	}
	s := fmt.Sprintf("%s: %d restored, %d kept, %d not resurrected, %d conflict(s)", m.Capture, m.Restored, m.Kept, m.NotResurrected, m.Conflicts)
	if len(m.ConflictKeys) > 0 {
		s += " (new write kept for key " + strings.Join(m.ConflictKeys, "; ") + ")"
	}
	return s
}

// mergeBatch is how many captured rows one merge statement (and, for a
// batched merge, one transaction) handles.
var mergeBatch int64 = 5000

// DefaultInlineMergeRows: a step whose captures hold at most this many
// rows is merged inside the down script's transaction (all or nothing,
// and the lock it holds lasts milliseconds longer); a larger one is
// merged after it commits, in batches of their own (make bench-merge: a
// 100,000-row merge inside the transaction held readers for 1.2 s).
const DefaultInlineMergeRows = 5000

// keyMatch is the condition that the table's row t has the capture's row
// c's key, and c's key as text (for conflict lists).
func (c *Captured) keyMatch() (on, key string) {
	match := make([]string, len(c.keys))
	text := make([]string, len(c.keys))
	for i, k := range c.keys {
		match[i] = fmt.Sprintf("t.%s = c.k%d", pgx.Identifier{k}.Sanitize(), i+1)
		text[i] = fmt.Sprintf("c.k%d::text", i+1)
	}
	return strings.Join(match, " AND "), "concat_ws(',', " + strings.Join(text, ", ") + ")"
}

// mergeSQL is the capture's merge statements: what counts the rows of a
// range (not resurrected, conflicts, their keys) and what puts them back.
func (c *Captured) mergeSQL(ctx context.Context, tx pgx.Tx) (count, put string, err error) {
	on, key := c.keyMatch()
	rng := "c.rn BETWEEN $1 AND $2"
	switch c.Kind {
	case DestroyColumn, DestroyType, DestroyUpdate:
		col := pgx.Identifier{c.Column}.Sanitize()
		// A value is the release's (and so given back) while it is what
		// the statement left: the cast or the SET value, or, for a column
		// the down script recreated, its default. Anything else was
		// written since, and wins.
		// Compared as text in the column's type: json, xml or point have
		// no equality operator, and the same value prints the same.
		untouched := fmt.Sprintf("t.%s::text IS NOT DISTINCT FROM CAST(c.post AS %s)::text", col, c.colType)
		if c.Kind == DestroyColumn {
			var def *string
			err := tx.QueryRow(ctx, `SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
				WHERE d.adrelid = $1::regclass AND a.attname = $2`, c.Table, c.Column).Scan(&def)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return "", "", err
			}
			untouched = fmt.Sprintf("t.%s IS NULL", col)
			if def != nil {
				untouched = fmt.Sprintf("(t.%s IS NULL OR t.%s IS NOT DISTINCT FROM (%s))", col, col, *def)
			}
		}
		// One join: a row of the range is gone (no match), or a
		// conflict (a match the new version wrote).
		present := fmt.Sprintf("t.%s IS NOT NULL", pgx.Identifier{c.keys[0]}.Sanitize())
		count = fmt.Sprintf(`SELECT count(*) FILTER (WHERE NOT %[7]s),
			count(*) FILTER (WHERE %[7]s AND NOT (%[4]s)),
			coalesce((array_agg(%[5]s ORDER BY c.rn) FILTER (WHERE %[7]s AND NOT (%[4]s)))[1:20], '{}')
			FROM %[2]s c LEFT JOIN %[1]s t ON %[3]s WHERE %[6]s`, c.Table, c.Store, on, untouched, key, rng, present)
		put = fmt.Sprintf(`UPDATE %s t SET %s = c.pre FROM %s c WHERE %s AND %s AND %s`, c.Table, col, c.Store, on, untouched, rng)
	default:
		count = fmt.Sprintf(`SELECT 0::bigint, count(*), coalesce((array_agg(%[4]s ORDER BY c.rn))[1:20], '{}')
			FROM %[2]s c WHERE %[5]s AND EXISTS (SELECT 1 FROM %[1]s t WHERE %[3]s)`, c.Table, c.Store, on, key, rng)
		cols := make([]string, len(c.cols))
		vals := make([]string, len(c.cols))
		for i, name := range c.cols {
			cols[i], vals[i] = pgx.Identifier{name}.Sanitize(), fmt.Sprintf("c.c%d", i+1)
		}
		put = fmt.Sprintf(`INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s c WHERE %s AND NOT EXISTS (SELECT 1 FROM %s t WHERE %s) ON CONFLICT DO NOTHING`,
			c.Table, strings.Join(cols, ", "), strings.Join(vals, ", "), c.Store, rng, c.Table, on)
	}
	return count, put, nil
}

// verifyCapture checks the capture's rows against its checksum.
func (c *Captured) verifyCapture(ctx context.Context, db DB) error {
	var n int64
	var sum string
	if err := db.QueryRow(ctx, fmt.Sprintf(checksumSQL, c.Store)).Scan(&n, &sum); err != nil {
		return fmt.Errorf("capture %s: %w", c.Store, err)
	}
	if n != c.Rows || sum != c.Checksum {
		return fmt.Errorf("capture %s changed since it was taken (%d rows, checksum %s; recorded %d, %s): not merged", c.Store, n, sum, c.Rows, c.Checksum)
	}
	return nil
}

func (c *Captured) name() string {
	n := c.Table
	if c.Column != "" {
		n += "." + c.Column
	}
	return n + " (" + c.Kind + ")"
}

// mergeRange puts back the capture's rows lo..hi in tx and adds what
// happened to m.
func (c *Captured) mergeRange(ctx context.Context, tx pgx.Tx, count, put string, lo, hi int64, m *Merged) error {
	// A batch is a few thousand key lookups: the table's statistics
	// predate the down script (a recreated column looks selective), and
	// the planner would scan the whole table per batch (a 1,000,000-row
	// merge took 68 s that way). For the rest of this transaction only.
	if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"); err != nil {
		return err
	}
	var gone, conflicts int64
	var keys []string
	if err := tx.QueryRow(ctx, count, lo, hi).Scan(&gone, &conflicts, &keys); err != nil {
		return fmt.Errorf("merge %s: %w", m.Capture, err)
	}
	tag, err := tx.Exec(ctx, put, lo, hi)
	if err != nil {
		return fmt.Errorf("merge %s: %w", m.Capture, err)
	}
	// Only the batch: later statements of an inline segment plan as usual.
	if _, err := tx.Exec(ctx, "RESET enable_seqscan; RESET enable_hashjoin; RESET enable_mergejoin"); err != nil {
		return err
	}
	if c.Column == "" {
		// A row kept out by another unique index (ON CONFLICT DO
		// NOTHING) is a conflict too: a new row holds what it would.
		inRange := min(hi, c.Rows) - lo + 1
		if extra := inRange - conflicts - tag.RowsAffected(); extra > 0 {
			m.Conflicts += extra
		}
	}
	m.Restored += tag.RowsAffected()
	m.NotResurrected += gone
	m.Conflicts += conflicts
	if room := 20 - len(m.ConflictKeys); room > 0 {
		m.ConflictKeys = append(m.ConflictKeys, keys[:min(room, len(keys))]...)
	}
	return nil
}

// finish counts the rows kept, advances a recreated table's sequences
// and marks the capture merged, in tx.
func (c *Captured) finish(ctx context.Context, tx pgx.Tx, m *Merged) error {
	on, _ := c.keyMatch()
	if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s t WHERE NOT EXISTS (SELECT 1 FROM %s c WHERE %s)`, c.Table, c.Store, on)).Scan(&m.Kept); err != nil {
		return err
	}
	if c.Column == "" {
		// A recreated table's sequences start again at 1: move them past
		// the restored keys.
		if err := advanceSequences(ctx, tx, c.Table); err != nil {
			return fmt.Errorf("merge %s: advance its sequences: %w", m.Capture, err)
		}
	}
	_, err := tx.Exec(ctx, `UPDATE rollback.captures SET merged_at = now(), merged_rn = rows, restored = $3, conflicts = $4, not_resurrected = $5, kept = $6, conflict_keys = coalesce($7::text[], '{}')
		WHERE version = $1 AND seq = $2`, c.Version, c.Seq, m.Restored, m.Conflicts, m.NotResurrected, m.Kept, m.ConflictKeys)
	return err
}

// merge puts a capture back by key inside the down script's transaction
// (a small one: see DefaultInlineMergeRows).
func (c *Captured) merge(ctx context.Context, tx pgx.Tx) (Merged, error) {
	m := Merged{Capture: c.name()}
	if err := c.verifyCapture(ctx, tx); err != nil {
		return m, err
	}
	if !c.Scoped {
		m.ByHand = c.Rows
		_, err := tx.Exec(ctx, `UPDATE rollback.captures SET merged_at = now(), undone_at = now() WHERE version = $1 AND seq = $2`, c.Version, c.Seq)
		return m, err
	}
	count, put, err := c.mergeSQL(ctx, tx)
	if err != nil {
		return m, err
	}
	for lo := int64(1); lo <= c.Rows; lo += mergeBatch {
		if err := c.mergeRange(ctx, tx, count, put, lo, lo+mergeBatch-1, &m); err != nil {
			return m, err
		}
	}
	return m, c.finish(ctx, tx, &m)
}

// finishMerges merges, batch by batch, every capture whose step was
// undone (its down script committed) and whose merge has not finished:
// each batch is its own transaction under the undo's lock_timeout, with
// its progress (the last key merged, the counts so far) written in the
// same transaction, so a kill resumes at the next batch and no row is
// merged twice. Readers never wait on it (no DDL lock; row locks only).
// It returns the versions whose merges it finished.
func finishMerges(ctx context.Context, conn *pgx.Conn, o UndoOptions, logf func(string, ...any)) ([]string, error) {
	caps, err := pendingMerges(ctx, conn)
	if err != nil || len(caps) == 0 {
		return nil, err
	}
	var versions []string
	for _, c := range caps {
		m, err := c.mergeBatched(ctx, conn, o, logf)
		if err != nil {
			return versions, err
		}
		logf("merged %s", m)
		if !slices.Contains(versions, c.Version) {
			versions = append(versions, c.Version)
		}
	}
	return versions, nil
}

// reportMerges is what the merges of the versions gave back, as the
// catalog counted them (an interrupted merge's earlier batches included),
// newest first.
func reportMerges(ctx context.Context, db DB, versions []string) ([]Merged, error) {
	if len(versions) == 0 {
		return nil, nil
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('rollback.captures') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT kind, tbl, col, scoped, rows, restored, conflicts, not_resurrected, kept, conflict_keys
		FROM rollback.captures WHERE version = ANY($1) AND merged_at IS NOT NULL ORDER BY version DESC, seq DESC`, versions)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Merged
	for rows.Next() {
		var c Captured
		var m Merged
		var n int64
		if err := rows.Scan(&c.Kind, &c.Table, &c.Column, &c.Scoped, &n, &m.Restored, &m.Conflicts, &m.NotResurrected, &m.Kept, &m.ConflictKeys); err != nil {
			return nil, err
		}
		m.Capture = c.name()
		if !c.Scoped {
			m = Merged{Capture: m.Capture, ByHand: n}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (c *Captured) mergeBatched(ctx context.Context, conn *pgx.Conn, o UndoOptions, logf func(string, ...any)) (Merged, error) {
	m := Merged{Capture: c.name()}
	if err := c.verifyCapture(ctx, conn); err != nil {
		return m, err
	}
	if !c.Scoped {
		m.ByHand = c.Rows
		_, err := conn.Exec(ctx, `UPDATE rollback.captures SET merged_at = now() WHERE version = $1 AND seq = $2`, c.Version, c.Seq)
		return m, err
	}
	for {
		done := false
		err := withLockRetries(ctx, o, logf, "merge of "+m.Capture, func() error {
			tx, err := conn.Begin(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", o.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			// The progress so far, locked: one merger at a time.
			var at int64
			var merged *time.Time
			cur := Merged{Capture: m.Capture}
			if err := tx.QueryRow(ctx, `SELECT merged_rn, merged_at, restored, conflicts, not_resurrected, conflict_keys FROM rollback.captures
				WHERE version = $1 AND seq = $2 FOR UPDATE`, c.Version, c.Seq).Scan(&at, &merged, &cur.Restored, &cur.Conflicts, &cur.NotResurrected, &cur.ConflictKeys); err != nil {
				return err
			}
			if merged != nil {
				done = true
				m = cur
				return tx.Rollback(ctx)
			}
			if o.boundary != nil {
				o.boundary(fmt.Sprintf("merge batch after %d", at))
			}
			if at >= c.Rows {
				if err := c.finish(ctx, tx, &cur); err != nil {
					return err
				}
				done, m = true, cur
				return tx.Commit(ctx)
			}
			count, put, err := c.mergeSQL(ctx, tx)
			if err != nil {
				return err
			}
			hi := min(at+mergeBatch, c.Rows)
			if err := c.mergeRange(ctx, tx, count, put, at+1, hi, &cur); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE rollback.captures SET merged_rn = $3, restored = $4, conflicts = $5, not_resurrected = $6, conflict_keys = coalesce($7::text[], '{}')
				WHERE version = $1 AND seq = $2`, c.Version, c.Seq, hi, cur.Restored, cur.Conflicts, cur.NotResurrected, cur.ConflictKeys); err != nil {
				return err
			}
			return tx.Commit(ctx)
		})
		if err != nil {
			return m, err
		}
		if done {
			return m, nil
		}
	}
}

// pendingMerges are the captures whose step was undone and whose merge
// has not finished (a batched merge, or one a kill interrupted).
func pendingMerges(ctx context.Context, db DB) ([]*Captured, error) {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('rollback.captures') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	return queryCaptures(ctx, db, `undone_at IS NOT NULL AND merged_at IS NULL ORDER BY undone_at, version DESC, seq DESC`)
}

// advanceSequences moves each serial or identity sequence of a table past
// the largest value its column holds.
func advanceSequences(ctx context.Context, tx pgx.Tx, table string) error {
	rows, err := tx.Query(ctx, `SELECT a.attname, pg_get_serial_sequence($1, a.attname) FROM pg_attribute a
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND pg_get_serial_sequence($1, a.attname) IS NOT NULL`, table)
	if err != nil {
		return err
	}
	type seq struct{ col, seq string }
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seq, error) {
		var s seq
		return s, r.Scan(&s.col, &s.seq)
	})
	if err != nil {
		return err
	}
	for _, s := range seqs {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SELECT setval($1, m) FROM (SELECT max(%s)::bigint AS m FROM %s) x
			WHERE m > coalesce(pg_sequence_last_value($1::regclass), 0)`, pgx.Identifier{s.col}.Sanitize(), table), s.seq); err != nil {
			return err
		}
	}
	return nil
}

// MergeSummary is the merges of an undo in one line ("" when none).
func MergeSummary(ms []Merged) string {
	if len(ms) == 0 {
		return ""
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return "gave back what the release destroyed: " + strings.Join(parts, "; ")
}
