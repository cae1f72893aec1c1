package decide

import (
	"strings"
	"testing"
	"time"
)

func yes(ev string) Bool { return Bool{Value: true, Source: Measured, Evidence: ev} }
func no(ev string) Bool  { return Bool{Value: false, Source: Measured, Evidence: ev} }

func TestFlowchart(t *testing.T) {
	eta := func(d time.Duration) (time.Duration, bool) { return d, true }
	tests := []struct {
		name string
		f    Facts
		want Action
		note string
	}{
		{"not a trigger: P2 without breach", Facts{Severity: P2, CanaryBreached: no("")}, NoAction, ""},
		{"not a trigger: nothing known", Facts{}, NoAction, ""},
		{"canary breach alone is a trigger", Facts{Severity: P3, CanaryBreached: yes("error rate 5%"), MigrationRan: no(""), APIAdopted: no("")}, RollBack, ""},
		{"hotfix in 10m: roll forward", func() Facts { f := Facts{Severity: P1}; f.HotfixETA, f.HotfixKnown = eta(10 * time.Minute); return f }(), RollForward, ""},
		{"hotfix exactly 15m is not < 15m", func() Facts {
			f := Facts{Severity: P1, MigrationRan: no(""), APIAdopted: no("")}
			f.HotfixETA, f.HotfixKnown = eta(15 * time.Minute)
			return f
		}(), RollBack, "30–60 minutes"},
		{"no migration: roll back immediately", Facts{Severity: P1, MigrationRan: no("history at 1.1.0"), APIAdopted: no("")}, RollBack, ""},
		{"migration ran, reversible: roll back + down-migrate", Facts{Severity: P1, MigrationRan: yes(""), CanDownMigrate: yes("drill passed"), APIAdopted: no("")}, RollBackWithDownMigrate, ""},
		{"migration ran, irreversible: roll forward only", Facts{Severity: P1, MigrationRan: yes(""), CanDownMigrate: no("no undo for 1.2.0"), APIAdopted: no("")}, RollForwardOnlyOption, ""},
		{"unknown migration state is not read as safe", Facts{Severity: P1, APIAdopted: no("")}, RollForwardOnlyOption, ""},
		{"unknown down-migrate is not read as safe", Facts{Severity: P1, MigrationRan: yes(""), APIAdopted: no("")}, RollForwardOnlyOption, ""},
		{"API adopted: roll forward only", Facts{Severity: P1, MigrationRan: no(""), APIAdopted: yes("v2 traffic 40%")}, RollForwardOnlyOption, ""},
		{"API adoption unknown is noted", Facts{Severity: P1, MigrationRan: no("")}, RollBack, "API adoption is unknown"},
		{"slow fix (2h): roll back", func() Facts {
			f := Facts{Severity: P1, MigrationRan: no(""), APIAdopted: no("")}
			f.HotfixETA, f.HotfixKnown = eta(2 * time.Hour)
			return f
		}(), RollBack, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.f)
			if d.Action != tt.want {
				t.Errorf("got %s, want %s; reasons %+v", d.Action, tt.want, d.Reasons)
			}
			if len(d.Reasons) == 0 {
				t.Error("a decision without reasons")
			}
			if tt.note != "" && !strings.Contains(strings.Join(d.Notes, "\n"), tt.note) {
				t.Errorf("notes %v, want one containing %q", d.Notes, tt.note)
			}
		})
	}
}

func TestEvidenceAndOverridesAreKept(t *testing.T) {
	f := Facts{Severity: P1,
		MigrationRan:   Bool{Value: true, Source: Override, Evidence: "--migration-ran"},
		CanDownMigrate: yes("drill of 1.2.0 passed 2026-11-20"),
		APIAdopted:     no("v2 share 0.0%")}
	d := Decide(f)
	var sawOverride, sawDrill bool
	for _, r := range d.Reasons {
		sawOverride = sawOverride || r.Source == Override && r.Evidence == "--migration-ran"
		sawDrill = sawDrill || strings.Contains(r.Evidence, "drill of 1.2.0")
	}
	if !sawOverride || !sawDrill {
		t.Errorf("reasons lost provenance: %+v", d.Reasons)
	}
}

func TestParseSeverity(t *testing.T) {
	if s, err := ParseSeverity("p1"); err != nil || s != P1 {
		t.Errorf("p1: %v %v", s, err)
	}
	if _, err := ParseSeverity("P5"); err == nil {
		t.Error("P5 accepted")
	}
}
