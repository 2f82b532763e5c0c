#!/usr/bin/env bash
# Webhook ingress: accepted deliveries/s with durable storage (SQLite, PostgreSQL), one
# worker, p99 time to the 2xx, and the end-to-end delivery latency to a fast upstream
# (nginx). Reference in the same run: the same signed POSTs proxied to the same nginx by
# the same Potok (no verification, no storage). One command:
#
#     bench/webhooks.sh               # 10 s per measurement
#     QUICK=1 bench/webhooks.sh       # 3 s
#     BACKENDS=sqlite bench/webhooks.sh
#
# Potok runs on core 0, wrk (pre-signed unique deliveries, bench/webhooks.lua) and nginx
# on core 1. "accepted/s" counts deliveries stored (webhooks_accepted_total), never
# replays. After the load stops, the time for the forwarder to empty the outbox is
# measured ("drain"): near zero when it kept up. Delivery latency is delivered_at -
# received_at over every delivery of the run, read from the outbox itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
[[ ${QUICK:-0} == 1 ]] && DURATION=3
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
BACKENDS=${BACKENDS:-"sqlite postgresql"}
CONNECTIONS=${CONNECTIONS:-16}
UPSTREAM_PORT=18381  # ports of their own: other benchmarks may run beside this one
POTOK_PORT=18390
COUNT=$((DURATION * 8000))
SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REPORT=$BENCH_DIR/webhooks_report.py
mkdir -p "$WORK" "$RESULTS"
trap cleanup EXIT
ensure_tools
prepare_potok
start_upstream

metric() {  # NAME -> the sum of its samples
    curl -s "http://127.0.0.1:$POTOK_PORT/api/v1/metrics" \
        | awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%d", s}'
}

write_config() {  # FILE OUTBOX_URL
    cat >"$1" <<YAML
server: {host: 127.0.0.1, port: $POTOK_PORT, timeouts: {shutdown_grace: 2s}}
logging: {level: warning, access_log: {enabled: false}}
services:
  bench: {targets: ["http://127.0.0.1:$UPSTREAM_PORT"]}
routes:
  - {name: proxy, match: {prefix: /proxy}, service: bench}
webhooks:
  outbox: {url: "$2"}
  delivery: {signing_secret: "$SECRET"}
  sources:
    bench: {secrets: ["$SECRET"], service: bench, upstream_path: /hook}
YAML
}

run_wrk() {  # PATH OUTFILE
    WEBHOOK_PATH=$1 WEBHOOK_REQUESTS=$WORK/requests.tsv WRK_THREADS=1 \
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s "$BENCH_DIR/webhooks.lua" "http://127.0.0.1:$POTOK_PORT" >"$2"
}

p99() { awk '$1 == "99%" {print $2}' "$1"; }
rps() { awk '/Requests\/sec/ {printf "%d", $2}' "$1"; }
non2xx() { awk '/Non-2xx/ {print $5}' "$1"; }

ROWS=()
measure() {  # BACKEND
    local backend=$1 url db=""
    if [[ $backend == sqlite ]]; then
        rm -f "$WORK"/outbox.db*
        url="sqlite:///$WORK/outbox.db"
    else
        db="bench_webhooks_$$"
        "$PYTHON" "$REPORT" drop-db "$db"
        "$PYTHON" "$REPORT" create-db "$db"
        url="postgresql://postgres@127.0.0.1:5432/$db"
    fi
    write_config "$WORK/potok.yaml" "$url"
    "$POTOK" check --config "$WORK/potok.yaml" >/dev/null || die "potok rejects the config"
    start_potok "$WORK/potok.yaml" "$PROXY_CPU" "$WORK/potok-$backend.log"
    local pid=$LAST_PID
    wait_http "$POTOK_PORT" "$pid" /api/v1/health/liveness || die "potok did not start"
    "$PYTHON" "$BENCH_DIR/webhooks_requests.py" "$WORK/requests.tsv" 2000 "warm-$backend-$$"
    DURATION=2 run_wrk /api/v1/webhooks/bench "$WORK/warm.txt"  # warm-up
    "$PYTHON" "$BENCH_DIR/webhooks_requests.py" "$WORK/requests.tsv" "$COUNT" "run-$backend-$$"
    local before after rate
    before=$(metric webhooks_accepted_total)
    run_wrk /api/v1/webhooks/bench "$WORK/wrk-$backend.txt"
    after=$(metric webhooks_accepted_total)
    rate=$(((after - before) / DURATION))
    local start drain pending
    start=$(date +%s.%N)
    while pending=$("$PYTHON" "$REPORT" pending "$url") && ((pending > 0)); do
        sleep 0.2
        (($(echo "$(date +%s.%N) - $start > 60" | bc) == 1)) && break
    done
    drain=$(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f')
    local latency
    latency=$("$PYTHON" "$REPORT" latency "$url")
    read -r n lat50 lat99 latmax <<<"$latency"
    ROWS+=("| Potok webhooks, $backend outbox | $rate | $(p99 "$WORK/wrk-$backend.txt") | $(non2xx "$WORK/wrk-$backend.txt" || true) | $lat50 / $lat99 / $latmax ms | ${drain} s ($pending left) |")
    log "$backend: $rate accepted/s, p99 $(p99 "$WORK/wrk-$backend.txt"), delivery p50/p99 $lat50/$lat99 ms over $n"
    if [[ $backend == sqlite ]]; then  # the reference, on the same process
        run_wrk /proxy "$WORK/wrk-proxy.txt"
        ROWS+=("| reference: the same POSTs proxied (no verify, no store) | $(rps "$WORK/wrk-proxy.txt") | $(p99 "$WORK/wrk-proxy.txt") | - | - | - |")
    fi
    stop_pid "$pid"
    [[ -z $db ]] || "$PYTHON" "$REPORT" drop-db "$db"
}

for backend in $BACKENDS; do
    measure "$backend"
done

{
    echo "Webhook ingress, one worker (core 0), wrk -c$CONNECTIONS ${DURATION}s on core 1, nginx upstream on core 1."
    echo "Potok: $POTOK_SOURCE"
    echo
    echo "| | accepted/s (req/s for the reference) | p99 to 2xx | non-2xx | delivery latency p50 / p99 / max | outbox drained after load |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULTS/webhooks-latest.md"
