package incident

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/store"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// sample is a run as the executor journals it: steps with their outcomes,
// one skipped, one over budget.
func sample() (*store.Incident, []store.Event) {
	closed := t0.Add(12 * time.Minute)
	inc := &store.Incident{ID: "INC-20261126-1", Service: "transaction-service", Severity: "P1", BadVersion: "v1.2.0", GoodVersion: "v1.1.5",
		Decision: "roll-back-with-down-migration", Status: "closed", OpenedAt: t0, ClosedAt: &closed,
		Rationale: `[{"question":"Is a hotfix available in < 15 min?","answer":"no: ETA 40m0s"},{"question":"Can we safely down-migrate?","answer":"yes","source":"measured","evidence":"drill passed"}]`}
	var evs []store.Event
	at := t0
	step := func(name string, took time.Duration, phase, evidence string) {
		evs = append(evs, store.Event{Incident: inc.ID, Time: at, Step: name, Phase: "started"})
		at = at.Add(took)
		ev := store.Event{Incident: inc.ID, Time: at, Step: name, Phase: store.Phase(phase), Evidence: evidence}
		if phase == "failed" {
			ev.Evidence, ev.Message = "", evidence
		}
		evs = append(evs, ev)
	}
	step(StepDeclare, 40*time.Second, "done", "#incident-2026-11-26-transaction-service, PagerDuty acknowledged")
	step(StepKube, 4*time.Minute, "done", "revision 2 -> 3 (v1.1.5), 3 ready pods")
	evs = append(evs, store.Event{Incident: inc.ID, Time: at, Step: StepKube, Phase: "overrun", Message: "took 4m0s, budget 3m0s"})
	step(StepBlock, time.Second, "failed", "store unreachable")
	step(StepSnapshot, 20*time.Second, "done", "before-undo-1.2.0-to-1.1.0.dump (sha256 1a2b…)")
	step(StepDownMig, 30*time.Second, "done", "1.2.0 undone; history at 1.1.0; schema equals the recorded one")
	step(StepSmoke, 10*time.Second, "done", "1/1 smoke checks passed")
	step(StepMetrics, 2*time.Minute, "done", "5xx 0.04% ≤ 0.1%")
	step(StepFlagOff, 5*time.Second, "done", "skipped: no feature flag configured")
	step(StepClose, 5*time.Second, "done", "summary posted")
	return inc, evs
}

func TestChecklist(t *testing.T) {
	inc, evs := sample()
	items := Checklist(inc, evs)
	if len(items) != 11 {
		t.Fatalf("%d items, want the runbook's 11", len(items))
	}
	// In the order a run takes the steps: the block right after the undo,
	// the snapshot after it.
	want := []Status{Done, Done, Done, Failed, Done, Done, Done, Done, Skipped, Done, Pending}
	for i, it := range items {
		if it.Status != want[i] {
			t.Errorf("item %d %q: %s, want %s", i+1, it.Text, it.Status, want[i])
		}
	}
	if items[2].Overrun == "" || items[2].Took != 4*time.Minute {
		t.Errorf("kube item: %+v", items[2])
	}
	if ttr, ok := TimeToRecover(inc, evs); !ok || ttr != 7*time.Minute+41*time.Second {
		t.Errorf("time to recover %s %v", ttr, ok)
	}
	// A step that started and never ended is running.
	running := append(evs[:len(evs):len(evs)], store.Event{Step: StepReview, Phase: "started", Time: t0.Add(time.Hour)})
	if Checklist(inc, running)[10].Status != Running {
		t.Error("started step not shown as running")
	}
}

func TestReviewState(t *testing.T) {
	inc, evs := sample()
	closed := *inc.ClosedAt
	if got := ReviewDue(inc); !got.Equal(closed.Add(48 * time.Hour)) {
		t.Errorf("due %s", got)
	}
	for now, want := range map[time.Time]string{
		closed.Add(time.Hour):      "scheduled",
		closed.Add(30 * time.Hour): "due",
		closed.Add(49 * time.Hour): "overdue",
	} {
		if got := ReviewState(inc, evs, now); got != want {
			t.Errorf("at +%s: %s, want %s", now.Sub(closed), got, want)
		}
	}
	done := append(evs, store.Event{Step: StepReviewDone, Phase: "done"})
	if ReviewState(inc, done, closed.Add(100*time.Hour)) != "done" {
		t.Error("a held review is not overdue")
	}
}

func TestReportGolden(t *testing.T) {
	inc, evs := sample()
	got := Report(inc, evs, t0.Add(time.Hour))
	path := filepath.Join("testdata", "report.md.golden")
	if *update {
		_ = os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("report differs from %s:\n%s", path, got)
	}
}

func TestSummaryOutcomes(t *testing.T) {
	inc, evs := sample()
	o := SummaryOutcomes(Checklist(inc, evs))
	want := Outcomes{ErrorRate: "5xx 0.04% ≤ 0.1%", DownMigration: "applied ✅ (1.2.0 undone; history at 1.1.0; schema equals the recorded one)",
		SmokeTests: "✅ 1/1 smoke checks passed"}
	if o != want {
		t.Errorf("got %+v\nwant %+v", o, want)
	}
	// The metric step's error-rate part is picked out; skipped steps say why.
	at := t0.Add(time.Hour)
	evs = append(evs,
		store.Event{Step: StepMetrics, Phase: "done", Time: at, Evidence: "error-rate: 0.000% errors (0 of 2841 requests in 71s; 95% upper bound 0.095%); p99-latency: 25ms"},
		store.Event{Step: StepDownMig, Phase: "done", Time: at, Evidence: "skipped: no database configured"})
	o = SummaryOutcomes(Checklist(inc, evs))
	if o.ErrorRate != "0.000% errors (0 of 2841 requests in 71s; 95% upper bound 0.095%) ✅" || o.DownMigration != "not needed (no database configured)" {
		t.Errorf("got %+v", o)
	}
	if o := SummaryOutcomes(nil); o.ErrorRate != "not verified (pending)" || o.SmokeTests != "pending" {
		t.Errorf("nothing journaled: %+v", o)
	}
}
