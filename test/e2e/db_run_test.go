package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-dev/rollback/internal/cli"
	"github.com/rollback-dev/rollback/internal/snapstore/snapstoretest"
)

// TestRunbookDownMigrates: a service with a database snapshots it and
// down-migrates the abandoned release's migration inside 'rollback run'.
func TestRunbookDownMigrates(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	// The runbook's own layout: rollback/V…__Undo__….sql, which fixes the
	// history itself.
	deploy(t, ns, "v1.1.5")
	dsn, mig, conn := dbService(t, ns, "rollback/V1_2_0__Undo__add_transaction_category.sql",
		"ALTER TABLE transactions DROP COLUMN IF EXISTS category;\nDELETE FROM flyway_schema_history WHERE version = '1.2.0';\n")
	ctx := context.Background()
	dir := t.TempDir()
	// The snapshot is kept in a bucket (a real S3-compatible server), where
	// a replica resuming the run would find it.
	waitBuilt(t, "versitygw")
	s3url, s3c := snapstoretest.Start(t, filepath.Join(binDir, "versitygw"), "snapshots")
	cfg := filepath.Join(dir, "rollback.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: rollback/v1
kind: Config
services:
  payments-db:
    kubernetes: {namespace: %s, name: %s}
    database:
      dsnEnv: TEST_DSN
      dir: %s
      snapshotStore: {url: s3://snapshots/e2e, endpoint: %s, accessKeyIdEnv: S3_KEY, secretAccessKeyEnv: S3_SECRET}
`, ns, app, mig, s3url)), 0o644)
	env := map[string]string{"TEST_DSN": dsn, "ROLLBACK_DB_DSN": dsn, "ROLLBACK_STORE": filepath.Join(dir, "state.db"), "XDG_STATE_HOME": filepath.Join(dir, "xdg"),
		"S3_KEY": snapstoretest.AccessKey, "S3_SECRET": snapstoretest.SecretKey}

	kubectl(t, "set", "image", "deployment/"+app, "-n", ns, app+"="+image("v1.2.0"))
	waitRolledOut(t, ns)

	// The decision from live signals: the migration has run (history) and
	// its undo exists but was never drilled, so the flowchart says roll
	// forward; the run refuses and changes nothing.
	r := rollbackEnv(t, env, "run", "payments-db", "--config", cfg, "--yes", "--severity", "P1", "--api-adopted=false")
	if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "roll-forward-only-option") || !strings.Contains(r.stderr, "has not passed a drill") {
		t.Fatalf("run before the drill: exit %d, want %d (the flowchart says roll forward)\n%s", r.code, cli.ExitRefused, r.stderr)
	}
	if got := runningImage(t, ns); got != image("v1.2.0") {
		t.Fatalf("a refused run changed the deployment: %s", got)
	}
	if l := rollbackEnv(t, env, "status", "-o", "json"); strings.TrimSpace(l.stdout) != "[]" {
		t.Fatalf("a refused run opened an incident: %s", l.stdout)
	}
	// Drilled: the flowchart says roll back with the down migration.
	if d := rollbackEnv(t, env, "db", "drill", "--dir", mig); d.code != 0 {
		t.Fatalf("drill: exit %d\n%s%s", d.code, d.stdout, d.stderr)
	}
	r = rollbackEnv(t, env, "run", "payments-db", "--config", cfg, "--yes", "--severity", "P1", "--api-adopted=false", "-o", "json")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	var cols []string
	rows, _ := conn.Query(ctx, `SELECT column_name FROM information_schema.columns WHERE table_name = 'transactions' ORDER BY ordinal_position`)
	for rows.Next() {
		var c string
		_ = rows.Scan(&c)
		cols = append(cols, c)
	}
	rows.Close()
	if strings.Join(cols, ",") != "id,amount" {
		t.Errorf("columns after the run: %v", cols)
	}
	var versions string
	_ = conn.QueryRow(ctx, `SELECT string_agg(version, ',' ORDER BY installed_rank) FROM flyway_schema_history`).Scan(&versions)
	if versions != "1.1.0" {
		t.Errorf("history after the run: %s", versions)
	}
	id := ""
	if i := strings.Index(r.stdout, `"incident": "`); i >= 0 {
		id = strings.SplitN(r.stdout[i+len(`"incident": "`):], `"`, 2)[0]
	}
	s := rollbackEnv(t, env, "status", id, "--config", cfg)
	objs, err := s3c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("snapshots"), Prefix: aws.String("e2e/" + id + "/before-undo-1.2.0-to-1.1.0")})
	if err != nil || len(objs.Contents) != 2 {
		t.Errorf("the snapshot and its checksum in the bucket: %v %v", objs, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "xdg", "rollback", "snapshots", "*")); len(left) != 0 {
		t.Errorf("local copies left after the upload: %v", left)
	}
	for _, want := range []string{"Database snapshot taken", "s3://snapshots/e2e/" + id + "/before-undo-1.2.0-to-1.1.0", "read back and checked", "1 migration(s) undone", "schema equals the one recorded",
		"roll-back-with-down-migration — rationale recorded"} {
		if !strings.Contains(s.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, s.stdout)
		}
	}
	// The rationale is the flowchart's, with the measured facts.
	rep := rollbackEnv(t, env, "report", id)
	for _, want := range []string{"Decision: **roll-back-with-down-migration**", "Has the DB migration run?", "history at 1.2.0", "drilled"} {
		if !strings.Contains(rep.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, rep.stdout)
		}
	}
}
