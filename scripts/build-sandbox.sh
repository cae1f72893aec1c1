#!/usr/bin/env bash
# Builds bin/rollback-sandbox (the Kubernetes control plane, ~3.5 min cold)
# and bin/kwok, caching both by the hash of the sandbox module's go.sum and
# sources, so a second build is a copy.
set -euo pipefail
cd "$(dirname "$0")/.."
KWOK_VERSION=v0.7.0
cache_root="${ROLLBACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback}"
# The API server reports the Kubernetes release it is built from (peers such
# as Flagger refuse a server whose version is not semantic).
k8s_version=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' sandbox/go.mod)
minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
key=$( (echo "$ldflags"; cat sandbox/go.mod sandbox/go.sum $(find sandbox \( -name '*.go' -o -name '*.yaml' \) ! -name '*_test.go' | LC_ALL=C sort)) | sha256sum | cut -c1-16)
sbx="$cache_root/sandbox-bin/$key"
kwk="$cache_root/kwok-bin/$KWOK_VERSION"
mkdir -p bin

if [ ! -x "$sbx/rollback-sandbox" ]; then
  echo "build-sandbox: building rollback-sandbox (cache key $key); the first build takes a few minutes"
  mkdir -p "$sbx.tmp"
  (cd sandbox && go build -trimpath -ldflags "$ldflags" -o "$sbx.tmp/rollback-sandbox" ./cmd/rollback-sandbox)
  rm -rf "$sbx" && mv "$sbx.tmp" "$sbx"
else
  echo "build-sandbox: rollback-sandbox from cache ($key)"
fi
if [ ! -x "$kwk/kwok" ]; then
  echo "build-sandbox: building kwok $KWOK_VERSION"
  mkdir -p "$kwk.tmp"
  GOBIN="$kwk.tmp" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  rm -rf "$kwk" && mv "$kwk.tmp" "$kwk"
fi
cp -f "$sbx/rollback-sandbox" bin/rollback-sandbox
cp -f "$kwk/kwok" bin/kwok
