#!/usr/bin/env bash
# Fetches and builds the real peers the end-to-end tests run beside the
# sandbox, each once, cached by version (like the sandbox's binaries):
#   bin/crds/gateway-api/   the Gateway API's standard CRDs (HTTPRoute, ...)
#   bin/rollouts-controller, bin/kubectl-argo-rollouts, bin/crds/argo-rollouts/
#   bin/flagger, bin/crds/flagger/
#   bin/helm
#   bin/crds/gitops/          Argo CD's Application and Flux's Kustomization CRDs
#   bin/source-controller, bin/kustomize-controller, bin/crds/flux/
#   bin/helm-controller, bin/crds/flux-helm/
#   bin/argocd (application-controller, repo-server), bin/crds/argocd/
#   bin/migrate (golang-migrate's CLI, with its MySQL and PostgreSQL drivers)
set -euo pipefail
cd "$(dirname "$0")/.."
GATEWAY_API_VERSION=v1.4.1
cache_root="${ROLLBACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback}"
mkdir -p bin/crds

# Status for the tests (internal/peerbuild), which 'make test' runs while
# this builds: bin/.peers/building (this process), then one file per group
# as soon as it is in bin/, then done, or failed with the group it was on.
# The groups go cheapest and most needed first.
status=bin/.peers
rm -rf "$status" "$status.new" && mkdir -p "$status.new" && echo $$ >"$status.new/building" && mv "$status.new" "$status"
group=""
# (failed is written whole, then renamed into place: a reader never sees it empty)
trap 'rc=$?; if [ $rc -eq 0 ]; then : >"$status/done"; else echo "${group:-starting}: exit status $rc" >"$status/failed.tmp" && mv "$status/failed.tmp" "$status/failed"; fi' EXIT
trap 'exit 130' INT TERM
start() { group=$1; }
built() { : >"$status/$group"; }
# The peers are test tools: no symbol table or DWARF (quicker links), and
# compiled without optimisation (-N -l: helm's cold build 65 s instead of
# 92 s here), unless PEERS_OPTIMIZE=1 (the benchmarks, which time a peer
# against rollback); the two variants are cached apart.
strip="-s -w"
if [ "${PEERS_OPTIMIZE:-}" = 1 ]; then
  gcflags=() variant=""
else
  gcflags=(-gcflags "all=-N -l") variant="-noopt"
fi

# install_peer DIR NAME PKG@VERSION [FLAG...]: 'go install' PKG into the
# cache directory DIR once (the variant's compiler flags, FLAGs added),
# then copies DIR/NAME into bin/.
install_peer() {
  local dir=$1 name=$2 pkg=$3
  shift 3
  if [ ! -x "$dir/$name" ]; then
    echo "build-peers: building $name ${pkg##*@}"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    GOFLAGS=-trimpath CGO_ENABLED=0 GOBIN="$dir.tmp" go install "${gcflags[@]}" "$@" "$pkg"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  cp -f "$dir/$name" bin/
}

# Gateway API CRDs, from the sigs.k8s.io/gateway-api module.
start gateway-api
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
built

# GitOps CRDs: Argo CD's Application and Flux's Kustomization, from their
# modules (of the same releases as the Argo CD and Flux controllers below,
# which the tests run for real).
start gitops-crds
ARGOCD_VERSION=v2.14.21
FLUX_KUSTOMIZE_VERSION=v1.9.6
go_crds="$cache_root/gitops-crds/$ARGOCD_VERSION-$FLUX_KUSTOMIZE_VERSION"
if [ ! -d "$go_crds" ]; then
  echo "build-peers: fetching the Argo CD $ARGOCD_VERSION and Flux kustomize-controller $FLUX_KUSTOMIZE_VERSION CRDs"
  adir=$(go mod download -json "github.com/argoproj/argo-cd/v2@$ARGOCD_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  fdir=$(go mod download -json "github.com/fluxcd/kustomize-controller@$FLUX_KUSTOMIZE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$go_crds.tmp"
  cp "$adir/manifests/crds/application-crd.yaml" "$fdir/config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml" "$go_crds.tmp/"
  rm -rf "$go_crds" && mv "$go_crds.tmp" "$go_crds"
fi
rm -rf bin/crds/gitops && cp -r "$go_crds" bin/crds/gitops
built

# golang-migrate's own CLI, built with its MySQL and PostgreSQL drivers, to
# check that the history rollback leaves is the one the tool reads.
start migrate
MIGRATE_VERSION=v4.19.1
install_peer "$cache_root/golang-migrate/$MIGRATE_VERSION$variant" migrate \
  "github.com/golang-migrate/migrate/v4/cmd/migrate@$MIGRATE_VERSION" -ldflags "$strip" -tags 'mysql postgres'
built

# versitygw: a real S3-compatible server (POSIX backend) for the snapshot
# store's tests.
start versitygw
VERSITYGW_VERSION=v1.8.0
install_peer "$cache_root/versitygw/$VERSITYGW_VERSION$variant" versitygw \
  "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" -ldflags "$strip"
built

# helm: the real CLI, to check that 'helm history' and 'helm status' agree
# with what rollback did through Helm's Go SDK.
start helm
HELM_VERSION=v3.22.0
install_peer "$cache_root/helm/$HELM_VERSION$variant" helm \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" -ldflags "$strip -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
built

# Flagger: the real controller (go install works for this release) and its
# CRDs (canaries, metrictemplates, alertproviders).
start flagger
FLAGGER_VERSION=v1.41.0
fl="$cache_root/flagger-crds/$FLAGGER_VERSION"
install_peer "$cache_root/flagger/$FLAGGER_VERSION$variant" flagger \
  "github.com/fluxcd/flagger/cmd/flagger@$FLAGGER_VERSION" -ldflags "$strip"
if [ ! -f "$fl/crd.yaml" ]; then
  fsrc=$(go mod download -json "github.com/fluxcd/flagger@$FLAGGER_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$fl" && cp "$fsrc/artifacts/flagger/crd.yaml" "$fl/crd.yaml.tmp" && mv "$fl/crd.yaml.tmp" "$fl/crd.yaml"
fi
rm -rf bin/crds/flagger && mkdir -p bin/crds/flagger && cp "$fl/crd.yaml" bin/crds/flagger/
built

# Argo Rollouts: the real controller and kubectl plugin, built in the
# wrapper module peers/argo-rollouts (its package main files are copied from
# the module cache at build time, never committed), and its CRDs.
start argo-rollouts
ARGO_ROLLOUTS_VERSION=v1.8.5
akey=$(cat peers/argo-rollouts/go.mod peers/argo-rollouts/go.sum | sha256sum | cut -c1-12)
ar="$cache_root/argo-rollouts/$ARGO_ROLLOUTS_VERSION-$akey$variant"
if [ ! -x "$ar/rollouts-controller" ] || [ ! -x "$ar/kubectl-argo-rollouts" ]; then
  echo "build-peers: building argo-rollouts $ARGO_ROLLOUTS_VERSION (controller and kubectl plugin; a few minutes the first time)"
  src=$(cd peers/argo-rollouts && go mod download -json "github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$ar.tmp/crds" peers/argo-rollouts/cmd/rollouts-controller peers/argo-rollouts/cmd/kubectl-argo-rollouts
  for c in rollouts-controller kubectl-argo-rollouts; do
    install -m 0644 "$src/cmd/$c/main.go" "peers/argo-rollouts/cmd/$c/main.go"
    (cd peers/argo-rollouts && CGO_ENABLED=0 go build -trimpath \
      "${gcflags[@]}" -ldflags "$strip -X github.com/argoproj/argo-rollouts/utils/version.version=${ARGO_ROLLOUTS_VERSION#v}" -o "$ar.tmp/$c" "./cmd/$c")
  done
  cp "$src"/manifests/crds/*-crd.yaml "$ar.tmp/crds/"
  rm -rf "$ar" && mv "$ar.tmp" "$ar"
fi
mkdir -p bin/crds/argo-rollouts
cp -f "$ar/rollouts-controller" "$ar/kubectl-argo-rollouts" bin/
rm -rf bin/crds/argo-rollouts && cp -r "$ar/crds" bin/crds/argo-rollouts
built

# Flux: the real source-controller and kustomize-controller, which reconcile
# the GitOps tests' app from a local Git server while the rollback runs.
# Their go.mod has 'replace .../api => ./api', so no 'go install': the
# module is copied from the module cache, that line dropped (the api module
# of the same version is served), and built. source-controller asks for a
# github.com/fluxcd/pkg/artifact version the proxy does not serve; v0.18.0
# builds. ~6-10 min each the first time on 2 cores.
#
# flux_build NAME VERSION OUT [LINE]: builds github.com/fluxcd/NAME@VERSION
# into OUT/NAME (LINE appended to its go.mod) and copies its CRDs to OUT/crds.
flux_build() {
  local c=$1 v=$2 out=$3 extra=${4:-} src work
  echo "build-peers: building Flux $c $v (several minutes the first time)"
  src=$(go mod download -json "github.com/fluxcd/$c@$v" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -f "$src/go.mod" ] || { echo "build-peers: no module source for $c" >&2; exit 1; }
  work="$out/src-$c"
  cp -r "$src" "$work" && chmod -R u+w "$work"
  sed -i '/=> \.\/api/d' "$work/go.mod"
  [ -z "$extra" ] || echo "$extra" >>"$work/go.mod"
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true)
  (cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath "${gcflags[@]}" -ldflags "$strip" -o "$out/$c" .)
  mkdir -p "$out/crds" && cp "$work"/config/crd/bases/*.yaml "$out/crds/"
  rm -rf "$work"
}
start flux
FLUX_VERSION=v1.9.6
fx="$cache_root/flux/$FLUX_VERSION$variant"
if [ ! -x "$fx/source-controller" ] || [ ! -x "$fx/kustomize-controller" ]; then
  rm -rf "$fx.tmp" && mkdir -p "$fx.tmp"
  flux_build source-controller "$FLUX_VERSION" "$fx.tmp" 'replace github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.0'
  flux_build kustomize-controller "$FLUX_VERSION" "$fx.tmp"
  rm -rf "$fx" && mv "$fx.tmp" "$fx"
fi
cp -f "$fx/source-controller" "$fx/kustomize-controller" bin/
rm -rf bin/crds/flux && cp -r "$fx/crds" bin/crds/flux
built

# Flux helm-controller, for a HelmRelease whose chart and values are in Git
# (the release the GitOps tests revert in a values file). Built like the
# other Flux controllers; its go.mod's other replace lines stay.
start flux-helm
FLUX_HELM_VERSION=v1.4.3
fh="$cache_root/flux-helm/$FLUX_HELM_VERSION$variant"
if [ ! -x "$fh/helm-controller" ]; then
  rm -rf "$fh.tmp" && mkdir -p "$fh.tmp"
  flux_build helm-controller "$FLUX_HELM_VERSION" "$fh.tmp"
  rm -rf "$fh" && mv "$fh.tmp" "$fh"
fi
cp -f "$fh/helm-controller" bin/
rm -rf bin/crds/flux-helm && cp -r "$fh/crds" bin/crds/flux-helm

built

# Argo CD: the real application-controller and repo-server (one binary that
# acts by the name it is run as), v2.14 (argo-cd/gitops-engine v3, which
# v3.x needs, does not build with this Go). Its go.mod's replace lines are
# its own, so the module is copied from the module cache and built as is.
# Redis (Debian's redis-server) runs beside it in the tests. ~5 min the
# first time.
start argocd
ARGOCD_RUN_VERSION=v2.14.21
ac="$cache_root/argocd/$ARGOCD_RUN_VERSION$variant"
if [ ! -x "$ac/argocd" ]; then
  echo "build-peers: building Argo CD $ARGOCD_RUN_VERSION (application-controller, repo-server; several minutes the first time)"
  rm -rf "$ac.tmp" && mkdir -p "$ac.tmp/crds"
  src=$(go mod download -json "github.com/argoproj/argo-cd/v2@$ARGOCD_RUN_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -f "$src/go.mod" ] || { echo "build-peers: no module source for Argo CD" >&2; exit 1; }
  work="$ac.tmp/src"
  cp -r "$src" "$work" && chmod -R u+w "$work"
  (cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
    "${gcflags[@]}" -ldflags "$strip -X github.com/argoproj/argo-cd/v2/common.version=${ARGOCD_RUN_VERSION#v}" -o "$ac.tmp/argocd" ./cmd)
  cp "$work"/manifests/crds/application-crd.yaml "$work"/manifests/crds/appproject-crd.yaml "$ac.tmp/crds/"
  rm -rf "$work"
  rm -rf "$ac" && mv "$ac.tmp" "$ac"
fi
cp -f "$ac/argocd" bin/argocd
ln -sf argocd bin/argocd-application-controller
ln -sf argocd bin/argocd-repo-server
rm -rf bin/crds/argocd && cp -r "$ac/crds" bin/crds/argocd
built
