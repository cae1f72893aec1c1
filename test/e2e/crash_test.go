package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollback-dev/rollback/internal/flags/flagstest"
	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/pgtest"
	"github.com/rollback-dev/rollback/internal/store"
)

var incidentID = regexp.MustCompile(`INC-[0-9]{8}-[0-9]+`)

// slackStandIn counts channels and posts; hold, when set, blocks the
// closing summary's post until released (a kill inside the step).
type slackStandIn struct {
	mu       sync.Mutex
	channels []string
	posts    []string
	hold     chan struct{} // closed by the test to let the held post answer
	arrived  chan struct{} // closed when the held post arrived
	held     bool
}

func (s *slackStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	switch r.URL.Path {
	case "/api/conversations.create":
		name := fmt.Sprint(body["name"])
		for _, c := range s.channels {
			if c == name {
				s.mu.Unlock()
				_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "name_taken"})
				return
			}
		}
		s.channels = append(s.channels, name)
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": map[string]any{"id": "C" + fmt.Sprint(len(s.channels)), "name": name}})
	case "/api/chat.postMessage":
		text := fmt.Sprint(body["text"])
		s.posts = append(s.posts, text)
		wait := s.hold != nil && !s.held && strings.HasPrefix(text, "✅")
		if wait {
			s.held = true
			close(s.arrived)
		}
		s.mu.Unlock()
		if wait {
			<-s.hold
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": body["channel"], "ts": "1.1"})
	default:
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "unknown_method"})
	}
}

// dbService makes a database with the v1.1.0 schema, the v1.2.0 migration
// recorded and applied, and a trigger counting deletes from the history
// (a repeated down migration would delete twice).
// undo is the v1.2.0 undo script's name and text (Flyway's U layout unless
// a test gives the runbook's rollback/ one).
func dbService(t *testing.T, ns string, undo ...string) (dsn, mig string, conn *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	dsn, err := pg.CreateDB(ctx, "e2e_"+strings.ReplaceAll(ns, "-", "_"))
	if err != nil {
		t.Fatal(err)
	}
	mig = filepath.Join(t.TempDir(), "migrations")
	if len(undo) != 2 {
		undo = []string{"U1_2_0__add_transaction_category.sql", "ALTER TABLE transactions DROP COLUMN IF EXISTS category;\n"}
	}
	files := map[string]string{
		"V1_1_0__create_transactions.sql":      "CREATE TABLE transactions (id bigserial PRIMARY KEY, amount numeric NOT NULL);\n",
		"V1_2_0__add_transaction_category.sql": "ALTER TABLE transactions ADD COLUMN category text;\n",
		undo[0]:                                undo[1],
	}
	for n, b := range files {
		if err := os.MkdirAll(filepath.Join(mig, filepath.Dir(n)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mig, n), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	exec := func(q string, args ...any) {
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	apply := func(rank int, v, f string) {
		b, _ := os.ReadFile(filepath.Join(mig, f))
		exec(string(b))
		exec(`INSERT INTO flyway_schema_history VALUES ($1, $2, 'x', 'SQL', $3, $4, 'ci', now(), 1, true)`, rank, v, f, migrate.FlywayChecksum(b))
	}
	exec(pgtest.FlywayHistoryDDL)
	exec(`CREATE TABLE history_deletes (version text, at timestamptz DEFAULT now())`)
	exec(`CREATE FUNCTION count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO history_deletes (version) VALUES (OLD.version); RETURN OLD; END $$`)
	exec(`CREATE TRIGGER count_delete AFTER DELETE ON flyway_schema_history FOR EACH ROW EXECUTE FUNCTION count_delete()`)
	apply(1, "1.1.0", "V1_1_0__create_transactions.sql")
	if r := rollbackEnv(t, map[string]string{"ROLLBACK_DB_DSN": dsn}, "db", "record", "--dir", mig, "--release", "v1.2.0"); r.code != 0 {
		t.Fatalf("record: %s", r.stderr)
	}
	apply(2, "1.2.0", "V1_2_0__add_transaction_category.sql")
	exec(`INSERT INTO transactions (amount, category) VALUES (1, 'food'), (2, 'rent')`)
	return dsn, mig, conn
}

// TestKilledAnywhereResumesOnce kills 'rollback run' (SIGKILL) at every
// step boundary and inside two steps (the down migration waiting on a
// lock, the closing Slack post in flight), resumes it, and checks that it
// converges with every side effect done exactly once: one channel, two
// posts, one history delete, the column gone, the flag off, the version
// blocked.
func TestKilledAnywhereResumesOnce(t *testing.T) {
	parallel(t)
	points := []struct {
		name   string
		after  string // kill when stderr shows this line
		inside string // "db-lock", "slack-summary" or "flag-off"
	}{
		{name: "after-declare", after: "Declare incident and notify: done"},
		{name: "after-snapshot", after: "Database snapshot: done"},
		{name: "after-kube", after: "Kubernetes rollback: done"},
		{name: "after-down-migration", after: "Database down migration: done"},
		{name: "after-verify", after: "Verify pods and smoke tests: done"},
		{name: "after-flag", after: "Feature flag off: done"},
		{name: "after-close", after: "Communicate and close: done"},
		{name: "after-block", after: "Block the broken version: done"},
		{name: "inside-down-migration", after: "Database down migration: started", inside: "db-lock"},
		{name: "inside-slack-summary", inside: "slack-summary"},
		// The flag service never got the change: the resumed run turns
		// the flag off again (it converges), not "uncertain".
		{name: "inside-flag-off", inside: "flag-off"},
	}
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) {
			parallel(t)
			ns := namespace(t)
			deploy(t, ns, "v1.1.5")
			dsn, mig, conn := dbService(t, ns)
			kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
			waitRolledOut(t, ns)

			sl := &slackStandIn{}
			if p.inside == "slack-summary" {
				sl.hold, sl.arrived = make(chan struct{}), make(chan struct{})
			}
			srv := httptest.NewServer(sl)
			defer srv.Close()
			defer func() { // before Close: a held post must answer
				if sl.hold != nil {
					close(sl.hold)
				}
			}()
			ld := flagstest.NewLaunchDarkly("api-crash", "default")
			if p.inside == "flag-off" {
				ld.Hold, ld.Arrived = make(chan struct{}), make(chan struct{})
			}
			ldSrv := httptest.NewServer(ld)
			defer ldSrv.Close()
			defer func() {
				if ld.Hold != nil {
					close(ld.Hold)
				}
			}()
			dir := t.TempDir()
			flagFile := filepath.Join(dir, "flags.json")
			_ = os.WriteFile(flagFile, []byte(`{"flags": {"transaction-category": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}`), 0o644)
			flag := fmt.Sprintf("{provider: flagd, key: transaction-category, path: %s}", flagFile)
			if p.inside == "flag-off" {
				flag = fmt.Sprintf("{provider: launchdarkly, key: transaction-category, project: default, environment: production, url: %s, tokenEnv: LD_TOKEN}", ldSrv.URL)
			}
			cfg := filepath.Join(dir, "rollback.yaml")
			_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  ledger:
    kubernetes: {namespace: %s, name: %s}
    database: {dsnEnv: TEST_DSN, dir: %s}
    notify:
      slack: {tokenEnv: TEST_SLACK_TOKEN, apiURL: %s/api}
    flag: %s
`, ns, app, mig, srv.URL, flag)), 0o644)
			st := filepath.Join(dir, "r.db")
			env := []string{"TEST_DSN=" + dsn, "TEST_SLACK_TOKEN=xoxb-crash", "LD_TOKEN=api-crash", "XDG_STATE_HOME=" + filepath.Join(dir, "xdg")}
			cmd := rollbackCmd(st, "run", "ledger", "--config", cfg, "--yes")
			cmd.Env = append(cmd.Env, env...)

			var holder pgx.Tx
			if p.inside == "db-lock" {
				// A reader holds the table: the undo's ALTER waits (and
				// retries on lock_timeout) until the kill.
				var err error
				if holder, err = conn.Begin(context.Background()); err != nil {
					t.Fatal(err)
				}
				if _, err := holder.Exec(context.Background(), `LOCK TABLE transactions IN ACCESS SHARE MODE`); err != nil {
					t.Fatal(err)
				}
			}
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := make(chan struct{})
			id := ""
			var lockErr error
			go func() {
				defer close(killed)
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					if m := incidentID.FindString(sc.Text()); id == "" && m != "" {
						id = m
					}
					if p.after != "" && strings.Contains(sc.Text(), p.after) {
						if p.inside == "db-lock" {
							lockErr = waitLockWaiter(dsn, "transactions") // inside the undo's lock wait
						}
						_ = cmd.Process.Signal(syscall.SIGKILL)
						return
					}
				}
			}()
			// Inside a held request: killed once it has arrived.
			held := map[string]struct {
				arrived <-chan struct{}
				what    string
			}{"slack-summary": {sl.arrived, "the closing post"}, "flag-off": {ld.Arrived, "the flag change"}}
			if h, ok := held[p.inside]; ok {
				select {
				case <-h.arrived:
					_ = cmd.Process.Signal(syscall.SIGKILL)
				case <-time.After(180 * time.Second):
					t.Fatalf("%s never arrived", h.what)
				}
			}
			<-killed
			if lockErr != nil {
				t.Errorf("killed without seeing the undo wait for the lock: %v", lockErr)
			}
			err := cmd.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the run was not killed (%v); it ended before the kill point", err)
			}
			if holder != nil {
				_ = holder.Rollback(context.Background())
			}
			if id == "" {
				t.Fatal("the run was killed before it named its incident")
			}
			res := rollbackCmd(st, "resume", id, "--config", cfg)
			res.Env = append(res.Env, env...)
			if out, err := res.CombinedOutput(); err != nil {
				t.Fatalf("resume: %v\n%s", err, out)
			}
			checkFinished(t, st, id, ns, incident.StepMetrics) // no metric checks configured
			// The Kubernetes undo never waits for the database snapshot,
			// which only the down migration needs.
			evs := journal(t, st, id)
			if k, s := stepIndex(evs, incident.StepKube, store.PhaseStarted), stepIndex(evs, incident.StepSnapshot, store.PhaseStarted); k < 0 || s < 0 || k > s {
				t.Errorf("journal order: the undo at %d, the snapshot at %d", k, s)
			}

			sl.mu.Lock()
			defer sl.mu.Unlock()
			// A kill that lands after the summary's intent is journaled and
			// before its request leaves leaves the post uncertain: it is not
			// repeated (at most once), and the close says so. Otherwise the
			// summary was posted exactly once.
			uncertain := false
			for _, ev := range evs {
				uncertain = uncertain || ev.Step == incident.StepClose && ev.Phase == store.PhaseDone && strings.Contains(ev.Evidence, "uncertain")
			}
			wantPosts := 2
			if uncertain && len(sl.posts) == 1 {
				wantPosts = 1
			}
			if len(sl.channels) != 1 || len(sl.posts) != wantPosts || !strings.HasPrefix(sl.posts[0], "🔴") || (wantPosts == 2 && !strings.HasPrefix(sl.posts[1], "✅")) {
				t.Errorf("slack: channels %v, %d posts %q (summary uncertain: %v); want one channel, the start message and the summary at most once, and once unless uncertain", sl.channels, len(sl.posts), sl.posts, uncertain)
			}
			var deletes int
			var versions string
			ctx := context.Background()
			_ = conn.QueryRow(ctx, `SELECT count(*) FROM history_deletes`).Scan(&deletes)
			_ = conn.QueryRow(ctx, `SELECT string_agg(version, ',' ORDER BY installed_rank) FROM flyway_schema_history`).Scan(&versions)
			if deletes != 1 || versions != "1.1.0" {
				t.Errorf("history: %d delete(s), now %s; want exactly one delete, history at 1.1.0", deletes, versions)
			}
			var col int
			_ = conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'transactions' AND column_name = 'category'`).Scan(&col)
			if col != 0 {
				t.Error("the category column is still there")
			}
			if p.inside == "flag-off" {
				on, patches := ld.On("production"), ld.Patches()
				again := false
				for _, ev := range evs {
					again = again || ev.Step == incident.StepFlagOff && strings.Contains(ev.Message, "done again")
				}
				if on || patches != 2 || !again {
					t.Errorf("LaunchDarkly: flag on %v after %d PATCHes, journal says done again: %v; want it off by the resumed run's second PATCH, and said", on, patches, again)
				}
			} else if b, _ := os.ReadFile(flagFile); !strings.Contains(string(b), `"defaultVariant": "off"`) {
				t.Errorf("flag file: %s", b)
			}
		})
	}
}

// waitLockWaiter polls PostgreSQL until a session waits for a lock on
// table (a lock not granted), for up to 30 seconds.
func waitLockWaiter(dsn, table string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for {
		var n int
		err := c.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = $1 AND NOT l.granted`, table).Scan(&n)
		if err == nil && n > 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no session waited for a lock on %s in 30s (last: %d waiting, %v)", table, n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
