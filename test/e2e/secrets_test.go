package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretCanary plants a canary in every secret-bearing setting (the
// service database's and the store's DSN passwords, the Slack token, the
// PagerDuty routing key and API token, a webhook URL whose path is its
// secret and whose host refuses connections, the flag service's token),
// runs the whole runbook, and looks for the canary in stdout, stderr, the
// store, status and report output, the snapshot's files, and the command
// lines of the client programs rollback starts (pg_dump, through a
// wrapper that records its arguments).
func TestSecretCanary(t *testing.T) {
	parallel(t)
	const canary = "CANARY7x9"
	ns := namespace(t)
	deploy(t, ns, "v1.1.5", "v1.2.0")
	dsn, mig, _ := dbService(t, ns)
	secretDSN := strings.Replace(dsn, "postgres@", "postgres:pw-"+canary+"@", 1)
	if secretDSN == dsn {
		t.Fatalf("cannot plant a password in %s", dsn)
	}
	storeDB := "store_secret_" + strings.ReplaceAll(ns, "-", "_")
	storeDSN, err := pg.CreateDB(context.Background(), storeDB)
	if err != nil {
		t.Fatal(err)
	}
	secretStore := strings.Replace(storeDSN, "postgres@", "postgres:st-"+canary+"@", 1)

	dir := t.TempDir()
	realDump, err := exec.LookPath("pg_dump")
	if err != nil {
		t.Fatal(err)
	}
	wrapDir := filepath.Join(dir, "bin")
	argvLog := filepath.Join(dir, "pg_dump.argv")
	_ = os.MkdirAll(wrapDir, 0o755)
	wrapper := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$@\" >> %q\nexec %q \"$@\"\n", argvLog, realDump)
	if err := os.WriteFile(filepath.Join(wrapDir, "pg_dump"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	refused := closedPort(t)
	hung := hungServer(t)
	cfg := webConfig(t, ns, fmt.Sprintf(`    database: {dsnEnv: TEST_DSN, dir: %s}
    notify:
      timeout: 1s
      deadline: 5s
      slack: {tokenEnv: SLACK_TOKEN, apiURL: %s/api}
      pagerduty: {routingKeyEnv: PD_KEY, eventsURL: %s/v2/enqueue, apiTokenEnv: PD_TOKEN, from: oncall@example.com, apiURL: %s}
      webhooks:
        - {name: status, format: slack, urlEnv: HOOK_URL}
    flag: {provider: launchdarkly, key: transaction-category, project: default, environment: production, url: %s, tokenEnv: LD_TOKEN, timeout: 3s}
`, mig, hung, refused, refused, refused))
	state := filepath.Join(dir, "state")
	run := func(args ...string) (string, string, error) {
		cmd := rollbackCmd(secretStore, append(args, "--config", cfg)...)
		cmd.Env = append(cmd.Env, "TEST_DSN="+secretDSN, "SLACK_TOKEN=xoxb-"+canary, "PD_KEY=rk-"+canary, "PD_TOKEN=pt-"+canary,
			"HOOK_URL="+refused+"/services/T0/B0/"+canary, "LD_TOKEN=ld-"+canary, "XDG_STATE_HOME="+state,
			"PATH="+wrapDir+string(os.PathListSeparator)+os.Getenv("PATH"))
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	var outputs []string
	out, errOut, err := run("run", "web", "--yes", "--pagerduty-incident", "Q1PAGED")
	outputs = append(outputs, out, errOut)
	if err != nil {
		t.Fatalf("run: %v\n%s%s", err, out, errOut)
	}
	id := incidentID.FindString(out + errOut)
	for _, args := range [][]string{{"status", id}, {"status", id, "-o", "json"}, {"report", id}, {"status"}} {
		o, e, err := run(args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, e)
		}
		outputs = append(outputs, o, e)
	}
	// The run did reach the places a secret could leak from.
	all := strings.Join(outputs, "\n")
	for _, want := range []string{"webhook status: start failed", "pg_restore", "flag"} {
		if !strings.Contains(all, want) {
			t.Errorf("the output lacks %q: the canary was not exercised there", want)
		}
	}
	if strings.Contains(all, canary) {
		t.Errorf("a secret reached the output:\n%s", excerpt(all, canary))
	}
	argv, err := os.ReadFile(argvLog)
	if err != nil || !strings.Contains(string(argv), "--dbname") {
		t.Fatalf("pg_dump was not run through the wrapper: %v %s", err, argv)
	}
	if strings.Contains(string(argv), canary) {
		t.Errorf("pg_dump's command line carries a secret:\n%s", argv)
	}
	// The store's content, dumped as text.
	dump, err := exec.Command(realDump, "--data-only", "--dbname", storeDSN).CombinedOutput()
	if err != nil || !strings.Contains(string(dump), id) {
		t.Fatalf("dump the store: %v\n%.500s", err, dump)
	}
	if strings.Contains(string(dump), canary) {
		t.Errorf("a secret reached the store:\n%s", excerpt(string(dump), canary))
	}
	// Snapshot files and anything else in the state directory.
	_ = filepath.Walk(state, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), canary) {
			t.Errorf("%s holds a secret", p)
		}
		return nil
	})
}

func excerpt(s, needle string) string {
	i := strings.Index(s, needle)
	return s[max(0, i-200):min(len(s), i+100)]
}
