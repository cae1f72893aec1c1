#!/usr/bin/env bash
# The tests, after 'make deps build' (the README's test command is 'make
# test'). The real peers (scripts/build-peers.sh, each cached by version)
# build in the background, at low CPU priority, while vet and the tests
# that need none of them run; a test that needs a peer waits for it
# (internal/peerbuild) and fails if its build fails. Warm, every peer is a
# copy from the cache and nothing waits.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
mkdir -p bin

# Its own session, so that an early exit stops it and every compiler under it.
setsid bash -c 'set -o pipefail; nice -n 19 scripts/build-peers.sh 2>&1 | tee bin/peers.log | sed -un "s/^build-peers: /peers: /p"' &
peers=$!
trap 'kill -TERM -- -"$peers" 2>/dev/null || true' EXIT

$GO vet ./...
(cd sandbox && $GO vet ./...)
rc=0
# -parallel 6: the end-to-end tests mostly wait on the sandbox, not the CPU
# (a test waiting for a peer gives its place up). -timeout covers a first
# run's wait for the peers.
$GO test -count=1 -parallel 6 -timeout 60m ./... || rc=1
(cd sandbox && $GO test -count=1 ./...) || rc=1
if ! wait "$peers"; then
  echo "test: the peers' build failed; the end of bin/peers.log:" >&2
  tail -n 30 bin/peers.log >&2
  rc=1
fi
trap - EXIT
exit $rc
