// Command ociimage builds rollback's container image without a container
// engine: for each platform, one layer holding the static binary (as
// /rollback) and the build machine's CA bundle, on an empty base, run as
// the non-root user 65532; the platforms' images go into one OCI image
// index written as an OCI image layout directory (push it with
// `crane push` or `skopeo copy oci:DIR docker://REF`). `make dist` runs it.
//
//	go run ./scripts/ociimage -version 1.0.0 -out dist/image linux/amd64=dist/tmp/linux_amd64/rollback ...
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const caBundle = "/etc/ssl/certs/ca-certificates.crt"

func main() {
	version := flag.String("version", "dev", "the release (the image's org.opencontainers.image.version)")
	out := flag.String("out", "dist/image", "OCI image layout directory to write")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: ociimage -version V -out DIR OS/ARCH=BINARY ...")
		os.Exit(2)
	}
	if err := build(*version, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func build(version, out string, platforms []string) error {
	ca, err := os.ReadFile(caBundle)
	if err != nil {
		return fmt.Errorf("CA bundle: %w (install ca-certificates)", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	created := v1.Time{Time: time.Unix(0, 0).UTC()} // reproducible
	for _, p := range platforms {
		plat, bin, ok := strings.Cut(p, "=")
		osName, arch, ok2 := strings.Cut(plat, "/")
		if !ok || !ok2 {
			return fmt.Errorf("%q: expected OS/ARCH=BINARY", p)
		}
		exe, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(rootfs(exe, ca))), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return err
		}
		img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
		if err != nil {
			return err
		}
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		cf, err := img.ConfigFile()
		if err != nil {
			return err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Created = osName, arch, created
		cf.Config.Entrypoint = []string{"/rollback"}
		cf.Config.Cmd = []string{"serve"}
		cf.Config.User = "65532:65532"
		cf.Config.Env = []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "XDG_STATE_HOME=/state"}
		cf.Config.Labels = map[string]string{
			"org.opencontainers.image.title":   "rollback",
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  "https://github.com/rollback-dev/rollback",
		}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}}})
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if _, err := layout.Write(out, idx); err != nil {
		return err
	}
	fmt.Printf("ociimage: %s (%d platform(s))\n", out, len(platforms))
	return nil
}

// rootfs is the layer: /rollback, the CA bundle, and /state for the
// SQLite store, owned by the runtime user.
func rootfs(exe, ca []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Unix(0, 0)
	add := func(name string, mode int64, data []byte, typ byte) {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: typ, ModTime: mod, Uid: 65532, Gid: 65532})
		if len(data) > 0 {
			_, _ = tw.Write(data)
		}
	}
	add("etc/", 0o755, nil, tar.TypeDir)
	add("etc/ssl/", 0o755, nil, tar.TypeDir)
	add("etc/ssl/certs/", 0o755, nil, tar.TypeDir)
	add("etc/ssl/certs/ca-certificates.crt", 0o644, ca, tar.TypeReg)
	add("state/", 0o700, nil, tar.TypeDir)
	add("tmp/", 0o1777, nil, tar.TypeDir)
	add("rollback", 0o755, exe, tar.TypeReg)
	_ = tw.Close()
	return buf.Bytes()
}
