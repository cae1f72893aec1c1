#!/usr/bin/env bash
# A rollback fire drill on the local sandbox: deploy transaction-service
# v1.1.5 with the demo service and Prometheus measuring it, roll out a broken
# v1.2.0, decide from the measured error rate, roll it back with `rollback
# run` (the journaled runbook: incident, checklist, block), show the history
# before and after, verify the recovery, show the CI gate and the review
# draft. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/bin"
dir=$(mktemp -d "${TMPDIR:-/tmp}/rollback-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$bin/rollback-sandbox" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
rb() { echo "\$ rollback $*"; "$bin/rollback" --config examples/rollback.yaml "$@"; }

say "Starting the sandbox (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
"$bin/rollback-sandbox" up --dir "$dir"
export KUBECONFIG="$dir/kubeconfig"
export ROLLBACK_STORE="$dir/state/rollback.db"   # incidents, journal, blocks: kept in the demo's directory

say "Deploying transaction-service v1.1.5 (stable)"
kubectl create namespace payments
kubectl apply -f examples/transaction-service.yaml
kubectl -n payments rollout status deployment/transaction-service --timeout=2m

free_port() { # first free loopback port from $1
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
svc_port=$(free_port 18080)
"$bin/rollback-sandbox" demo-service --dir "$dir" -n payments --deployment transaction-service \
  --listen "127.0.0.1:$svc_port" --broken v1.2.0 --rps 40 > "$dir/demo-service.log" 2>&1 &
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
export ROLLBACK_PROMETHEUS_URL="http://127.0.0.1:$prom_port"
err_q='sum(rate(http_requests_total{code=~"5.."}[20s])) / sum(rate(http_requests_total[20s]))'
echo "demo-service on 127.0.0.1:$svc_port (40 req/s), Prometheus on 127.0.0.1:$prom_port"
echo "collecting 20s of pre-release baseline..."
sleep 20

say "Releasing v1.2.0 (broken)"
kubectl -n payments set image deployment/transaction-service transaction-service=registry.local/transaction-service:v1.2.0
kubectl -n payments annotate deployment/transaction-service kubernetes.io/change-cause="v1.2.0 — current (broken)" --overwrite
kubectl -n payments rollout status deployment/transaction-service --timeout=2m

echo "waiting 25s for the broken version's errors to show in Prometheus..."
sleep 25

say "P1 detected: decide from live signals"
rb decide transaction-service --severity P1 --error-rate-query "$err_q" --migration-ran=false --api-adopted=false

say "History before the rollback"
rb history transaction-service
rb plan transaction-service

say "Rolling back (the whole runbook, journaled)"
start=$(date +%s.%N)
rb run transaction-service --yes -o json > "$dir/run.json"
end=$(date +%s.%N)
incident=$(sed -n 's/.*"incident": "\(INC-[^"]*\)".*/\1/p' "$dir/run.json" | head -1)
echo "incident: $incident"
rb status "$incident"

say "History after the rollback (v1.2.0 is marked bad, v1.1.5 good)"
rb history transaction-service
echo "\$ kubectl rollout history deployment/transaction-service -n payments"
kubectl -n payments rollout history deployment/transaction-service
echo "\$ kubectl get deployment transaction-service -o jsonpath='{.spec.template.spec.containers[0].image}'"
kubectl -n payments get deployment transaction-service -o jsonpath='{.spec.template.spec.containers[0].image}'; echo

say "Verifying the recovery (pods, smoke test, 5xx < 0.1% and p99 latency within 2x the pre-release baseline, within 5 minutes)"
lat_q='histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[20s])))'
rb verify transaction-service --error-rate-query "$err_q" --latency-query "$lat_q" --latency-factor 2 \
  --smoke-url "http://127.0.0.1:$svc_port/"

say "A second rollback does not return to the broken v1.2.0"
rb run transaction-service --yes || echo "(refused, exit $?: there is no older good revision; the broken one is never a target)"

say "CI gate: the broken version is blocked"
rb gate transaction-service v1.2.0 || echo "(exit $?: blocked)"

say "Post-incident review draft"
rb report "$incident" | head -40

printf '\nRollback took %.1fs (the runbook budgets 3 minutes for this step). Stopping the sandbox.\n' "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
