#!/usr/bin/env bash
# The tests, after 'make deps build' (the README's test command is 'make
# test'). The real peers (scripts/build-peers.sh, each cached by version)
# build in the background, at low CPU priority, while vet and the tests
# that need none of them run; a test that needs a peer waits for it
# (internal/peerbuild) and fails if its build fails. The sandbox module's
# vet and tests run once the peers are built, beside the end-to-end tests
# of the last peers (which mostly wait on controllers, not the CPU).
# Warm, every peer is a copy from the cache and nothing waits.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
mkdir -p bin

# Its own session, so that an early exit stops it and every compiler under it.
rm -rf bin/.peers bin/.peers-ended
setsid bash -c 'set -o pipefail; nice -n 19 scripts/build-peers.sh 2>&1 | tee bin/peers.log | sed -un "s/^build-peers: /peers: /p"' &
peers=$!
# The sandbox's vet and tests once the peers' build has ended, whatever its
# outcome (bin/.peers: done, failed, or its process gone).
export GO
setsid bash -c '
  s=bin/.peers
  until [ -e $s/done ] || [ -e $s/failed ] || [ -e $s-ended ] || { [ -e $s/building ] && ! kill -0 "$(cat $s/building)" 2>/dev/null; }; do sleep 2; done
  cd sandbox && $GO vet ./... && $GO test -count=1 ./...' >bin/sandbox-test.log 2>&1 &
sandbox=$!
trap 'kill -TERM -- -"$peers" -"$sandbox" 2>/dev/null || true' EXIT

$GO vet ./...
rc=0
# -parallel 6: the end-to-end tests mostly wait on the sandbox, not the CPU
# (a test waiting for a peer gives its place up). -timeout covers a first
# run's wait for the peers.
$GO test -count=1 -parallel 6 -timeout 60m ./... || rc=1
peers_rc=0
wait "$peers" || peers_rc=$?
: >bin/.peers-ended
if [ $peers_rc -ne 0 ]; then
  echo "test: the peers' build failed; the end of bin/peers.log:" >&2
  tail -n 30 bin/peers.log >&2
  rc=1
fi
if wait "$sandbox"; then
  cat bin/sandbox-test.log
else
  echo "test: the sandbox module's vet or tests failed (bin/sandbox-test.log):" >&2
  cat bin/sandbox-test.log >&2
  rc=1
fi
trap - EXIT
exit $rc
