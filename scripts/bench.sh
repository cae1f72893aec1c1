#!/usr/bin/env bash
# Benchmarks, printed as a table:
#  - `rollback run` against `kubectl rollout undo && kubectl rollout status`
#    on the same sandbox scenario (3 replicas, v1.1.5 -> broken v1.2.0),
#    for a Deployment, a StatefulSet and a DaemonSet, median of RUNS runs
#    each, the two tools alternating which goes first; the times are this
#    sandbox's (instant readiness, no data plane): compare the ratios;
#  - the sandbox's start time: `up` with cached binaries (warm), and, with
#    BENCH_COLD=1, the cold path: building the binaries with an empty Go
#    build cache and binary cache, then `up`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
bin="$PWD/bin"
dir=$(mktemp -d "${TMPDIR:-/tmp}/rollback-bench.XXXXXX")
trap '"$bin/rollback-sandbox" down --dir "$dir/sbx" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }

# Sandbox start times.
ups=()
for i in $(seq 1 "$RUNS"); do
  s=$(now); "$bin/rollback-sandbox" up --dir "$dir/sbx" >/dev/null 2>&1; e=$(now)
  ups+=("$(elapsed "$s" "$e")")
  [ "$i" -lt "$RUNS" ] && "$bin/rollback-sandbox" down --dir "$dir/sbx" >/dev/null 2>&1
done
export KUBECONFIG="$dir/sbx/kubeconfig"
export ROLLBACK_STORE="$dir/state/rollback.db"

# scenario NAMESPACE KIND: transaction-service v1.1.5 (3 replicas; a
# DaemonSet has one pod per node, the sandbox has one), then the broken
# v1.2.0 rolled out.
scenario() {
  kubectl create namespace "$1" >/dev/null
  case "$2" in
  deployment) sed "s/namespace: payments/namespace: $1/" examples/transaction-service.yaml | kubectl apply -f - >/dev/null ;;
  statefulset | daemonset)
    local k=StatefulSet extra="  replicas: 3
  serviceName: transaction-service
  podManagementPolicy: Parallel"
    if [ "$2" = daemonset ]; then k=DaemonSet extra=""; fi
    kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: $k
metadata: {name: transaction-service, namespace: $1}
spec:
$extra
  selector: {matchLabels: {app: transaction-service}}
  template:
    metadata: {labels: {app: transaction-service}}
    spec:
      containers: [{name: transaction-service, image: "registry.local/transaction-service:v1.1.5"}]
YAML
    ;;
  esac
  kubectl -n "$1" rollout status "$2/transaction-service" --timeout=2m >/dev/null
  kubectl -n "$1" set image "$2/transaction-service" transaction-service=registry.local/transaction-service:v1.2.0 >/dev/null
  kubectl -n "$1" rollout status "$2/transaction-service" --timeout=2m >/dev/null
}
# took SECONDS of a step in 'rollback status INC -o json' (took is in ns).
took() { # json step
  awk -v want="\"$2\"," '$1 == "\"step\":" {step = $2} $1 == "\"took\":" && step == want {gsub(",", "", $2); printf "%.3f", $2 / 1e9; found = 1} END {if (!found) printf "0"}' "$1"
}
declare -A rows
for kind in deployment statefulset daemonset; do
  rb=(); kc=(); kstep=(); verify=(); own=()
  run_rb() {
    scenario "rb-$kind-$i" "$kind"
    s=$(now); "$bin/rollback" run "$kind/transaction-service" -n "rb-$kind-$i" --yes -o json > "$dir/run.json" 2>/dev/null; e=$(now)
    rb+=("$(elapsed "$s" "$e")")
    inc=$(sed -n 's/.*"incident": "\(INC-[^"]*\)".*/\1/p' "$dir/run.json" | head -1)
    "$bin/rollback" status "$inc" -o json > "$dir/status.json"
    k=$(took "$dir/status.json" kube-undo); v=$(took "$dir/status.json" smoke)
    kstep+=("$k"); verify+=("$v")
    # The tool's own time: the whole run less the Kubernetes step (API
    # calls and the rollout it waits for) and the pod verification.
    own+=("$(awk -v w="$(elapsed "$s" "$e")" -v k="$k" -v v="$v" 'BEGIN{printf "%.3f", w-k-v}')")
  }
  run_kc() {
    scenario "kc-$kind-$i" "$kind"
    s=$(now)
    kubectl -n "kc-$kind-$i" rollout undo "$kind/transaction-service" >/dev/null
    kubectl -n "kc-$kind-$i" rollout status "$kind/transaction-service" --timeout=5m >/dev/null
    e=$(now)
    kc+=("$(elapsed "$s" "$e")")
  }
  for i in $(seq 1 "$RUNS"); do
    # The tools alternate which goes first, so neither always meets a
    # warmer control plane.
    if [ $((i % 2)) -eq 1 ]; then run_rb; run_kc; else run_kc; run_rb; fi
  done
  rows[$kind]=$(
    printf 'rb %s\n' "${rb[*]}"; printf 'kstep %s\n' "${kstep[*]}"; printf 'verify %s\n' "${verify[*]}"
    printf 'own %s\n' "${own[*]}"; printf 'kc %s\n' "${kc[*]}"
  )
done

# Blue/green: transaction-service blue (v1.1.5) and green (v1.2.0, live);
# the time from 'rollback run service/...' starting to the Kubernetes step
# done, which ends when every EndpointSlice endpoint is a blue pod.
bluegreen() { # namespace
  kubectl create namespace "$1" >/dev/null
  for c in blue:v1.1.5 green:v1.2.0; do
    kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: transaction-service-${c%%:*}, namespace: $1}
spec:
  replicas: 3
  selector: {matchLabels: {app: transaction-service, color: ${c%%:*}}}
  template:
    metadata: {labels: {app: transaction-service, color: ${c%%:*}}}
    spec:
      containers: [{name: transaction-service, image: "registry.local/transaction-service:${c##*:}", ports: [{containerPort: 8080}]}]
YAML
    kubectl -n "$1" rollout status "deployment/transaction-service-${c%%:*}" --timeout=2m >/dev/null
  done
  kubectl -n "$1" create service clusterip transaction-service --tcp=80:8080 >/dev/null
  kubectl -n "$1" patch service transaction-service -p '{"spec":{"selector":{"app":"transaction-service","color":"green"}}}' >/dev/null
  until kubectl -n "$1" get endpointslices -l kubernetes.io/service-name=transaction-service -o jsonpath='{.items[*].endpoints[*].targetRef.name}' | grep -q green; do sleep 0.1; done
}
# seconds from START (epoch) to the end of STEP in 'rollback status -o json'
# (its "started" time plus its "took" in ns)
step_end() { # json step start
  local started took
  read -r started took < <(awk -v want="\"$2\"," '$1 == "\"step\":" {step = $2}
    step == want && $1 == "\"started\":" {gsub(/[",]/, "", $2); st = $2}
    step == want && $1 == "\"took\":" {gsub(",", "", $2); print st, $2; exit}' "$1")
  awk -v a="$(date -d "$started" +%s.%N)" -v t="$took" -v s="$3" 'BEGIN{printf "%.3f", a + t / 1e9 - s}'
}
bg_whole=(); bg_switch=(); hr_switch=()
kubectl apply --server-side -f bin/crds/gateway-api >/dev/null
until [ "$(kubectl get crd httproutes.gateway.networking.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ]; do sleep 0.1; done
for i in $(seq 1 "$RUNS"); do
  bluegreen "bg-$i"
  s=$(now); "$bin/rollback" run service/transaction-service -n "bg-$i" --yes -o json > "$dir/run.json" 2>/dev/null; e=$(now)
  bg_whole+=("$(elapsed "$s" "$e")")
  inc=$(sed -n 's/.*"incident": "\(INC-[^"]*\)".*/\1/p' "$dir/run.json" | head -1)
  "$bin/rollback" status "$inc" -o json > "$dir/status.json"
  bg_switch+=("$(step_end "$dir/status.json" kube-undo "$s")")
  # The same colours behind a Gateway API HTTPRoute (a Service per colour,
  # all weight on green): the switch ends when the route reads back all
  # weight on blue and blue's Service has its ready endpoints.
  for c in blue green; do
    kubectl -n "bg-$i" create service clusterip "transaction-service-$c" --tcp=80:8080 >/dev/null
    kubectl -n "bg-$i" patch service "transaction-service-$c" -p "{\"spec\":{\"selector\":{\"app\":\"transaction-service\",\"color\":\"$c\"}}}" >/dev/null
  done
  kubectl apply -f - >/dev/null <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: transaction-service, namespace: bg-$i}
spec:
  parentRefs: [{name: public}]
  rules:
  - backendRefs:
    - {name: transaction-service-blue, port: 80, weight: 0}
    - {name: transaction-service-green, port: 80, weight: 100}
YAML
  s=$(now); "$bin/rollback" run httproute/transaction-service -n "bg-$i" --yes -o json > "$dir/run.json" 2>/dev/null
  inc=$(sed -n 's/.*"incident": "\(INC-[^"]*\)".*/\1/p' "$dir/run.json" | head -1)
  "$bin/rollback" status "$inc" -o json > "$dir/status.json"
  hr_switch+=("$(step_end "$dir/status.json" kube-undo "$s")")
done

# Helm: the test chart at v1.1.5, upgraded to v1.2.0, rolled back by
# 'rollback run helm/app' (Helm's SDK, --wait, with the whole runbook) and
# by 'helm rollback app 1 --wait' in another namespace; helm history after.
helm_rb=(); helm_cli=()
export HELM_CACHE_HOME="$dir/helm-cache" HELM_CONFIG_HOME="$dir/helm-config" HELM_DATA_HOME="$dir/helm-data"
for i in $(seq 1 "$RUNS"); do
  for ns in "hr-$i" "hc-$i"; do
    kubectl create namespace "$ns" >/dev/null
    bin/helm install app test/e2e/testdata/chart -n "$ns" --set image.tag=v1.1.5 --wait --timeout 2m >/dev/null
    bin/helm upgrade app test/e2e/testdata/chart -n "$ns" --set image.tag=v1.2.0 --wait --timeout 2m >/dev/null
  done
  s=$(now); "$bin/rollback" run helm/app -n "hr-$i" --yes >/dev/null 2>&1; helm_rb+=("$(elapsed "$s" "$(now)")")
  s=$(now); bin/helm rollback app 1 -n "hc-$i" --wait --timeout 2m >/dev/null; helm_cli+=("$(elapsed "$s" "$(now)")")
done
{ echo "helm history after 'rollback run helm/app':"; bin/helm history app -n hr-1
  echo "helm history after 'helm rollback app 1 --wait':"; bin/helm history app -n hc-1; } > "$dir/helm-history.txt"

# Communication never delays recovery: start -> rolled back with no
# notifier/flag configured vs every endpoint hung (default timeouts; a hung
# run takes minutes in all, as its communication steps run to their
# deadlines beside and after the recovery).
# BENCH_COMMS=0 leaves this part out (it takes minutes).
: > "$dir/comms.txt"
if [ "${BENCH_COMMS:-1}" = 1 ]; then
  go run ./bench/commsbench -runs "${COMMS_RUNS:-3}" -rollback "$bin/rollback" > "$dir/comms.txt"
fi

warm_build_s=$(now); scripts/build-sandbox.sh >/dev/null; warm_build=$(elapsed "$warm_build_s" "$(now)")

printf '\n%-74s %10s %10s %10s   (%d runs)\n' "benchmark" "median s" "min s" "max s" "$RUNS"
row() { # name values...
  local name=$1; shift
  printf '%s\n' "$@" > "$dir/v"
  printf '%-74s %10s %10s %10s\n' "$name" "$(median < "$dir/v")" "$(sort -g "$dir/v" | head -1)" "$(sort -g "$dir/v" | tail -1)"
}
row "blue/green: rollback run start -> every endpoint on the standby (target <= 1 s)" "${bg_switch[@]}"
row "blue/green: whole rollback run (incident, checks, switch, verify, block)" "${bg_whole[@]}"
row "blue/green HTTPRoute: rollback run start -> all weight on the standby, its endpoints ready" "${hr_switch[@]}"
row "helm: rollback run helm/app (whole runbook; Helm SDK rollback --wait)" "${helm_rb[@]}"
row "helm: helm rollback app 1 --wait" "${helm_cli[@]}"
vals() { printf '%s\n' "${rows[$1]}" | awk -v k="$2" '$1 == k {$1 = ""; print}'; }
for kind in deployment statefulset daemonset; do
  # shellcheck disable=SC2046
  row "$kind: rollback run (whole runbook: incident, undo, watch, verify, block)" $(vals "$kind" rb)
  # shellcheck disable=SC2046
  row "  of which: Kubernetes rollback step (undo, watch, image check, marks)" $(vals "$kind" kstep)
  # shellcheck disable=SC2046
  row "  of which: pods and smoke verification" $(vals "$kind" verify)
  # shellcheck disable=SC2046
  row "  of which: everything else (process start, plan, journal, close, block)" $(vals "$kind" own)
  # shellcheck disable=SC2046
  row "$kind: kubectl rollout undo && kubectl rollout status" $(vals "$kind" kc)
  rbm=$(vals "$kind" rb | tr ' ' '\n' | grep . | median); kcm=$(vals "$kind" kc | tr ' ' '\n' | grep . | median)
  printf '%-74s %10s\n' "$kind: ratio of medians, rollback run / kubectl (target <= 1.1)" "$(awk -v a="$rbm" -v b="$kcm" 'BEGIN{printf "%.2f", a/b}')"
done
row "rollback-sandbox up (binaries cached)" "${ups[@]}"
row "scripts/build-sandbox.sh (binary cache hit)" "$warm_build"
cat "$dir/comms.txt"
echo; cat "$dir/helm-history.txt"

if [ "${BENCH_COLD:-0}" = 1 ]; then
  cold=$(mktemp -d "${TMPDIR:-/tmp}/rollback-cold.XXXXXX")
  s=$(now)
  GOCACHE="$cold/gocache" ROLLBACK_CACHE_DIR="$cold/bin" scripts/build-sandbox.sh >/dev/null
  b=$(now)
  "$bin/rollback-sandbox" down --dir "$dir/sbx" >/dev/null 2>&1
  "$bin/rollback-sandbox" up --dir "$dir/sbx" >/dev/null 2>&1
  e=$(now)
  rm -rf "$cold"
  row "cold build (empty Go build cache, modules downloaded)" "$(elapsed "$s" "$b")"
  row "cold build + up" "$(elapsed "$s" "$e")"
fi
