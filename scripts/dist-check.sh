#!/usr/bin/env bash
# Checks a release as users get it: builds dist/ for linux/amd64, installs
# the archive with the real krew (v0.4.3, built once and cached) from the
# generated manifest, runs 'kubectl rollback version' through kubectl, and
# runs the container image's binary from its OCI layout's layer.
set -euo pipefail
cd "$(dirname "$0")/.."
cache_root="${ROLLBACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback}"
krew="$cache_root/krew-bin/v0.4.3/krew"
if [ ! -x "$krew" ]; then
  GOBIN="$(dirname "$krew")" go install sigs.k8s.io/krew/cmd/krew@v0.4.3
fi
export VERSION=${VERSION:-v0.0.0-check}
PLATFORMS=linux/amd64 scripts/dist.sh
v=${VERSION#v}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd dist && sha256sum -c "rollback_${v}_checksums.txt")
KREW_ROOT="$tmp/krew" "$krew" install --manifest=dist/krew/rollback.yaml --archive="dist/rollback_${v}_linux_amd64.tar.gz" >/dev/null
out=$(PATH="$tmp/krew/bin:$PATH" kubectl rollback version)
echo "dist-check: kubectl rollback version: $out"
case "$out" in "rollback $v "*) ;; *) echo "dist-check: wrong version" >&2; exit 1;; esac
# The image: the layer of the index's first manifest holds /rollback.
idx=dist/image/index.json
man=$(python3 -c "import json;print(json.load(open('$idx'))['manifests'][0]['digest'].split(':')[1])")
layer=$(python3 -c "import json;print(json.load(open('dist/image/blobs/sha256/$man'))['layers'][0]['digest'].split(':')[1])")
mkdir -p "$tmp/rootfs" && tar -xzf "dist/image/blobs/sha256/$layer" -C "$tmp/rootfs"
img=$("$tmp/rootfs/rollback" version)
echo "dist-check: image /rollback version: $img"
case "$img" in "rollback $v "*) ;; *) echo "dist-check: wrong image binary" >&2; exit 1;; esac
echo "dist-check: ok"
