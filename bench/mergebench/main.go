// Command mergebench measures the undo that gives back what a release
// destroyed (db record's keyed capture, merged after the down script), on
// a real PostgreSQL it starts, with production durability settings
// (fsync, synchronous_commit and full_page_writes on) unless -fast:
//
//  1. rows lost under sustained writes (-inserts and -updates a second
//     through the release window and the rollback): this undo against
//     pg_restore of the pre-release dump, today's only way back to the data;
//  2. undo (+ merge) time for 10k / 100k / 1M captured rows and the
//     readers' worst latency meanwhile, against today's undo (the same down
//     script, nothing merged), each -repeats times, order alternated,
//     medians;
//  3. the capture's time and size against a full pg_dump of a database
//     where the release touches one small table beside a -big-mb one.
//
// It prints tables. Run it with `make bench-merge`.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rollback-dev/rollback/internal/migrate"
	"github.com/rollback-dev/rollback/internal/pgtest"
)

const (
	upRelease   = "ALTER TABLE accounts DROP COLUMN note;\n"
	downRelease = "ALTER TABLE accounts ADD COLUMN note text;\n"
)

type bench struct {
	ctx  context.Context
	pg   *pgtest.Server
	dir  string // migrations
	seq  int
	fast bool
}

func main() {
	fast := flag.Bool("fast", false, "run PostgreSQL without fsync (as the tests do); the tables say so")
	repeats := flag.Int("repeats", 3, "repeats of each timing (medians)")
	sizes := flag.String("sizes", "10000,100000,1000000", "captured rows for the timing table")
	inserts := flag.Int("inserts", 200, "inserts a second during the release window and the rollback")
	updates := flag.Int("updates", 50, "updates a second during the release window and the rollback")
	window := flag.Duration("window", 5*time.Second, "the release window (writes before the rollback)")
	bigMB := flag.Int("big-mb", 1024, "size of the table the release does not touch, for the capture/pg_dump comparison (0: skip)")
	flag.Parse()
	ctx := context.Background()
	pg, err := pgtest.StartWith(ctx, pgtest.Options{Durable: !*fast})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mergebench:", err)
		os.Exit(1)
	}
	dir, _ := os.MkdirTemp("", "mergebench-")
	b := &bench{ctx: ctx, pg: pg, dir: dir, fast: *fast}
	err = b.run(*repeats, *sizes, *inserts, *updates, *window, *bigMB)
	pg.Stop()
	os.RemoveAll(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mergebench:", err)
		os.Exit(1)
	}
}

func (b *bench) durability() string {
	if b.fast {
		return "PostgreSQL WITHOUT fsync (-fast)"
	}
	return "PostgreSQL with production durability (fsync, synchronous_commit, full_page_writes on)"
}

func (b *bench) run(repeats int, sizes string, inserts, updates int, window time.Duration, bigMB int) error {
	files := map[string]string{
		"1_base.up.sql": "SELECT 1;\n", "1_base.down.sql": "SELECT 1;\n",
		"2_release.up.sql": upRelease, "2_release.down.sql": downRelease,
	}
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(b.dir, n), []byte(body), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("mergebench: %s; release: %s", b.durability(), upRelease)
	if err := b.lost(20000, inserts, updates, window); err != nil {
		return err
	}
	if err := b.timings(repeats, sizes); err != nil {
		return err
	}
	if bigMB > 0 {
		return b.captureVsDump(bigMB)
	}
	return nil
}

// database is a fresh database with n accounts at version 1.
func (b *bench) database(n int) (string, *pgx.Conn, error) {
	b.seq++
	dsn, err := b.pg.CreateDB(b.ctx, fmt.Sprintf("run%d", b.seq))
	if err != nil {
		return "", nil, err
	}
	conn, err := pgx.Connect(b.ctx, dsn)
	if err != nil {
		return "", nil, err
	}
	_, err = conn.Exec(b.ctx, fmt.Sprintf(`CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
		INSERT INTO schema_migrations VALUES (1, false);
		CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL, note text, status text NOT NULL DEFAULT 'active');
		INSERT INTO accounts (email, note) SELECT 'u' || i || '@example.com', 'n' || i FROM generate_series(1, %d) i;
		ANALYZE accounts;`, n))
	return dsn, conn, err
}

// release records (capturing what it destroys, unless capture is false)
// and migrates.
func (b *bench) release(conn *pgx.Conn, capture bool) (time.Duration, error) {
	src, err := migrate.LoadDir(b.dir)
	if err != nil {
		return 0, err
	}
	st, err := migrate.ReadState(b.ctx, conn, migrate.GolangMigrate, "")
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if capture {
		if _, err := migrate.Capture(b.ctx, conn, "v2", src, st); err != nil {
			return 0, err
		}
	}
	took := time.Since(start)
	_, err = conn.Exec(b.ctx, upRelease+"UPDATE schema_migrations SET version = 2;")
	return took, err
}

func (b *bench) undo(conn *pgx.Conn) (*migrate.UndoResult, error) {
	src, err := migrate.LoadDir(b.dir)
	if err != nil {
		return nil, err
	}
	st, err := migrate.ReadState(b.ctx, conn, migrate.GolangMigrate, "")
	if err != nil {
		return nil, err
	}
	p, err := migrate.PlanUndo(src, st, migrate.MustVersion("1"))
	if err != nil {
		return nil, err
	}
	return migrate.Undo(b.ctx, conn, p, migrate.DefaultUndoOptions())
}

// writers inserts and updates at the given rates until stop; every
// acknowledged write is remembered.
type writers struct {
	inserted sync.Map // id -> email
	updated  sync.Map // id -> email (the last acknowledged)
	failed   atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func (b *bench) startWriters(pool *pgxpool.Pool, n, inserts, updates int) *writers {
	w := &writers{stop: make(chan struct{})}
	loop := func(rate int, write func(i int) error) {
		defer w.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		var inflight sync.WaitGroup
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				inflight.Wait()
				return
			case <-tick.C:
			}
			inflight.Add(1)
			go func() { // a slow write does not slow the rate
				defer inflight.Done()
				if err := write(i); err != nil {
					w.failed.Add(1)
				}
			}()
		}
	}
	w.wg.Add(2)
	go loop(inserts, func(i int) error {
		email := fmt.Sprintf("new%d@example.com", i)
		var id int64
		if err := pool.QueryRow(b.ctx, `INSERT INTO accounts (email) VALUES ($1) RETURNING id`, email).Scan(&id); err != nil {
			return err
		}
		w.inserted.Store(id, email)
		return nil
	})
	go loop(updates, func(i int) error {
		// Row by row in turn: no two updates in flight share a row, so
		// "the last acknowledged" is exact.
		id := int64(i%n + 1)
		email := fmt.Sprintf("changed%d@example.com", i)
		if _, err := pool.Exec(b.ctx, `UPDATE accounts SET email = $1 WHERE id = $2`, email, id); err != nil {
			return err
		}
		w.updated.Store(id, email)
		return nil
	})
	return w
}

func (w *writers) halt() { close(w.stop); w.wg.Wait() }

// count compares what the writers had acknowledged with the table.
func (w *writers) count(ctx context.Context, conn *pgx.Conn) (ins, insLost, upd, updLost int, err error) {
	got := map[int64]string{}
	rows, err := conn.Query(ctx, `SELECT id, email FROM accounts`)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	for rows.Next() {
		var id int64
		var e string
		if err := rows.Scan(&id, &e); err != nil {
			return 0, 0, 0, 0, err
		}
		got[id] = e
	}
	if err := rows.Err(); err != nil {
		return 0, 0, 0, 0, err
	}
	w.inserted.Range(func(k, v any) bool {
		ins++
		if e, ok := got[k.(int64)]; !ok || e != v.(string) {
			insLost++
		}
		return true
	})
	w.updated.Range(func(k, v any) bool {
		upd++
		if got[k.(int64)] != v.(string) {
			updLost++
		}
		return true
	})
	return ins, insLost, upd, updLost, nil
}

// lost: rows lost under sustained writes, this undo against pg_restore
// of the pre-release dump.
func (b *bench) lost(n, inserts, updates int, window time.Duration) error {
	fmt.Printf("\n1. Rows lost under %d inserts/s and %d updates/s through a %s release window and the rollback (%d accounts)\n\n", inserts, updates, window, n)
	fmt.Println("| way back | writes acknowledged (inserts / updates) | inserts lost | updates lost | pre-release notes back | rollback took |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, method := range []string{"rollback db undo (capture + merge)", "pg_restore of the pre-release dump"} {
		dsn, conn, err := b.database(n)
		if err != nil {
			return err
		}
		dump := filepath.Join(b.dir, fmt.Sprintf("pre-%d.dump", b.seq))
		capture := strings.HasPrefix(method, "rollback")
		if !capture {
			if out, err := exec.CommandContext(b.ctx, b.pg.Bin("pg_dump"), "-Fc", "-t", "accounts", "-f", dump, dsn).CombinedOutput(); err != nil {
				return fmt.Errorf("pg_dump: %v: %s", err, out)
			}
		}
		if _, err := b.release(conn, capture); err != nil {
			return err
		}
		pool, err := pgxpool.New(b.ctx, dsn)
		if err != nil {
			return err
		}
		w := b.startWriters(pool, n, inserts, updates)
		time.Sleep(window) // the release window: customers write
		start := time.Now()
		if capture {
			if _, err := b.undo(conn); err != nil {
				return err
			}
		} else {
			// Today's way back to the data: the table as it was dumped.
			if out, err := exec.CommandContext(b.ctx, b.pg.Bin("pg_restore"), "--clean", "--if-exists", "--single-transaction", "-d", dsn, dump).CombinedOutput(); err != nil {
				return fmt.Errorf("pg_restore: %v: %s", err, out)
			}
			if _, err := conn.Exec(b.ctx, `UPDATE schema_migrations SET version = 1`); err != nil {
				return err
			}
		}
		took := time.Since(start)
		time.Sleep(time.Second) // writes go on after the rollback
		w.halt()
		pool.Close()
		ins, insLost, upd, updLost, err := w.count(b.ctx, conn)
		if err != nil {
			return err
		}
		var back int
		if err := conn.QueryRow(b.ctx, fmt.Sprintf(`SELECT count(*) FROM accounts WHERE id <= %d AND note = 'n' || id`, n)).Scan(&back); err != nil {
			return err
		}
		var present int
		_ = conn.QueryRow(b.ctx, fmt.Sprintf(`SELECT count(*) FROM accounts WHERE id <= %d`, n)).Scan(&present)
		fmt.Printf("| %s | %d / %d | %d | %d | %d of %d | %s |\n", method, ins, upd, insLost, updLost, back, present, took.Round(time.Millisecond))
		conn.Close(b.ctx)
	}
	return nil
}

// timings: undo time and the readers' latency during it.
func (b *bench) timings(repeats int, sizes string) error {
	fmt.Printf("\n2. Undo time and readers' latency (4 readers: point SELECT by key), median of %d, order alternated\n\n", repeats)
	fmt.Println("| captured rows | undo | undo took | readers p99 | readers worst |")
	fmt.Println("|---:|---|---:|---:|---:|")
	for _, s := range strings.Split(sizes, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil {
			return fmt.Errorf("-sizes: %q", s)
		}
		type sample struct{ took, p99, worst time.Duration }
		got := map[string][]sample{}
		methods := []string{"today's (nothing merged)", "with the merge"}
		for r := 0; r < repeats; r++ {
			order := methods
			if r%2 == 1 {
				order = []string{methods[1], methods[0]}
			}
			for _, m := range order {
				dsn, conn, err := b.database(n)
				if err != nil {
					return err
				}
				if _, err := b.release(conn, m == methods[1]); err != nil {
					return err
				}
				lat, took, err := b.readersDuring(dsn, n, func() error { _, err := b.undo(conn); return err })
				conn.Close(b.ctx)
				if err != nil {
					return err
				}
				got[m] = append(got[m], sample{took, pct(lat, 0.99), pct(lat, 1)})
				if err := b.drop(); err != nil {
					return err
				}
			}
		}
		for _, m := range methods {
			var took, p99, worst []time.Duration
			for _, x := range got[m] {
				took, p99, worst = append(took, x.took), append(p99, x.p99), append(worst, x.worst)
			}
			fmt.Printf("| %d | %s | %s | %s | %s |\n", n, m, median(took).Round(time.Millisecond), median(p99).Round(100*time.Microsecond), median(worst).Round(100*time.Microsecond))
		}
	}
	return nil
}

// drop removes the last database (the sizes add up).
func (b *bench) drop() error {
	c, err := pgx.Connect(b.ctx, b.pg.DSN("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(b.ctx)
	_, err = c.Exec(b.ctx, fmt.Sprintf("DROP DATABASE run%d WITH (FORCE)", b.seq))
	return err
}

// readersDuring runs fn while 4 readers query by key; it returns their
// latencies and fn's duration.
func (b *bench) readersDuring(dsn string, n int, fn func() error) ([]time.Duration, time.Duration, error) {
	pool, err := pgxpool.New(b.ctx, dsn)
	if err != nil {
		return nil, 0, err
	}
	defer pool.Close()
	var mu sync.Mutex
	var lat []time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				var e string
				_ = pool.QueryRow(b.ctx, `SELECT email FROM accounts WHERE id = $1`, rand.IntN(n)+1).Scan(&e)
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the readers are at speed
	start := time.Now()
	err = fn()
	took := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	return lat, took, err
}

// captureVsDump: the capture of a small table's destroyed column beside a
// big table the release does not touch, against pg_dump of the database.
func (b *bench) captureVsDump(bigMB int) error {
	fmt.Printf("\n3. Capture against a full pg_dump: the release drops a column of a 10,000-row table beside a %d MB table\n\n", bigMB)
	dsn, conn, err := b.database(10000)
	if err != nil {
		return err
	}
	defer conn.Close(b.ctx)
	fmt.Fprintf(os.Stderr, "filling a %d MB table...\n", bigMB)
	rows := bigMB * 1024 * 1024 / 140 // ~140 bytes a row on disk
	if _, err := conn.Exec(b.ctx, fmt.Sprintf(`CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL);
		INSERT INTO big SELECT i, md5(i::text) || md5((i+1)::text) || md5((i+2)::text) FROM generate_series(1, %d) i; ANALYZE big`, rows)); err != nil {
		return err
	}
	var dbBytes int64
	_ = conn.QueryRow(b.ctx, `SELECT pg_database_size(current_database())`).Scan(&dbBytes)
	start := time.Now()
	if _, err := b.release(conn, true); err != nil {
		return err
	}
	capTook := time.Since(start)
	var capBytes int64
	if err := conn.QueryRow(b.ctx, `SELECT coalesce(sum(pg_total_relation_size(format('%I.%I', schemaname, tablename))), 0)::bigint FROM pg_tables WHERE schemaname = 'rollback_capture'`).Scan(&capBytes); err != nil {
		return err
	}
	dump := filepath.Join(b.dir, "full.dump")
	start = time.Now()
	if out, err := exec.CommandContext(b.ctx, b.pg.Bin("pg_dump"), "-Fc", "-f", dump, dsn).CombinedOutput(); err != nil {
		return fmt.Errorf("pg_dump: %v: %s", err, out)
	}
	dumpTook := time.Since(start)
	fi, err := os.Stat(dump)
	if err != nil {
		return err
	}
	fmt.Printf("database: %d MB\n\n", dbBytes>>20)
	fmt.Println("| | took | bytes |")
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| rollback db record (capture, in the database) | %s | %d |\n", capTook.Round(time.Millisecond), capBytes)
	fmt.Printf("| pg_dump -Fc of the database (compressed) | %s | %d |\n", dumpTook.Round(time.Millisecond), fi.Size())
	fmt.Printf("| ratio | %.4f× | %.4f× |\n", capTook.Seconds()/dumpTook.Seconds(), float64(capBytes)/float64(fi.Size()))
	return nil
}

func pct(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q * float64(len(s)-1))
	return s[i]
}

func median(xs []time.Duration) time.Duration { return pct(xs, 0.5) }
