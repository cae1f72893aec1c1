package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The layout holds one image per platform, runnable as the non-root user
// with /rollback as its entrypoint and the binary's bytes in its layer.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "rollback")
	_ = os.WriteFile(bin, []byte("\x7fELF fake rollback"), 0o755)
	out := filepath.Join(dir, "image")
	if err := build("1.2.3", out, []string{"linux/amd64=" + bin, "linux/arm64=" + bin}); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 || im.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index %+v", im.Manifests)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	if cf.Config.Entrypoint[0] != "/rollback" || cf.Config.User != "65532:65532" || cf.Architecture != "amd64" || cf.Config.Labels["org.opencontainers.image.version"] != "1.2.3" {
		t.Errorf("config %+v", cf.Config)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found[h.Name] = true
		if h.Name == "rollback" {
			b, _ := io.ReadAll(tr)
			if string(b) != "\x7fELF fake rollback" || h.Mode&0o111 == 0 {
				t.Errorf("the binary in the layer: %q mode %o", b, h.Mode)
			}
		}
	}
	if !found["etc/ssl/certs/ca-certificates.crt"] || !found["state/"] {
		t.Errorf("layer files %v", found)
	}
}
