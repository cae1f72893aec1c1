#!/usr/bin/env bash
# Builds bin/rollback-sandbox (the Kubernetes control plane, ~4.5 min cold)
# and bin/kwok, caching both (the sandbox by the hash of its module's go.sum
# and sources, kwok by version), so a second build is a copy.
# 'build-sandbox.sh kwok' or 'build-sandbox.sh sandbox' builds one of them.
# The sandbox's module resolves every module it shares with rollback's to
# rollback's version (test/modules checks), so after rollback's build only
# what rollback lacks compiles. kwok v0.7.0 does not compile against the
# sandbox's Kubernetes libraries (it uses an apimachinery constant 0.34
# removed) and builds apart, from its own module.
set -euo pipefail
cd "$(dirname "$0")/.."
KWOK_VERSION=v0.7.0
cache_root="${ROLLBACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback}"
# The API server reports the Kubernetes release it is built from (peers such
# as Flagger refuse a server whose version is not semantic).
k8s_version=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' sandbox/go.mod)
minor=${k8s_version#v1.}; minor=${minor%%.*}
# No symbol table or DWARF: a quicker link (tracebacks need neither).
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
key=$( (echo "$ldflags"; cat sandbox/go.mod sandbox/go.sum $(find sandbox \( -name '*.go' -o -name '*.yaml' \) ! -name '*_test.go' | LC_ALL=C sort)) | sha256sum | cut -c1-16)
sbx="$cache_root/sandbox-bin/$key"
kwk="$cache_root/kwok-bin/$KWOK_VERSION"
mkdir -p bin

sandbox() {
  if [ ! -x "$sbx/rollback-sandbox" ]; then
    echo "build-sandbox: building rollback-sandbox (cache key $key); the first build takes a few minutes"
    mkdir -p "$sbx.tmp"
    (cd sandbox && go build -trimpath -ldflags "$ldflags" -o "$sbx.tmp/rollback-sandbox" ./cmd/rollback-sandbox)
    rm -rf "$sbx" && mv "$sbx.tmp" "$sbx"
  else
    echo "build-sandbox: rollback-sandbox from cache ($key)"
  fi
  cp -f "$sbx/rollback-sandbox" bin/rollback-sandbox
}

kwok() {
  if [ ! -x "$kwk/kwok" ]; then
    echo "build-sandbox: building kwok $KWOK_VERSION"
    mkdir -p "$kwk.tmp"
    GOFLAGS=-trimpath GOBIN="$kwk.tmp" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    rm -rf "$kwk" && mv "$kwk.tmp" "$kwk"
  fi
  cp -f "$kwk/kwok" bin/kwok
}

case "${1:-all}" in
  sandbox) sandbox ;;
  kwok) kwok ;;
  all) sandbox; kwok ;;
  *) echo "usage: build-sandbox.sh [sandbox|kwok|all]" >&2; exit 2 ;;
esac
