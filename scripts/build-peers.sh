#!/usr/bin/env bash
# Fetches and builds the real peers the end-to-end tests run beside the
# sandbox, each once, cached by version (like the sandbox's binaries):
#   bin/crds/gateway-api/   the Gateway API's standard CRDs (HTTPRoute, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
GATEWAY_API_VERSION=v1.4.1
cache_root="${ROLLBACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback}"
mkdir -p bin/crds

# Gateway API CRDs, from the sigs.k8s.io/gateway-api module.
gw="$cache_root/gateway-api-crds/$GATEWAY_API_VERSION"
if [ ! -d "$gw" ]; then
  echo "build-peers: fetching the Gateway API $GATEWAY_API_VERSION CRDs"
  dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/config/crd/standard" ] || { echo "build-peers: no config/crd/standard in $dir" >&2; exit 1; }
  mkdir -p "$gw.tmp"
  cp "$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$gw.tmp/"
  rm -rf "$gw" && mv "$gw.tmp" "$gw"
fi
rm -rf bin/crds/gateway-api && cp -r "$gw" bin/crds/gateway-api
