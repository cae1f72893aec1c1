package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The shipped image can do the runbook's database step: its own file
// system (the OCI layout's layer, extracted), its binary run as the image's
// user (65532) with a read-only root, only /tmp and /state writable, the
// image's environment, and nothing else: no shell, no pg_dump. 'rollback
// db undo' snapshots what the undo touches (through the driver) into
// /state and runs the down migration.
func TestImageRunsTheDownMigration(t *testing.T) {
	parallel(t)
	root, _ := repoRoot()
	work := t.TempDir()
	bin := filepath.Join(work, "rollback")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/rollback")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	layout := filepath.Join(work, "image")
	img := exec.Command("go", "run", "./scripts/ociimage", "-version", "0.0.0-e2e", "-out", layout, "linux/amd64="+bin)
	img.Dir = root
	if out, err := img.CombinedOutput(); err != nil {
		t.Fatalf("image: %v\n%s", err, out)
	}
	blob := func(digest string) string {
		return filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
	}
	var index struct{ Manifests []struct{ Digest string } }
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	var config struct {
		Config struct {
			User       string
			Env        []string
			Entrypoint []string
		}
	}
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	readJSON(t, blob(index.Manifests[0].Digest), &manifest)
	readJSON(t, blob(manifest.Config.Digest), &config)
	rootfs := filepath.Join(work, "rootfs")
	for _, l := range manifest.Layers {
		extract(t, blob(l.Digest), rootfs)
	}
	// /state is the image's volume: a directory of the host here, so the
	// snapshot can be looked at after the run.
	state := filepath.Join(work, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	dsn, mig, conn := dbService(t, ns)
	uid := strings.Split(config.Config.User, ":")[0]
	script := fmt.Sprintf(`set -e
R=%[1]s
mount --bind "$R" "$R" && mount -o remount,bind,ro "$R"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
chown %[2]s %[3]s && mount --bind %[3]s "$R/state"
cp -r %[4]s "$R/tmp/migrations" && chown -R %[2]s "$R/tmp/migrations"
exec chroot --userspec=%[5]s "$R" %[6]s db undo --dir /tmp/migrations --release v1.2.0 --yes`,
		rootfs, uid, state, mig, config.Config.User, config.Config.Entrypoint[0])
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(append([]string{}, config.Config.Env...), "ROLLBACK_DB_DSN="+dsn, "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("db undo from the image's file system: %v\n%s", err, out)
	}
	var cols int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM information_schema.columns WHERE table_name = 'transactions' AND column_name = 'category'`).Scan(&cols); err != nil || cols != 0 {
		t.Errorf("the column is still there (%d, %v):\n%s", cols, err, out)
	}
	snaps, _ := filepath.Glob(filepath.Join(state, "rollback", "snapshots", "*.csv.tar"))
	if len(snaps) != 1 {
		found, _ := exec.Command("find", state).CombinedOutput()
		t.Fatalf("snapshots in /state: %v\n%s\n%s", snaps, found, out)
	}
	b, _ := os.ReadFile(snaps[0])
	if !strings.Contains(string(b), "food") || !strings.Contains(string(b), "rent") {
		t.Errorf("the snapshot lacks the values the undo dropped")
	}
	t.Logf("MEASURE image file system, read-only root, user %s: db undo passed; snapshot at /state/%s (%d bytes)",
		config.Config.User, strings.TrimPrefix(snaps[0], state+"/"), len(b))
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// extract unpacks a gzipped layer tar into dir.
func extract(t *testing.T, layer, dir string) {
	t.Helper()
	f, err := os.Open(layer)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode))
		case tar.TypeReg:
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			var w *os.File
			if w, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)); err == nil {
				_, err = io.Copy(w, tr)
				w.Close()
			}
		}
		if err == nil {
			err = os.Lchown(p, h.Uid, h.Gid)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
