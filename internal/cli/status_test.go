package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-dev/rollback/internal/incident"
	"github.com/rollback-dev/rollback/internal/store"
)

func TestStatusAndReport(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "r.db")
	env := map[string]string{"ROLLBACK_STORE": db}
	ctx := context.Background()
	s, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Now().Add(-50 * time.Hour)
	closed := opened.Add(10 * time.Minute)
	old := &store.Incident{Service: "transaction-service", BadVersion: "v1.2.0", GoodVersion: "v1.1.5", Decision: "roll-back",
		Status: "closed", OpenedAt: opened, ClosedAt: &closed}
	open := &store.Incident{Service: "ledger", Status: "open", OpenedAt: time.Now()}
	for _, inc := range []*store.Incident{old, open} {
		if err := s.CreateIncident(ctx, inc); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range []store.Event{
		{Step: incident.StepKube, Phase: "started", Time: opened.Add(time.Minute)},
		{Step: incident.StepKube, Phase: "done", Time: opened.Add(3 * time.Minute), Evidence: "revision 3 running v1.1.5"},
	} {
		ev.Incident = old.ID
		if _, err := s.AppendEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	code, out, _ := runCLI(t, env, "status")
	if code != 0 || !strings.Contains(out, old.ID) || !strings.Contains(out, "overdue") || !strings.Contains(out, open.ID) {
		t.Errorf("status: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, env, "status", old.ID)
	if code != 0 || !strings.Contains(out, "time to recover: 3m00s") || !strings.Contains(out, "revision 3 running v1.1.5") || strings.Count(out, "\n") < 13 {
		t.Errorf("status of one: %d\n%s", code, out)
	}
	pir := filepath.Join(dir, "pir.md")
	if code, _, errOut := runCLI(t, env, "report", old.ID, "--file", pir); code != 0 {
		t.Fatal(errOut)
	}
	b, _ := os.ReadFile(pir)
	if !strings.Contains(string(b), "# Post-incident review: "+old.ID) || !strings.Contains(string(b), "status: overdue") {
		t.Errorf("report:\n%s", b)
	}
	if code, _, errOut := runCLI(t, env, "report", "INC-nope"); code != ExitUsage || !strings.Contains(errOut, "no incident INC-nope") {
		t.Errorf("unknown incident: %d %s", code, errOut)
	}
}

// status shows each configured service's testing schedule: last run and
// next due, from the store's drills.
func TestStatusShowsTheTestingSchedule(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "r.db")
	cfg := filepath.Join(dir, "rollback.yaml")
	_ = os.WriteFile(cfg, []byte("apiVersion: rollback/v1\nkind: Config\nservices:\n  api:\n    kubernetes: {namespace: shop}\n"), 0o644)
	env := map[string]string{"ROLLBACK_STORE": db, "ROLLBACK_CONFIG": cfg, "KUBECONFIG": filepath.Join(dir, "none")}
	s, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	last := time.Now().Add(-100 * 24 * time.Hour).UTC().Truncate(time.Second)
	_ = s.RecordDrill(context.Background(), store.Drill{Service: "api", Kind: "chaos", OK: true, At: last, Detail: "detected in 20s"})
	s.Close()
	code, out, errOut := runCLI(t, env, "status")
	if code != 0 || !strings.Contains(out, "Rollback testing schedule") {
		t.Fatalf("status: %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"chaos", last.Format(time.RFC3339) + " passed", "overdue", "fire-drill", "never", "semi-annually"} {
		if !strings.Contains(out, want) {
			t.Errorf("the schedule lacks %q:\n%s", want, out)
		}
	}
}
