package kinds

import "testing"

// Every spelling names one kind, and a kind's name is one of its own.
func TestSpellingsAreUnique(t *testing.T) {
	seen := map[string]string{}
	for _, s := range Table {
		for _, n := range append([]string{s.Name}, s.Aliases...) {
			if prev, ok := seen[n]; ok {
				t.Errorf("%q names both %s and %s", n, prev, s.Name)
			}
			seen[n] = s.Name
		}
		if got, ok := Lookup(s.Name); !ok || got.Name != s.Name {
			t.Errorf("Lookup(%q) = %v, %v", s.Name, got.Name, ok)
		}
		if s.Config != "" {
			if got, ok := Lookup(s.Config); !ok || got.Name != s.Name {
				t.Errorf("rollback.yaml's %q is not a spelling of %s", s.Config, s.Name)
			}
		}
	}
	for _, bad := range []string{"", "services.apps", "pod", "deployment.", "DEPLOYMENT.APPS.X"} {
		if _, ok := Lookup(bad); ok {
			t.Errorf("Lookup(%q) accepted", bad)
		}
	}
	if _, ok := Lookup("StatefulSets.Apps"); !ok {
		t.Error("kubectl's spellings are case-insensitive")
	}
}
