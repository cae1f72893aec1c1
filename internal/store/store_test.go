package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/pgtest"
)

var pg *pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "store", &pg)) }

// backends opens a fresh store of every kind.
func backends(t *testing.T) map[string]func() Store {
	n := 0
	return map[string]func() Store{
		"sqlite": func() Store {
			s, err := Open(context.Background(), filepath.Join(t.TempDir(), "state", "rollback.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func() Store {
			n++
			dsn, err := pg.CreateDB(context.Background(), fmt.Sprintf("store_%d_%d", time.Now().UnixNano()%1e6, n))
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

// TestContract runs one suite against every implementation.
func TestContract(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("incidents", func(t *testing.T) { testIncidents(t, open()) })
			t.Run("query", func(t *testing.T) { testQueryIncidents(t, open()) })
			t.Run("journal", func(t *testing.T) { testJournal(t, open()) })
			t.Run("leases", func(t *testing.T) { testLeases(t, open()) })
			t.Run("blocks", func(t *testing.T) { testBlocks(t, open()) })
			t.Run("approvals", func(t *testing.T) { testApprovals(t, open()) })
			t.Run("drills", func(t *testing.T) { testDrills(t, open()) })
		})
	}
}

func testIncidents(t *testing.T, s Store) {
	ctx := context.Background()
	day := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	a := &Incident{Service: "transaction-service", BadVersion: "v1.2.0", GoodVersion: "v1.1.5", Severity: "P1", OpenedAt: day}
	b := &Incident{Service: "ledger", OpenedAt: day.Add(time.Minute)}
	for _, inc := range []*Incident{a, b} {
		if err := s.CreateIncident(ctx, inc); err != nil {
			t.Fatal(err)
		}
	}
	if a.ID != "INC-20261126-1" || b.ID != "INC-20261126-2" || a.Status != "open" {
		t.Errorf("ids %s %s status %s", a.ID, b.ID, a.Status)
	}
	got, err := s.GetIncident(ctx, a.ID)
	if err != nil || got.BadVersion != "v1.2.0" || !got.OpenedAt.Equal(day) || got.ClosedAt != nil {
		t.Errorf("get: %+v %v", got, err)
	}
	closed := day.Add(12 * time.Minute)
	got.Status, got.ClosedAt, got.Decision = "closed", &closed, "roll-back"
	if err := s.UpdateIncident(ctx, got); err != nil {
		t.Fatal(err)
	}
	again, _ := s.GetIncident(ctx, a.ID)
	if again.Status != "closed" || again.ClosedAt == nil || !again.ClosedAt.Equal(closed) || again.Decision != "roll-back" {
		t.Errorf("after update: %+v", again)
	}
	if _, err := s.GetIncident(ctx, "INC-nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	if err := s.UpdateIncident(ctx, &Incident{ID: "INC-nope", OpenedAt: day}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update missing: %v", err)
	}
	all, _ := s.ListIncidents(ctx, "")
	mine, _ := s.ListIncidents(ctx, "transaction-service")
	if len(all) != 2 || all[0].ID != b.ID || len(mine) != 1 || mine[0].ID != a.ID {
		t.Errorf("list: all %d (first %s), mine %d", len(all), all[0].ID, len(mine))
	}
}

func testJournal(t *testing.T, s Store) {
	ctx := context.Background()
	inc := &Incident{Service: "svc"}
	if err := s.CreateIncident(ctx, inc); err != nil {
		t.Fatal(err)
	}
	add := func(ev Event) bool {
		ev.Incident = inc.ID
		added, err := s.AppendEvent(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return added
	}
	if !add(Event{Step: "declare", Phase: "started"}) || !add(Event{Step: "declare", Phase: "started"}) {
		t.Error("events without a key must always be added")
	}
	if !add(Event{Step: "notify", Phase: "done", Key: "slack-start"}) {
		t.Error("first keyed event not added")
	}
	if add(Event{Step: "notify", Phase: "done", Key: "slack-start", Message: "again"}) {
		t.Error("the same key was added twice")
	}
	// Concurrent appends keep a gapless order and one row per key.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.AppendEvent(ctx, Event{Incident: inc.ID, Step: "undo", Phase: "progress", Key: fmt.Sprintf("k%d", i%10)})
			if err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	evs, err := s.Events(ctx, inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 13 {
		t.Fatalf("%d events, want 13 (2 unkeyed, 1 slack-start, 10 distinct keys)", len(evs))
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Errorf("event %d has seq %d", i, ev.Seq)
		}
	}
	// A batch is one transaction: in order, keys already there kept as
	// they were; a failing batch leaves nothing.
	batch := []Event{{Incident: inc.ID, Step: "undo", Key: "pin:a", Message: "a"}, {Incident: inc.ID, Step: "undo", Key: "k1", Message: "not again"},
		{Incident: inc.ID, Step: "undo", Key: "pin:b", Message: "b"}}
	if err := s.AppendEvents(ctx, batch); err != nil {
		t.Fatal(err)
	}
	evs, _ = s.Events(ctx, inc.ID)
	if len(evs) != 15 || evs[13].Key != "pin:a" || evs[14].Key != "pin:b" || evs[14].Seq != 15 {
		t.Fatalf("after the batch: %d events, last %+v", len(evs), evs[len(evs)-1])
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.AppendEvents(cctx, []Event{{Incident: inc.ID, Step: "undo", Key: "pin:c"}}); err == nil {
		t.Error("a cancelled batch was journaled")
	}
	if evs, _ = s.Events(ctx, inc.ID); len(evs) != 15 {
		t.Errorf("a failed batch left %d events", len(evs)-15)
	}
}

func testLeases(t *testing.T, s Store) {
	ctx := context.Background()
	// Concurrent acquirers: exactly one wins.
	var wg sync.WaitGroup
	wins := make(chan string, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			holder := fmt.Sprintf("host-%d", i)
			_, err := s.AcquireLease(ctx, "svc", holder, time.Minute)
			var le *LeaseError
			switch {
			case err == nil:
				wins <- holder
			case errors.As(err, &le) && errors.Is(err, ErrLeaseHeld):
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	close(wins)
	var winners []string
	for w := range wins {
		winners = append(winners, w)
	}
	if len(winners) != 1 {
		t.Fatalf("winners %v, want exactly one", winners)
	}
	_, err := s.AcquireLease(ctx, "svc", "other", time.Minute)
	var le *LeaseError
	if !errors.As(err, &le) || le.Lease.Holder != winners[0] {
		t.Errorf("held lease: %v", err)
	}
	since := le.Lease.Since
	// The holder renews, keeping since.
	l, err := s.AcquireLease(ctx, "svc", winners[0], 2*time.Second)
	if err != nil || !l.Since.Equal(since) {
		t.Errorf("renew: %+v %v (since %s)", l, err, since)
	}
	// Expiry at a whole second and a fraction after it: lease times
	// compare as times, not as text of differing widths.
	if _, err := s.AcquireLease(ctx, "svc", "other", time.Minute); err == nil {
		t.Error("a live lease was taken over")
	}
	// Taken over once it has expired (2 s after the renewal), polled.
	renewed := time.Now()
	for {
		_, err := s.AcquireLease(ctx, "svc", "other", time.Minute)
		if err == nil {
			break
		}
		if time.Since(renewed) > 10*time.Second {
			t.Fatalf("expired lease not taken over: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if held := time.Since(renewed); held < 1500*time.Millisecond {
		t.Errorf("taken over %s after a 2 s renewal", held)
	}
	if err := s.ReleaseLease(ctx, "svc", "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, "svc", "third", time.Minute); err != nil {
		t.Errorf("released lease not free: %v", err)
	}
}

func TestLeaseTimesCompareAsTimes(t *testing.T) {
	a := time.Date(2026, 11, 26, 3, 1, 0, 0, time.UTC)
	b := a.Add(300 * time.Millisecond)
	if !(leaseTS(a) < leaseTS(b)) || !(leaseTS(b) < leaseTS(a.Add(time.Second))) {
		t.Errorf("%s, %s, %s do not sort as times", leaseTS(a), leaseTS(b), leaseTS(a.Add(time.Second)))
	}
	if got := parseTS(leaseTS(b)); !got.Equal(b) {
		t.Errorf("parse %s: %s", leaseTS(b), got)
	}
}

func testBlocks(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.GetBlock(ctx, "svc", "v1.2.0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unblocked: %v", err)
	}
	b := Block{Service: "svc", Version: "v1.2.0", Incident: "INC-20261126-1", Reason: "P1: 5xx spike"}
	if err := s.SetBlock(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Reason = "root cause open"
	if err := s.SetBlock(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBlock(ctx, "svc", "v1.2.0")
	if err != nil || got.Reason != "root cause open" || got.Incident != "INC-20261126-1" {
		t.Errorf("block: %+v %v", got, err)
	}
	if bs, _ := s.ListBlocks(ctx, "svc"); len(bs) != 1 {
		t.Errorf("list: %v", bs)
	}
	if err := s.DeleteBlock(ctx, "svc", "v1.2.0"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBlock(ctx, "svc", "v1.2.0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second unblock: %v", err)
	}
}

func TestSchemaUpgradesOnceAndRefusesNewer(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	for i := 0; i < 2; i++ {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		s.Close()
	}
	s, _ := Open(ctx, path)
	_, err := s.(*sqlStore).db.ExecContext(ctx, `INSERT INTO store_schema (version) VALUES (99)`)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, path); err == nil {
		t.Error("a store from a newer rollback opened without complaint")
	}
}

func testApprovals(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.GetApproval(ctx, "svc", "v1.2.0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("before: %v", err)
	}
	if err := s.Approve(ctx, Approval{Service: "svc", Release: "v1.2.0", By: "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Approve(ctx, Approval{Service: "svc", Release: "v1.2.0", By: "bob", Note: "re-reviewed"}); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetApproval(ctx, "svc", "v1.2.0")
	if err != nil || a.By != "bob" || a.Note != "re-reviewed" {
		t.Errorf("after: %+v %v", a, err)
	}
}

func TestSchemaUpgradeFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db := s.(*sqlStore).db
	// Make it a version-1 store, as an older rollback left it.
	for _, q := range []string{`DROP TABLE approvals`, `DROP TABLE drills`, `DROP INDEX incidents_status`, `DROP INDEX incidents_opened`, `DELETE FROM store_schema WHERE version >= 2`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Approve(ctx, Approval{Service: "svc", Release: "v1", By: "alice"}); err != nil {
		t.Errorf("the upgrade did not add approvals: %v", err)
	}
	if err := s.RecordDrill(ctx, Drill{Service: "svc", Kind: "chaos", OK: true}); err != nil {
		t.Errorf("the upgrade did not add drills: %v", err)
	}
}

// TestConcurrentOpen: several openers of one new SQLite file (as two
// 'rollback run' processes) all get a working store.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := Open(context.Background(), path)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			if err := s.CreateIncident(context.Background(), &Incident{Service: fmt.Sprintf("svc-%d", i)}); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testDrills(t *testing.T, s Store) {
	ctx := context.Background()
	day := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	for i, d := range []Drill{
		{Service: "svc", Kind: "dry-run", Subject: "v1.2.0", OK: true, At: day},
		{Service: "svc", Kind: "chaos", Subject: "v0.0.0-chaos", OK: false, Detail: "detector silent", At: day.Add(time.Hour)},
		{Service: "other", Kind: "fire-drill", OK: true, At: day.Add(2 * time.Hour)},
	} {
		if err := s.RecordDrill(ctx, d); err != nil {
			t.Fatalf("drill %d: %v", i, err)
		}
	}
	got, err := s.ListDrills(ctx, "svc")
	if err != nil || len(got) != 2 {
		t.Fatalf("svc drills: %+v %v", got, err)
	}
	if got[0].Kind != "chaos" || got[0].OK || got[0].Detail != "detector silent" || !got[0].At.Equal(day.Add(time.Hour)) {
		t.Errorf("newest first: got %+v", got[0])
	}
	if got[1].Subject != "v1.2.0" || !got[1].OK {
		t.Errorf("got %+v", got[1])
	}
	all, _ := s.ListDrills(ctx, "")
	if len(all) != 3 || all[0].Service != "other" {
		t.Errorf("all: %+v", all)
	}
}

func testQueryIncidents(t *testing.T, s Store) {
	ctx := context.Background()
	base := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	for i := 0; i < 7; i++ {
		st := StatusClosed
		if i%3 == 0 {
			st = StatusOpen
		}
		svc := "a"
		if i%2 == 1 {
			svc = "b"
		}
		// Two incidents share each opening time: pages break ties by ID.
		if err := s.CreateIncident(ctx, &Incident{ID: fmt.Sprintf("INC-%d", i), Service: svc, Status: st, OpenedAt: base.Add(time.Duration(i/2) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(incs []Incident) string {
		var out []string
		for _, inc := range incs {
			out = append(out, inc.ID)
		}
		return strings.Join(out, ",")
	}
	var pages []string
	before := ""
	for {
		page, err := s.QueryIncidents(ctx, IncidentQuery{Limit: 3, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		pages = append(pages, ids(page))
		before = page[len(page)-1].ID
	}
	if got := strings.Join(pages, " | "); got != "INC-6,INC-5,INC-4 | INC-3,INC-2,INC-1 | INC-0" {
		t.Errorf("pages: %s", got)
	}
	open, err := s.QueryIncidents(ctx, IncidentQuery{Status: []Status{StatusOpen}})
	if err != nil || ids(open) != "INC-6,INC-3,INC-0" {
		t.Errorf("open: %s %v", ids(open), err)
	}
	b, err := s.QueryIncidents(ctx, IncidentQuery{Service: "b", Status: []Status{StatusOpen, StatusClosed}, Limit: 2})
	if err != nil || ids(b) != "INC-5,INC-3" {
		t.Errorf("service b: %s %v", ids(b), err)
	}
}
