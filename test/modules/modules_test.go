// Package modules checks how rollback's module and the sandbox's relate.
package modules

import (
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// deps lists the packages cmd builds from dir's module, each with the
// module version it comes from (the standard library's without one).
func deps(t *testing.T, dir string, pkgs ...string) map[string]string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}} {{with .Module}}{{with .Replace}}{{.Path}}@{{.Version}}{{else}}{{.Path}}@{{.Version}}{{end}}{{end}}"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list in %s: %v\n%s", dir, err, msg)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, mod, _ := strings.Cut(l, " ")
		m[pkg] = mod
	}
	return m
}

// The sandbox and kwok build after rollback and reuse the packages its
// build compiled only where both resolve a package to the same module
// version (a difference anywhere below a package compiles it again).
// A dependency bumped in one module and not the other fails here, with
// the 'go get' that aligns them.
func TestSandboxBuildsWithRollbacksVersions(t *testing.T) {
	// go test runs a test in its package's directory (the source file's
	// own path is a module path under -trimpath).
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	main := deps(t, root, "./cmd/rollback")
	sbx := deps(t, filepath.Join(root, "sandbox"), "./cmd/rollback-sandbox")
	differ := map[string]string{}
	shared := 0
	for pkg, m := range sbx {
		r, ok := main[pkg]
		if !ok || r == "" {
			continue
		}
		if r != m {
			differ[strings.Split(m, "@")[0]] = m + " (rollback: " + r + ")"
			continue
		}
		shared++
	}
	if len(differ) > 0 {
		var lines []string
		for _, d := range differ {
			lines = append(lines, d)
		}
		sort.Strings(lines)
		t.Errorf("the sandbox's module resolves %d modules rollback's build also uses to other versions; align them (cd sandbox && go get MODULE@VERSION, or bump rollback's):\n  %s",
			len(lines), strings.Join(lines, "\n  "))
	}
	if shared < 300 {
		t.Errorf("only %d non-standard packages shared: the check compares nothing like the real builds", shared)
	}
	t.Logf("%d non-standard packages of rollback's build reused by the sandbox's", shared)
}
