package schedule

import (
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/store"
)

func TestFor(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	day := 24 * time.Hour
	cases := []struct {
		name   string
		subj   Subjects
		drills []store.Drill
		want   map[Kind]string
	}{
		{"nothing ever tested", Subjects{Release: "v1.2.0", Migration: "20261126", HasDB: true}, nil,
			map[Kind]string{DryRun: Due, Migration: Due, Chaos: Due, FireDrill: Due}},
		{"all tested recently", Subjects{Release: "v1.2.0", Migration: "20261126", HasDB: true}, []store.Drill{
			{Kind: "dry-run", Subject: "v1.2.0", OK: true, At: ago(day)},
			{Kind: "migration", Subject: "20261126", OK: true, At: ago(day)},
			{Kind: "chaos", OK: true, At: ago(30 * day)},
			{Kind: "fire-drill", OK: true, At: ago(100 * day)},
		}, map[Kind]string{DryRun: OK, Migration: OK, Chaos: OK, FireDrill: OK}},
		{"a new release and migration, calendar tests lapsed", Subjects{Release: "v1.3.0", Migration: "20261127", HasDB: true}, []store.Drill{
			{Kind: "dry-run", Subject: "v1.2.0", OK: true, At: ago(day)},
			{Kind: "migration", Subject: "20261126", OK: true, At: ago(day)},
			{Kind: "chaos", OK: true, At: ago(92 * day)},
			{Kind: "fire-drill", OK: true, At: ago(183 * day)},
		}, map[Kind]string{DryRun: Due, Migration: Due, Chaos: Overdue, FireDrill: Overdue}},
		{"failed tests stay due", Subjects{Release: "v1.2.0"}, []store.Drill{
			{Kind: "dry-run", Subject: "v1.2.0", OK: false, At: ago(time.Hour)},
			{Kind: "chaos", OK: false, At: ago(time.Hour)},
		}, map[Kind]string{DryRun: Failed, Migration: NA, Chaos: Failed, FireDrill: Due}},
	}
	for _, c := range cases {
		items := For("svc", c.subj, c.drills, now)
		if len(items) != 4 {
			t.Fatalf("%s: %d items", c.name, len(items))
		}
		for _, it := range items {
			if it.State != c.want[it.Kind] {
				t.Errorf("%s: %s is %s, want %s", c.name, it.Kind, it.State, c.want[it.Kind])
			}
			if it.IsDue() != (it.State != OK && it.State != NA) {
				t.Errorf("%s: %s IsDue %v with state %s", c.name, it.Kind, it.IsDue(), it.State)
			}
		}
	}
	// The next chaos drill is due a quarter after the last that passed.
	items := For("svc", Subjects{}, []store.Drill{{Kind: "chaos", OK: true, At: ago(10 * day)}}, now)
	if want := ago(10 * day).Add(Quarterly); !items[2].Due.Equal(want) {
		t.Errorf("chaos due %s, want %s", items[2].Due, want)
	}
}
