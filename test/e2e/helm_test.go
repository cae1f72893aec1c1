package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollback-dev/rollback/internal/cli"
)

// helmCLI runs the real helm (v3.22.0, built by scripts/build-peers.sh).
func helmCLI(t *testing.T, args ...string) string {
	t.Helper()
	waitBuilt(t, "helm")
	path := filepath.Join(binDir, "helm")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run 'make test' (scripts/build-peers.sh builds it)", path)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HELM_CACHE_HOME="+filepath.Join(sandboxDir, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(sandboxDir, "helm-config"), "HELM_DATA_HOME="+filepath.Join(sandboxDir, "helm-data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// helmRelease installs the test chart as release "app" at v1.1.5 and
// upgrades it to v1.2.0, with the real helm.
func helmRelease(t *testing.T, ns string) {
	t.Helper()
	chart := filepath.Join("testdata", "chart")
	helmCLI(t, "install", "app", chart, "-n", ns, "--set", "image.tag=v1.1.5", "--wait", "--timeout", "90s")
	helmCLI(t, "upgrade", "app", chart, "-n", ns, "--set", "image.tag=v1.2.0", "--wait", "--timeout", "90s")
}

type helmHistoryEntry struct {
	Revision    int    `json:"revision"`
	Status      string `json:"status"`
	Description string `json:"description"`
}

func helmHistory(t *testing.T, ns string) []helmHistoryEntry {
	t.Helper()
	var h []helmHistoryEntry
	if err := json.Unmarshal([]byte(helmCLI(t, "history", "app", "-n", ns, "-o", "json")), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// checkHelmRolledBack: helm's own history and status agree with what
// rollback did: revision 3, "Rollback to 1", deployed, on v1.1.5.
func checkHelmRolledBack(t *testing.T, ns string) {
	t.Helper()
	h := helmHistory(t, ns)
	if len(h) != 3 || h[2].Status != "deployed" || h[2].Description != "Rollback to 1" || h[1].Status != "superseded" {
		t.Errorf("helm history: %+v", h)
	}
	var st struct {
		Version int `json:"version"`
		Info    struct {
			Status string `json:"status"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(helmCLI(t, "status", "app", "-n", ns, "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != 3 || st.Info.Status != "deployed" {
		t.Errorf("helm status: version %d, %s", st.Version, st.Info.Status)
	}
	if got := kubectl(t, "get", "deployment", "app-web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}"); got != image("v1.1.5") {
		t.Errorf("app-web runs %s", got)
	}
	if got := kubectl(t, "get", "secret", "sh.helm.release.v1.app.v2", "-n", ns, "-o", "jsonpath={.metadata.annotations.rollback/health}"); got != "bad" {
		t.Errorf("revision 2 marked %q, want bad", got)
	}
}

// 'rollback run helm/RELEASE' rolls back through Helm's SDK: a new
// revision with --wait, which the real helm CLI reads back; a second run
// has nowhere to go (revision 2 is bad, revision 3 is revision 1).
func TestHelmReleaseRollback(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	helmRelease(t, ns)
	r := rollback(t, "run", "helm/app", "-n", ns, "--yes", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"outcome": "rolled-back"`) {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkHelmRolledBack(t, ns)
	if again := rollback(t, "run", "helm/app", "-n", ns, "--yes"); again.code != cli.ExitRefused {
		t.Errorf("second run: exit %d, want %d\n%s", again.code, cli.ExitRefused, again.stderr)
	}
}

// A Deployment Helm manages is rolled back as its release: a kubectl-style
// undo would leave Helm's history on the broken revision.
func TestHelmOwnedDeploymentGoesThroughHelm(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	helmRelease(t, ns)
	r := rollback(t, "run", "deployment/app-web", "-n", ns, "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "managed by Helm release app") {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	checkHelmRolledBack(t, ns)
}

// setHelmStatus rewrites the latest revision's stored status and time, as
// a killed 'helm upgrade' leaves it (Helm's secret driver: base64 of gzip
// of the release's JSON, the status also in a label).
func setHelmStatus(t *testing.T, ns string, rev int, status string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	name := "sh.helm.release.v1.app.v" + string(rune('0'+rev))
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gz, err := base64.StdEncoding.DecodeString(string(sec.Data["release"]))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	var rel map[string]any
	if err := json.Unmarshal(raw, &rel); err != nil {
		t.Fatal(err)
	}
	info := rel["info"].(map[string]any)
	info["status"], info["last_deployed"] = status, at.UTC().Format(time.RFC3339Nano)
	raw, _ = json.Marshal(rel)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	sec.Data["release"] = []byte(base64.StdEncoding.EncodeToString(buf.Bytes()))
	sec.Labels["status"] = status
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A release stuck in pending-upgrade blocks every Helm action. A young
// pending state (an upgrade that may still run) is refused, unchanged; an
// old one is marked failed and the rollback goes on.
func TestHelmStuckPendingUpgrade(t *testing.T) {
	parallel(t)
	ns := namespace(t)
	helmRelease(t, ns)
	setHelmStatus(t, ns, 2, "pending-upgrade", time.Now())
	r := rollback(t, "run", "helm/app", "-n", ns, "--yes")
	if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "helm release has an operation in progress: revision 2 of app is pending-upgrade") {
		t.Fatalf("young pending state: exit %d\n%s", r.code, r.stderr)
	}
	if h := helmHistory(t, ns); h[len(h)-1].Status != "pending-upgrade" {
		t.Fatalf("the young pending state was changed: %+v", h)
	}
	// The refusal left an open incident: finish it after the repair.
	setHelmStatus(t, ns, 2, "pending-upgrade", time.Now().Add(-time.Hour))
	r = rollback(t, "run", "helm/app", "-n", ns, "--yes", "--resume")
	if r.code != 0 || !strings.Contains(r.stderr, "was stuck in pending-upgrade") {
		t.Fatalf("old pending state: exit %d\n%s", r.code, r.stderr)
	}
	h := helmHistory(t, ns)
	if len(h) != 3 || h[1].Status != "failed" || !strings.Contains(h[1].Description, "marked failed by rollback") || h[2].Status != "deployed" || h[2].Description != "Rollback to 1" {
		t.Errorf("helm history after the repair: %+v", h)
	}
	if got := kubectl(t, "get", "deployment", "app-web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}"); got != image("v1.1.5") {
		t.Errorf("app-web runs %s after the repair and rollback", got)
	}
}
