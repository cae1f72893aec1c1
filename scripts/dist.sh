#!/usr/bin/env bash
# Builds a release into dist/, with goreleaser's conventions:
#   rollback_VERSION_OS_ARCH.tar.gz   (rollback, README.md) for each platform
#   rollback_VERSION_checksums.txt    (sha256sum format)
#   krew/rollback.yaml                 the krew plugin manifest (kubectl krew install rollback)
#   image/                             the container image, an OCI image layout (linux only)
# VERSION defaults to the git tag (without its v); PLATFORMS to
# linux/amd64 linux/arm64 darwin/amd64 darwin/arm64.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
version=${tag#v}
platforms=${PLATFORMS:-"linux/amd64 linux/arm64 darwin/amd64 darwin/arm64"}
module=$(go list -m)
repo=https://github.com/rollback-dev/rollback
rm -rf dist && mkdir -p dist/tmp dist/krew
image_args=()
for p in $platforms; do
  os=${p%/*}; arch=${p#*/}
  echo "dist: building $os/$arch"
  d=dist/tmp/${os}_${arch}
  mkdir -p "$d"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath \
    -ldflags "-s -w -X $module/internal/cli.Version=$version" -o "$d/rollback" ./cmd/rollback
  cp README.md "$d/"
  tar -C "$d" -czf "dist/rollback_${version}_${os}_${arch}.tar.gz" rollback README.md
  [ "$os" = linux ] && image_args+=("$os/$arch=$d/rollback")
done
(cd dist && sha256sum rollback_"${version}"_*.tar.gz > "rollback_${version}_checksums.txt")

# krew: one platform entry per archive, with its sha256; krew links the
# binary as kubectl-rollback, and rollback run under that name is the plugin.
{
  cat <<EOM
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: rollback
spec:
  version: v${version}
  homepage: ${repo}
  shortDescription: Plan, run and verify deployment rollbacks in minutes
  description: |
    Turns the roll-backward runbook into one command: finds the last
    known-good revision of a Deployment, StatefulSet, DaemonSet, Argo
    Rollout, Flagger canary, Helm release or blue/green route, undoes it with
    kubectl's semantics, verifies, and journals a resumable incident.
  platforms:
EOM
  for p in $platforms; do
    os=${p%/*}; arch=${p#*/}
    f=rollback_${version}_${os}_${arch}.tar.gz
    sum=$(cd dist && sha256sum "$f" | cut -d' ' -f1)
    cat <<EOM
    - selector:
        matchLabels: {os: $os, arch: $arch}
      uri: ${repo}/releases/download/v${version}/$f
      sha256: $sum
      bin: rollback
      files:
        - {from: rollback, to: .}
        - {from: README.md, to: .}
EOM
  done
} > dist/krew/rollback.yaml

if [ ${#image_args[@]} -gt 0 ]; then
  go run ./scripts/ociimage -version "$version" -out dist/image "${image_args[@]}"
fi
rm -rf dist/tmp
ls -l dist
