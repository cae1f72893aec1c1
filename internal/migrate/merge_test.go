package migrate

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A kill (the session terminated, as when rollback dies) at every
// boundary of an undo whose down script has two statements and three
// merges: each resumed undo reaches exactly the end state of an undo that
// was never killed, and nothing is merged twice.
func TestKillAtEveryBoundaryConverges(t *testing.T) {
	t.Run("inline", func(t *testing.T) { killEverywhere(t, opts(), 7) })
	// 2 statements, the undone mark, the history fix, the commit; then a
	// transaction per batch of 30 and a last one per capture (the UPDATE,
	// after the release's DELETE changed the table, is captured whole:
	// one transaction).
	t.Run("batched", func(t *testing.T) { o := batched(t); killEverywhere(t, o, 5+1+2+4) })
}

func killEverywhere(t *testing.T, mode UndoOptions, wantBoundaries int) {
	ctx := context.Background()
	const up = `ALTER TABLE accounts DROP COLUMN note;
DELETE FROM accounts WHERE status = 'trial' AND id > 50;
UPDATE accounts SET status = 'legacy' WHERE status = 'trial';`
	const undo = `ALTER TABLE accounts ADD COLUMN note text;
COMMENT ON COLUMN accounts.note IS 'restored';`
	const after = `DELETE FROM accounts WHERE id IN (5, 7);
UPDATE accounts SET status = 'active' WHERE id = 10;
INSERT INTO accounts (id, email) VALUES (55, 'took the key');
INSERT INTO accounts (id, email) VALUES (1000, 'new');`
	state := func(conn *pgx.Conn) string {
		return one(t, conn, `SELECT string_agg(to_jsonb(a)::text, E'\n' ORDER BY id) FROM accounts a`) +
			"\nhistory " + historyVersions(t, conn) + "\n" + columns(t, conn, "accounts")
	}
	ref, _, src := releaseWithCapture(t, up, undo)
	mustExec(t, ref, after)
	res, err := undoRelease(t, ref, src.Dir, mode)
	if err != nil || len(res.Merged) != 3 {
		t.Fatalf("reference undo: %v %+v", err, res)
	}
	want := state(ref)
	wantMerged := fmt.Sprint(res.Merged)

	var boundaries []string
	o := mode
	o.boundary = func(where string) { boundaries = append(boundaries, where) }
	conn, _, _ := releaseWithCapture(t, up, undo)
	mustExec(t, conn, after)
	p, _ := loadPlan(t, conn, src.Dir, Flyway, "1")
	if _, err := Undo(ctx, conn, p, o); err != nil {
		t.Fatal(err)
	}
	if len(boundaries) != wantBoundaries {
		t.Fatalf("%d boundaries, want %d: %v", len(boundaries), wantBoundaries, boundaries)
	}
	converged := 0
	for i, where := range boundaries {
		conn, dsn, _ := releaseWithCapture(t, up, undo)
		mustExec(t, conn, after)
		before := state(conn)
		admin := connect(t, dsn)
		var pid uint32
		_ = conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid)
		o := mode
		n := 0
		o.boundary = func(string) {
			if n == i {
				_, _ = admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
			}
			n++
		}
		p, _ := loadPlan(t, conn, src.Dir, Flyway, "1")
		if _, err := Undo(ctx, conn, p, o); err == nil {
			t.Errorf("killed before %s: the undo did not notice", where)
		}
		again := connect(t, dsn)
		// Before the down script's commit nothing has changed; after it,
		// the history says undone and the merge goes on where it stopped.
		if got := state(again); got != before && !strings.Contains(got, "\nhistory 1\n") {
			t.Errorf("killed before %s: half done:\n%s", where, got)
		}
		res, err := undoRelease(t, again, src.Dir, mode)
		if err != nil {
			t.Errorf("killed before %s: resume: %v", where, err)
			continue
		}
		if got := state(again); got != want {
			t.Errorf("killed before %s: resumed to\n%s\nwant\n%s", where, got, want)
			continue
		}
		// Counted once: the resumed run reports the whole merge, as
		// the uninterrupted one did.
		if got := fmt.Sprint(res.Merged); got != wantMerged {
			t.Errorf("killed before %s: merged %s, want %s", where, got, wantMerged)
			continue
		}
		converged++
	}
	t.Logf("kill at every boundary: %d boundaries, %d converged", len(boundaries), converged)
}
