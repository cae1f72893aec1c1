#!/usr/bin/env bash
# A rollback fire drill on the local sandbox, the whole runbook:
#   the sandbox control plane runs transaction-service v1.1.5, the demo
#   service serves and measures it, Prometheus scrapes it, PostgreSQL holds
#   its database (and rollback's own store), a local stand-in plays Slack,
#   a flagd file holds its feature flag;
#   the release pipeline checks the prerequisites, records and drills the
#   v1.2.0 migration, migrates and deploys the broken v1.2.0;
#   `rollback run --severity P1` walks the decision flowchart from the live
#   signals and runs the journaled runbook: declare + Slack channel, snapshot,
#   Kubernetes rollback, down migration, verification, flag off, closing
#   summary, block, review.
# Prints the closing summary and where the review draft is. Leaves nothing
# running.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="$root/bin"
out="${ROLLBACK_DEMO_OUT:-$root/demo-out}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/rollback-demo.XXXXXX")
chmod 755 "$dir" # the PostgreSQL server may run as the postgres user
pids=()
pgdata="$dir/pg/data"
as_pg=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -f "$pgdata/postmaster.pid" ] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  "$bin/rollback-sandbox" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
rb() { echo "\$ rollback $*"; "$bin/rollback" --config "$dir/rollback.yaml" "$@"; }
free_port() { # first free loopback port from $1
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

say "Starting the sandbox (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
"$bin/rollback-sandbox" up --dir "$dir"
export KUBECONFIG="$dir/kubeconfig"

say "Starting PostgreSQL (the service's database and rollback's team store)"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL's server programs are missing: run 'make deps'" >&2; exit 1; }
mkdir -p "$dir/pg"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/pg"; as_pg=(runuser -u postgres --); fi
pg_port=$(free_port 15432)
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdata" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -l "$dir/pg/log" -w \
  -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_ "postgres://postgres@127.0.0.1:$pg_port/postgres" -c 'CREATE DATABASE transactions' -c 'CREATE DATABASE rollback'
export TXN_DB_DSN="postgres://postgres@127.0.0.1:$pg_port/transactions?sslmode=disable"
export ROLLBACK_DB_DSN="$TXN_DB_DSN"
export ROLLBACK_STORE="postgres://postgres@127.0.0.1:$pg_port/rollback?sslmode=disable"
export XDG_STATE_HOME="$dir/state" # snapshots and the drill log stay in the demo's directory
echo "PostgreSQL on 127.0.0.1:$pg_port: database 'transactions' for the service, 'rollback' for incidents, journal and blocks"

# v1.1.5's schema: migration 1 applied, golang-migrate's history says so.
psql_ "$TXN_DB_DSN" -f examples/migrations/000001_create_transactions.up.sql \
  -c 'CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)' \
  -c 'INSERT INTO schema_migrations VALUES (1, false)' \
  -c "INSERT INTO transactions (amount) SELECT (random()*100)::numeric(12,2) FROM generate_series(1, 1000)"

say "Starting the Slack stand-in and the flagd flag file"
export SLACK_BOT_TOKEN="xoxb-demo-$RANDOM$RANDOM"
slack_port=$(free_port 18081)
"$bin/rollback-sandbox" slack --listen "127.0.0.1:$slack_port" > "$dir/slack.log" 2>&1 &
pids+=($!)
cat > "$dir/flags.json" <<EOF
{"flags": {"transaction-category": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}
EOF

say "Deploying transaction-service v1.1.5 (stable), the demo service and Prometheus"
kubectl create namespace payments
kubectl apply -f examples/transaction-service.yaml
kubectl -n payments rollout status deployment/transaction-service --timeout=2m
svc_port=$(free_port 18080)
"$bin/rollback-sandbox" demo-service --dir "$dir" -n payments --deployment transaction-service \
  --listen "127.0.0.1:$svc_port" --broken v1.2.0 --rps 150 > "$dir/demo-service.log" 2>&1 &
pids+=($!)
prom_port=$(free_port 19090)
cat > "$dir/prometheus.yml" <<EOP
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: transaction-service
    static_configs: [{targets: ['127.0.0.1:$svc_port']}]
EOP
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prom" \
  --web.listen-address="127.0.0.1:$prom_port" > "$dir/prometheus.log" 2>&1 &
pids+=($!)
echo "demo-service on 127.0.0.1:$svc_port (150 req/s), Prometheus on 127.0.0.1:$prom_port, Slack stand-in on 127.0.0.1:$slack_port"

cat > "$dir/rollback.yaml" <<EOF
apiVersion: rollback/v1
kind: Config
services:
  transaction-service:
    kubernetes: {namespace: payments, name: transaction-service}
    database: {dsnEnv: TXN_DB_DSN, dir: $root/examples/migrations, snapshot: tables}
    verify:
      prometheus: http://127.0.0.1:$prom_port
      errorRateQuery: sum(rate(http_requests_total{code=~"5.."}[20s])) / sum(rate(http_requests_total[20s]))
      # The runbook's "< 0.1%" with 95% confidence: about 3,000 requests
      # without an error, 20 s at the demo's 150 req/s (a quieter service waits longer).
      requestsQuery: sum(increase(http_requests_total[\$window]))
      errorsQuery: sum(increase(http_requests_total{code=~"5.."}[\$window]))
      maxErrorRate: 0.001
      # p99 under 100 ms the same way: the requests slower than the histogram's
      # 0.1 s bucket are at most 1 % of them, with 95% confidence.
      slowQuery: sum(increase(http_request_duration_seconds_count[\$window])) - sum(increase(http_request_duration_seconds_bucket{le="0.1"}[\$window]))
      within: 2m
      smoke:
        - {name: transactions-api, url: "http://127.0.0.1:$svc_port/", expectStatus: 200, maxLatency: 1s}
    notify:
      slack: {tokenEnv: SLACK_BOT_TOKEN, apiURL: "http://127.0.0.1:$slack_port/api", mentions: ["<@U0TECHLEAD>", "<!subteam^S0QA>"]}
    flag: {provider: flagd, key: transaction-category, path: $dir/flags.json}
EOF
echo "rollback.yaml for the demo:"; sed 's/^/  /' "$dir/rollback.yaml"
echo "collecting 10s of pre-release traffic..."
sleep 10

say "Release pipeline for v1.2.0: sign-off, record, drill, prerequisites"
rb runbook approve transaction-service --release v1.2.0 --by on-call-demo
rb db record --dir examples/migrations --release v1.2.0
rb db drill --dir examples/migrations
sed 's/transaction-service:v1.1.5/transaction-service:v1.2.0/' examples/transaction-service.yaml > "$dir/release-v1.2.0.yaml"
rb check transaction-service -f "$dir/release-v1.2.0.yaml" --release v1.2.0 --dir examples/migrations

say "Releasing v1.2.0 (migration 2, then the broken image)"
psql_ "$TXN_DB_DSN" -f examples/migrations/000002_add_transaction_category.up.sql \
  -c 'UPDATE schema_migrations SET version = 2' \
  -c "UPDATE transactions SET category = (ARRAY['food','travel','rent'])[1 + id % 3]"
kubectl apply -f "$dir/release-v1.2.0.yaml"
kubectl -n payments annotate deployment/transaction-service kubernetes.io/change-cause="v1.2.0 — current (broken)" --overwrite
kubectl -n payments rollout status deployment/transaction-service --timeout=2m
echo "waiting for the broken version's errors to show in Prometheus (5xx over 1% of 20 s)..."
errors_shown=""
for _ in $(seq 60); do
  ratio=$(curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" \
    --data-urlencode 'query=sum(rate(http_requests_total{code=~"5.."}[20s])) / sum(rate(http_requests_total[20s]))' |
    sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p') || true
  if awk -v r="${ratio:-0}" 'BEGIN { exit !(r + 0 > 0.01) }'; then errors_shown=$ratio; break; fi
  sleep 1
done
[ -n "$errors_shown" ] || { echo "Prometheus never showed the broken version's errors (see $dir/prometheus.log)" >&2; exit 1; }
echo "5xx ratio over the last 20 s: $errors_shown"

say "P1 detected: the decision from live signals (database, drill log, Prometheus)"
rb decide transaction-service --severity P1 --release v1.2.0 --api-adopted=false

say "History before the rollback, and the runbook's plan"
rb history transaction-service
rb plan transaction-service

say "Rolling back: the whole runbook, journaled (the decision is walked again and recorded)"
start=$(date +%s.%N)
rb run transaction-service --severity P1 --api-adopted=false --yes -o json > "$dir/run.json"
end=$(date +%s.%N)
incident=$(sed -n 's/.*"incident": "\(INC-[^"]*\)".*/\1/p' "$dir/run.json" | head -1)
rb status "$incident"

say "What the Slack stand-in received"
cat "$dir/slack.log"

say "After: Kubernetes, database, feature flag"
rb history transaction-service
echo "\$ kubectl get deployment transaction-service -o jsonpath='{.spec.template.spec.containers[0].image}'"
kubectl -n payments get deployment transaction-service -o jsonpath='{.spec.template.spec.containers[0].image}'; echo
echo "\$ psql -c '\\d transactions' (the category column is gone) and the migration history:"
psql_ "$TXN_DB_DSN" -c '\d transactions' -c 'SELECT * FROM schema_migrations'
echo "snapshot taken before the undo:"; ls -l "$XDG_STATE_HOME"/rollback/snapshots/ 2>/dev/null || true
echo "flag file: $(cat "$dir/flags.json")"

say "A second rollback does not return to the broken v1.2.0"
rb run transaction-service --yes || echo "(refused, exit $?: there is no older good revision; the broken one is never a target)"

say "CI gate: the broken version is blocked"
rb gate transaction-service v1.2.0 || echo "(exit $?: blocked)"

mkdir -p "$out"
"$bin/rollback" --config "$dir/rollback.yaml" report "$incident" > "$out/$incident.md"
say "Closing summary (as posted to the incident channel)"
awk '/✅ Rollback complete/{p=1} p' "$dir/slack.log"
printf 'rollback run took %.1fs in all. Post-incident review draft: %s\n' \
  "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$out/$incident.md"
echo "Stopping the sandbox, PostgreSQL, Prometheus and the stand-ins."
