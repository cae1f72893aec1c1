#!/usr/bin/env bash
# A rollback fire drill on the local sandbox: deploy transaction-service
# v1.1.5, roll out a broken v1.2.0, roll it back with `rollback run`, and
# show the history before and after. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/bin"
dir=$(mktemp -d "${TMPDIR:-/tmp}/rollback-demo.XXXXXX")
cleanup() {
  "$bin/rollback-sandbox" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
rb() { echo "\$ rollback $*"; "$bin/rollback" --config examples/rollback.yaml "$@"; }

say "Starting the sandbox (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
"$bin/rollback-sandbox" up --dir "$dir"
export KUBECONFIG="$dir/kubeconfig"

say "Deploying transaction-service v1.1.5 (stable)"
kubectl create namespace payments
kubectl apply -f examples/transaction-service.yaml
kubectl -n payments rollout status deployment/transaction-service --timeout=2m

say "Releasing v1.2.0 (broken)"
kubectl -n payments set image deployment/transaction-service transaction-service=registry.local/transaction-service:v1.2.0
kubectl -n payments annotate deployment/transaction-service kubernetes.io/change-cause="v1.2.0 — current (broken)" --overwrite
kubectl -n payments rollout status deployment/transaction-service --timeout=2m

say "P1 detected: history before the rollback"
rb history transaction-service
rb plan transaction-service

say "Rolling back"
start=$(date +%s.%N)
rb run transaction-service --yes
end=$(date +%s.%N)

say "History after the rollback (v1.2.0 is marked bad, v1.1.5 good)"
rb history transaction-service
echo "\$ kubectl rollout history deployment/transaction-service -n payments"
kubectl -n payments rollout history deployment/transaction-service
echo "\$ kubectl get deployment transaction-service -o jsonpath='{.spec.template.spec.containers[0].image}'"
kubectl -n payments get deployment transaction-service -o jsonpath='{.spec.template.spec.containers[0].image}'; echo

say "A second rollback does not return to the broken v1.2.0"
rb run transaction-service --yes || echo "(refused, exit $?: there is no older good revision; the broken one is never a target)"

printf '\nRollback took %.1fs (the runbook budgets 3 minutes for this step). Stopping the sandbox.\n' "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
