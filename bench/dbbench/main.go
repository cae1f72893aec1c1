// Command dbbench measures down migrations on a real PostgreSQL it starts:
//
//  1. the runbook's undo (V1_2_0__Undo__add_transaction_category.sql) on a
//     table of -rows rows, with and without its UPDATE ... SET category = NULL;
//  2. p50/p99/max latency of a pgbench-style load (point reads and updates)
//     while a long transaction holds a lock on the table and the undo runs,
//     for `rollback db undo` (lock_timeout with retries) and for
//     `psql -f` of the same script.
//
// It prints a table. Run it with `make bench-db`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/pgtest"
)

const undoWithUpdate = `UPDATE transactions SET category = NULL;
ALTER TABLE transactions DROP COLUMN IF EXISTS category;
DELETE FROM flyway_schema_history WHERE version = '1.2.0';
`

const undoWithoutUpdate = `ALTER TABLE transactions DROP COLUMN IF EXISTS category;
DELETE FROM flyway_schema_history WHERE version = '1.2.0';
`

func main() {
	rows := flag.Int("rows", 1_000_000, "rows in transactions")
	clients := flag.Int("clients", 4, "load clients")
	hold := flag.Duration("hold", 3*time.Second, "how long the long transaction holds its lock")
	fast := flag.Bool("fast", false, "run PostgreSQL without fsync (as the tests do); the table says so")
	flag.Parse()
	if err := run(*rows, *clients, *hold, *fast); err != nil {
		fmt.Fprintln(os.Stderr, "dbbench:", err)
		os.Exit(1)
	}
}

func run(rows, clients int, hold time.Duration, fast bool) error {
	ctx := context.Background()
	pg, err := pgtest.StartWith(ctx, pgtest.Options{Durable: !fast})
	if err != nil {
		return err
	}
	defer pg.Stop()
	fmt.Fprintf(os.Stderr, "preparing a template database with %d rows...\n", rows)
	tmpl, err := pg.CreateDB(ctx, "tmpl")
	if err != nil {
		return err
	}
	if err := prepare(ctx, tmpl, rows); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "dbbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files := map[string]string{
		"V1_1_0__create_transactions.sql":      "SELECT 1;\n",
		"V1_2_0__add_transaction_category.sql": "SELECT 1;\n",
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
			return err
		}
	}
	seq := 0
	clone := func() (string, error) {
		seq++
		name := fmt.Sprintf("run%d", seq)
		c, err := pgx.Connect(ctx, pg.DSN("postgres"))
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE tmpl"); err != nil {
			return "", err
		}
		return pg.DSN(name), nil
	}
	planFor := func(conn *pgx.Conn, script string) (*migrate.Plan, error) {
		if err := os.MkdirAll(filepath.Join(dir, "rollback"), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "rollback", "V1_2_0__Undo__add_transaction_category.sql"), []byte(script), 0o644); err != nil {
			return nil, err
		}
		src, err := migrate.LoadDir(dir)
		if err != nil {
			return nil, err
		}
		st, err := migrate.ReadState(ctx, conn, migrate.Flyway, "")
		if err != nil {
			return nil, err
		}
		return migrate.PlanUndo(src, st, migrate.MustVersion("1.1.0"))
	}

	type row struct {
		name             string
		secs             float64
		p50, p99, maxLat time.Duration
		n                int
		note             string
	}
	var table []row

	// 1. The undo alone, with and without the UPDATE.
	for _, c := range []struct{ name, script string }{{"undo with UPDATE ... SET category = NULL", undoWithUpdate}, {"undo without the UPDATE", undoWithoutUpdate}} {
		dsn, err := clone()
		if err != nil {
			return err
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		p, err := planFor(conn, c.script)
		if err != nil {
			return err
		}
		o := migrate.DefaultUndoOptions()
		res, err := migrate.Undo(ctx, conn, p, o)
		conn.Close(ctx)
		if err != nil {
			return err
		}
		table = append(table, row{name: fmt.Sprintf("%s (%d rows)", c.name, rows), secs: res.Seconds})
	}

	// 2. Under load, while a long transaction holds a lock.
	type method struct {
		name string
		run  func(dsn string) error
	}
	def := migrate.DefaultUndoOptions()
	undoWith := func(lock time.Duration, script string, retries int) func(string) error {
		return func(dsn string) error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			p, err := planFor(conn, script)
			if err != nil {
				return err
			}
			o := migrate.DefaultUndoOptions()
			o.LockTimeout, o.Retries, o.Backoff = lock, retries, 100*time.Millisecond
			_, err = migrate.Undo(ctx, conn, p, o)
			return err
		}
	}
	methods := []method{
		{fmt.Sprintf("rollback db undo (defaults: lock_timeout %s, %d retries)", def.LockTimeout, def.Retries), undoWith(def.LockTimeout, undoWithoutUpdate, def.Retries)},
		{"rollback db undo (lock_timeout 2s, the old default)", undoWith(2*time.Second, undoWithoutUpdate, 50)},
		{"psql -f (no lock_timeout)", func(dsn string) error {
			f := dir + "-psql-undo.sql"
			defer os.Remove(f)
			if err := os.WriteFile(f, []byte(undoWithoutUpdate), 0o644); err != nil {
				return err
			}
			out, err := exec.CommandContext(ctx, "psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", dsn, "-f", f).CombinedOutput()
			if err != nil {
				return fmt.Errorf("psql: %v: %s", err, out)
			}
			return nil
		}},
	}
	for _, m := range methods {
		dsn, err := clone()
		if err != nil {
			return err
		}
		lat, took, err := underLoad(ctx, dsn, rows, clients, hold, m.run)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		r := row{name: "load during " + m.name, secs: took.Seconds(), n: len(lat)}
		r.p50, r.p99, r.maxLat = pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1)
		table = append(table, r)
	}
	// The runbook's script as written, under the same write load.
	dsn, err := clone()
	if err != nil {
		return err
	}
	lat, took, uerr := underLoad(ctx, dsn, rows, clients, hold, undoWith(2*time.Second, undoWithUpdate, 5))
	outcome := "applied"
	if uerr != nil {
		outcome = "gave up: " + uerr.Error()
		if len(outcome) > 90 {
			outcome = outcome[:90] + "…"
		}
	}
	r := row{name: "load during rollback db undo of the script WITH the UPDATE", secs: took.Seconds(), n: len(lat), note: outcome}
	r.p50, r.p99, r.maxLat = pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1)
	table = append(table, r)

	durability := "PostgreSQL with production durability (fsync, synchronous_commit, full_page_writes on)"
	if fast {
		durability = "PostgreSQL WITHOUT fsync (-fast)"
	}
	fmt.Printf("\n%s\n%-62s %10s %10s %10s %10s %8s\n", durability, "benchmark", "undo s", "p50 ms", "p99 ms", "max ms", "queries")
	for _, r := range table {
		if r.n == 0 {
			fmt.Printf("%-62s %10.3f %10s %10s %10s %8s\n", r.name, r.secs, "-", "-", "-", "-")
			continue
		}
		fmt.Printf("%-62s %10.3f %10.1f %10.1f %10.1f %8d\n", r.name, r.secs, ms(r.p50), ms(r.p99), ms(r.maxLat), r.n)
		if r.note != "" {
			fmt.Printf("    outcome: %s\n", r.note)
		}
	}
	fmt.Printf("\nload: %d clients, point SELECT and UPDATE by id; a transaction holding ACCESS SHARE on transactions for %s starts before the undo;\nlatencies are over a fixed window of hold+2s from the undo's start. Under load the undo script is the one without the UPDATE, except in the last row.\n", clients, hold)
	return nil
}

func prepare(ctx context.Context, dsn string, rows int) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for _, q := range []string{
		pgtest.FlywayHistoryDDL,
		`INSERT INTO flyway_schema_history VALUES (1, '1.1.0', 'create', 'SQL', 'V1_1_0__create_transactions.sql', NULL, 'bench', now(), 1, true),
			(2, '1.2.0', 'add category', 'SQL', 'V1_2_0__add_transaction_category.sql', NULL, 'bench', now(), 1, true)`,
		`CREATE TABLE transactions (id bigserial PRIMARY KEY, amount numeric(12,2) NOT NULL, category text)`,
		fmt.Sprintf(`INSERT INTO transactions (amount, category) SELECT g %% 1000, CASE WHEN g %% 3 = 0 THEN 'food' END FROM generate_series(1, %d) g`, rows),
		`VACUUM ANALYZE transactions`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// underLoad runs the load, takes a long lock, starts the undo, and returns
// the load's latencies from the undo's start until it finished.
func underLoad(ctx context.Context, dsn string, rows, clients int, hold time.Duration, undo func(string) error) ([]time.Duration, time.Duration, error) {
	holder, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, 0, err
	}
	defer holder.Close(ctx)
	stop := make(chan struct{})
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	measuring := make(chan struct{})
	var startMu sync.Mutex
	var started time.Time
	windowStart := func() time.Time { startMu.Lock(); defer startMu.Unlock(); return started }
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return
			}
			defer c.Close(ctx)
			id := int64(i*7919) % int64(rows)
			for n := 0; n < 10_000_000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id = (id*48271 + 1) % int64(rows)
				q := `SELECT amount FROM transactions WHERE id = $1`
				if n%2 == 1 {
					q = `UPDATE transactions SET amount = amount + 1 WHERE id = $1`
				}
				s := time.Now()
				if _, err := c.Exec(ctx, q, id+1); err != nil {
					return
				}
				d := time.Since(s)
				select {
				case <-measuring:
					mu.Lock()
					if time.Since(windowStart()) <= hold+2*time.Second {
						lat = append(lat, d)
					}
					mu.Unlock()
				default:
				}
			}
		}(i)
	}
	time.Sleep(300 * time.Millisecond) // warm up
	tx, err := holder.Begin(ctx)
	if err != nil {
		return nil, 0, err
	}
	if _, err := tx.Exec(ctx, `SELECT count(*) FROM transactions WHERE id < 10`); err != nil {
		return nil, 0, err
	}
	go func() { time.Sleep(hold); _ = tx.Commit(ctx) }()
	startMu.Lock()
	started = time.Now()
	startMu.Unlock()
	close(measuring)
	start := started
	window := time.After(hold + 2*time.Second)
	err = undo(dsn)
	took := time.Since(start)
	<-window
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return lat, took, err
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
