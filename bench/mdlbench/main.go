// Command mdlbench measures what a down migration does to readers on a
// real MariaDB it starts (production durability unless -fast): a long
// transaction has read the table (so it holds its metadata lock), and the
// release's multi-statement down script runs. Readers query the table
// throughout. The same script runs two ways, alternating which goes first,
// each on a fresh copy of the same database:
//
//   - `rollback db undo`'s undo (the migrate package's, in-process): each
//     lock wait cut at 200 ms and retried;
//   - the `mariadb` client reading the script: the ALTER waits for the
//     metadata lock (lock_wait_timeout defaults to a day), and every reader
//     queues behind it.
//
// It prints, per way, the median and range over -repeats of the readers'
// worst latency and of the time to undo, and the ratio of the medians.
// Run it with `make bench-mdl`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/mytest"
)

const (
	up1   = "CREATE TABLE orders (id INT PRIMARY KEY, total INT NOT NULL, note VARCHAR(50));\n"
	up2   = "ALTER TABLE orders ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'new';\nCREATE INDEX orders_status ON orders (status);\n"
	down2 = "DROP INDEX orders_status ON orders;\nALTER TABLE orders DROP COLUMN status;\n"
)

func main() {
	rows := flag.Int("rows", 100_000, "rows in orders")
	readers := flag.Int("readers", 8, "concurrent readers")
	hold := flag.Duration("hold", 3*time.Second, "how long the long transaction stays open once the undo starts")
	repeats := flag.Int("repeats", 5, "trials per way")
	fast := flag.Bool("fast", false, "run MariaDB without a log flush per commit (as the tests do); the table says so")
	flag.Parse()
	if err := run(*rows, *readers, *hold, *repeats, *fast); err != nil {
		fmt.Fprintln(os.Stderr, "mdlbench:", err)
		os.Exit(1)
	}
}

type trial struct {
	worst, undo time.Duration
	reads       int
}

func run(rows, readers int, hold time.Duration, repeats int, fast bool) error {
	ctx := context.Background()
	srv, err := mytest.StartWith(ctx, mytest.Options{Durable: !fast})
	if err != nil {
		return err
	}
	defer srv.Stop()
	dir, err := os.MkdirTemp("", "mdlbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for n, b := range map[string]string{"1_init.up.sql": up1, "1_init.down.sql": "DROP TABLE orders;\n", "2_status.up.sql": up2, "2_status.down.sql": down2} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
			return err
		}
	}
	ways := []string{"rollback db undo", "mariadb < down.sql"}
	results := map[string][]trial{}
	for i := 0; i < repeats; i++ {
		order := ways
		if i%2 == 1 {
			order = []string{ways[1], ways[0]}
		}
		for _, way := range order {
			name := fmt.Sprintf("b%d_%d", i, len(results[way]))
			if way == ways[1] {
				name = "c" + name
			}
			tr, err := oneTrial(ctx, srv, dir, name, way == ways[0], rows, readers, hold)
			if err != nil {
				return fmt.Errorf("%s, trial %d: %w", way, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "%-20s trial %d: readers' worst %s, undo %s, %d reads\n", way, i+1, tr.worst.Round(time.Millisecond), tr.undo.Round(time.Millisecond), tr.reads)
			results[way] = append(results[way], tr)
		}
	}
	durability := "production durability (innodb_flush_log_at_trx_commit=1, doublewrite on)"
	if fast {
		durability = "NO durability (-fast: innodb_flush_log_at_trx_commit=0, doublewrite off)"
	}
	fmt.Printf("\nMariaDB %s, %s; %d rows, %d readers, a transaction holding the table's metadata lock %s into the undo; %d trials per way, order alternated\n\n",
		srv.Version, durability, rows, readers, hold, repeats)
	fmt.Printf("| way | readers' worst latency, median (range) | time to undo, median (range) |\n|---|---:|---:|\n")
	med := map[string]time.Duration{}
	for _, way := range ways {
		w := pick(results[way], func(t trial) time.Duration { return t.worst })
		u := pick(results[way], func(t trial) time.Duration { return t.undo })
		med[way] = w[len(w)/2]
		fmt.Printf("| %s | %s (%s–%s) | %s (%s–%s) |\n", way, ms(w[len(w)/2]), ms(w[0]), ms(w[len(w)-1]), ms(u[len(u)/2]), ms(u[0]), ms(u[len(u)-1]))
	}
	fmt.Printf("\nratio of the medians (rollback / client): %.3f×\n", float64(med[ways[0]])/float64(med[ways[1]]))
	return nil
}

func pick(ts []trial, f func(trial) time.Duration) []time.Duration {
	var out []time.Duration
	for _, t := range ts {
		out = append(out, f(t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// oneTrial: a fresh database at version 2 with rows rows, readers running,
// a transaction that read the table, then the undo; the transaction ends
// hold after the undo started.
func oneTrial(ctx context.Context, srv *mytest.Server, dir, name string, withRollback bool, rows, readers int, hold time.Duration) (trial, error) {
	dsn, err := srv.CreateDB(ctx, name)
	if err != nil {
		return trial{}, err
	}
	db, err := srv.Open(name)
	if err != nil {
		return trial{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(readers + 4)
	for _, q := range []string{up1, "CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL)"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return trial{}, err
		}
	}
	for i := 0; i < rows; i += 1000 {
		var vals []string
		for j := i; j < min(i+1000, rows); j++ {
			vals = append(vals, fmt.Sprintf("(%d, %d, 'n%d')", j, j%1000, j))
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO orders VALUES "+strings.Join(vals, ",")); err != nil {
			return trial{}, err
		}
	}
	for _, q := range strings.Split(strings.TrimSpace(up2), "\n") {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return trial{}, err
		}
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO schema_migrations VALUES (2, 0)"); err != nil {
		return trial{}, err
	}

	// Readers, from now until the end.
	rctx, stopReaders := context.WithCancel(ctx)
	defer stopReaders()
	var mu sync.Mutex
	var lat []struct {
		at time.Time
		d  time.Duration
	}
	var wg sync.WaitGroup
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := r; rctx.Err() == nil; i += readers {
				t0 := time.Now()
				var total int
				if err := db.QueryRowContext(rctx, "SELECT total FROM orders WHERE id = ?", i%rows).Scan(&total); err != nil && rctx.Err() == nil {
					continue
				}
				mu.Lock()
				lat = append(lat, struct {
					at time.Time
					d  time.Duration
				}{t0, time.Since(t0)})
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}(r)
	}
	// The long transaction.
	holder, err := db.Conn(ctx)
	if err != nil {
		return trial{}, err
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, "BEGIN"); err != nil {
		return trial{}, err
	}
	if _, err := holder.ExecContext(ctx, "SELECT COUNT(*) FROM orders"); err != nil {
		return trial{}, err
	}
	time.Sleep(1100 * time.Millisecond)
	start := time.Now()
	go func() {
		time.Sleep(hold)
		_, _ = holder.ExecContext(context.Background(), "COMMIT")
	}()
	if withRollback {
		p, err := migrate.Open(ctx, migrate.ProviderOptions{DSN: dsn, Dir: dir, NeedSource: true})
		if err != nil {
			return trial{}, err
		}
		plan, err := p.Plan(ctx, mustVersion("1"))
		if err == nil {
			_, err = p.Undo(ctx, plan, migrate.DefaultUndoOptions())
		}
		p.Close()
		if err != nil {
			return trial{}, err
		}
	} else {
		cmd := exec.CommandContext(ctx, "mariadb", "-h", "127.0.0.1", "-P", fmt.Sprint(srv.Port), "-u", "root", name)
		cmd.Stdin = strings.NewReader(down2 + "DELETE FROM schema_migrations;\nINSERT INTO schema_migrations VALUES (1, 0);\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return trial{}, fmt.Errorf("mariadb: %v: %s", err, out)
		}
	}
	tr := trial{undo: time.Since(start)}
	time.Sleep(300 * time.Millisecond)
	stopReaders()
	wg.Wait()
	for _, l := range lat {
		if !l.at.Before(start.Add(-100*time.Millisecond)) && l.d > tr.worst {
			tr.worst = l.d
		}
		tr.reads++
	}
	_, _ = db.ExecContext(ctx, "DROP DATABASE "+name)
	return tr, nil
}

func mustVersion(s string) migrate.Version {
	v, err := migrate.ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}
