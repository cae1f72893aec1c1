package flags

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rollback-dev/rollback/internal/flags/flagstest"
)

func TestLaunchDarkly(t *testing.T) {
	fake := flagstest.NewLaunchDarkly("api-secret-token", "payments")
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	ld := &LaunchDarkly{BaseURL: srv.URL, Token: "api-secret-token", Project: "payments", Environment: "production"}
	ctx := context.Background()
	if err := TurnOffAndConfirm(ctx, ld, "transaction-category", "INC-20261126-1: rollback of v1.2.0"); err != nil {
		t.Fatal(err)
	}
	if fake.On("production") || !fake.On("staging") {
		t.Errorf("production on %v, staging on %v: want production off, staging untouched", fake.On("production"), fake.On("staging"))
	}
	if c := fake.Comments(); len(c) != 1 || !strings.Contains(c[0], "INC-20261126-1") {
		t.Errorf("comments %v", c)
	}
	// Idempotent.
	if err := TurnOffAndConfirm(ctx, ld, "transaction-category", "again"); err != nil {
		t.Fatal(err)
	}
	bad := &LaunchDarkly{BaseURL: srv.URL, Token: "wrong", Project: "payments", Environment: "production"}
	err := bad.TurnOff(ctx, "transaction-category", "x")
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("bad token: %v (must not echo the token)", err)
	}
	// The runbook's mistake: "production" as the project key.
	seed := &LaunchDarkly{BaseURL: srv.URL, Token: "api-secret-token", Project: "production", Environment: "production"}
	if err := seed.TurnOff(ctx, "transaction-category", "x"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("project key = environment: %v", err)
	}
}

func TestUnleash(t *testing.T) {
	var mu sync.Mutex
	enabled := map[string]bool{"production": true, "development": true}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "unleash-admin-token" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		const base = "/api/admin/projects/default/features/transaction-category"
		switch {
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, base+"/environments/") && strings.HasSuffix(r.URL.Path, "/off"):
			env := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, base+"/environments/"), "/off")
			if _, ok := enabled[env]; !ok {
				http.Error(w, "no such environment", http.StatusNotFound)
				return
			}
			enabled[env] = false
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodGet && r.URL.Path == base:
			var envs []map[string]any
			for k, v := range enabled {
				envs = append(envs, map[string]any{"name": k, "enabled": v})
			}
			json.NewEncoder(w).Encode(map[string]any{"name": "transaction-category", "environments": envs})
		default:
			http.Error(w, "not found", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	u := &Unleash{BaseURL: srv.URL, Token: "unleash-admin-token", Environment: "production"}
	if err := TurnOffAndConfirm(context.Background(), u, "transaction-category", "INC-1"); err != nil {
		t.Fatal(err)
	}
	if enabled["production"] || !enabled["development"] {
		t.Errorf("state %v", enabled)
	}
	u.Environment = "nope"
	if err := u.TurnOff(context.Background(), "transaction-category", ""); err == nil {
		t.Error("unknown environment: want an error")
	}
}

func TestFlagd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flags.json")
	orig := `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "transaction-category": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on",
      "targeting": {"if": [{"==": [{"var": "tier"}, "beta"]}, "on", "off"]}
    },
    "new-checkout": {"state": "ENABLED", "variants": {"a": "x", "b": "y"}, "defaultVariant": "a"},
    "untouched": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}
  }
}`
	if err := os.WriteFile(path, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	f := &Flagd{Path: path}
	ctx := context.Background()
	if on, _ := f.IsOn(ctx, "transaction-category"); !on {
		t.Fatal("flag should start on")
	}
	if err := TurnOffAndConfirm(ctx, f, "transaction-category", "INC-1"); err != nil {
		t.Fatal(err)
	}
	if err := TurnOffAndConfirm(ctx, f, "new-checkout", "INC-1"); err != nil {
		t.Fatal(err)
	}
	_, flags, err := f.read()
	if err != nil {
		t.Fatal(err)
	}
	tc := flags["transaction-category"].(map[string]any)
	if tc["defaultVariant"] != "off" || tc["targeting"] != nil {
		t.Errorf("transaction-category %v", tc)
	}
	if flags["new-checkout"].(map[string]any)["state"] != "DISABLED" {
		t.Errorf("a flag without a false variant is disabled: %v", flags["new-checkout"])
	}
	if on, _ := f.IsOn(ctx, "untouched"); !on {
		t.Error("another flag changed")
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v not kept", st.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".flagd-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := f.TurnOff(ctx, "no-such-flag", ""); !errors.Is(err, ErrNoFlag) {
		t.Errorf("missing flag: %v", err)
	}
}

// A flag file reached through symlinks (as a ConfigMap mount is) is
// changed where it really lives: the links stay links, the read-back
// sees the change, and other flags' numbers stay exactly as written.
func TestFlagdThroughSymlinksKeepsNumbers(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "..2026_11_27")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	const doc = `{"flags": {
  "transaction-category": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
  "big": {"state": "ENABLED", "variants": {"a": 12345678901234567890, "b": 0.1, "c": 1e400}, "defaultVariant": "a"}
}}`
	if err := os.WriteFile(filepath.Join(data, "flags.json"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_11_27", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "flags.json")
	if err := os.Symlink(filepath.Join("..data", "flags.json"), link); err != nil {
		t.Fatal(err)
	}
	f := &Flagd{Path: link}
	if err := TurnOffAndConfirm(context.Background(), f, "transaction-category", "INC-1"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", st.Mode(), err)
	}
	b, err := os.ReadFile(filepath.Join(data, "flags.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"12345678901234567890", "0.1", "1e400", `"defaultVariant": "off"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("rewritten file lacks %s:\n%s", want, b)
		}
	}
}
