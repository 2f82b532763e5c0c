#!/usr/bin/env bash
# Traffic shaping against the plain route, in one run (issue 20's benchmark):
#
#     bench/traffic.sh                      # 3 rounds of 8 s per row, then callgrind (~10 min)
#     ROUNDS=5 DURATION=10 bench/traffic.sh
#     CALLGRIND=0 bench/traffic.sh          # wall clock only
#
# One Potok (one worker, core $PROXY_CPU) with these routes, upstreams one nginx (core
# $UPSTREAM_CPU, shared with the load generator) answering small JSON on six ports:
#   plain      /pln/x  -> v1
#   weighted   /wgt/x  -> v1 90 %, v2 10 %           (goal: costs <= 2 % of req/s)
#   mirrored   /mir/x  -> v1, copied at 100 % to shadow  (goal: >= 70 % of plain's req/s:
#                         Potok sends twice the requests on its one core)
#   aggregate  /agg/x  -> a, b and c in parallel, one JSON answer
#   one        /one/a, /one/b, /one/c -> a, b, c (the three calls a front end makes
#                         without aggregation)
# The first four are driven by wrk (50 connections). The aggregation is then compared
# from a front end's side by bench/traffic_client.py (same client, same 50 connections):
# one call to /agg/x against the three calls one after the other on one connection,
# as composite answers per second and each composite's p50/p99.
# Rows alternate inside each round so that the machine's load falls on all alike;
# the table shows medians over the rounds. Then (CALLGRIND=1) bench/instructions.sh
# counts instructions per request of the plain, weighted, mirrored and aggregated routes
# (each twice for the first two): load-independent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PORT=${TRAFFIC_PORT:-19300}
FIRST_UPSTREAM=${TRAFFIC_UPSTREAM_PORT:-19301}  # this and the next five
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-50}
CALLGRIND=${CALLGRIND:-1}

trap cleanup EXIT
ensure_tools
prepare_potok
rm -rf "$WORK"
mkdir -p "$WORK/upstream/tmp"

names=(v1 v2 shadow a b c)
port_of() { local i; for i in "${!names[@]}"; do [[ ${names[$i]} == "$1" ]] && echo $((FIRST_UPSTREAM + i)); done; }

dir=$WORK/upstream
{
    _nginx_head "$dir"
    echo "http {"
    _nginx_http_common "$dir"
    echo "    default_type application/json;"
    for name in "${names[@]}"; do
        check_port_free "$(port_of "$name")"
        echo "    server { listen 127.0.0.1:$(port_of "$name") backlog=4096;"
        echo "        location / { return 200 '{\"$name\":{\"ok\":true,\"version\":\"$name\"}}'; } }"
    done
    echo "}"
} >"$dir/nginx.conf"
start_nginx upstream "$UPSTREAM_CPU"
wait_http "$(port_of c)" "$LAST_PID" || die "the upstream nginx did not start (see $dir/error.log)"

config=$WORK/potok.yaml
{
    cat <<EOF
server:
  host: 127.0.0.1
  port: $PORT
  workers: 1
  timeouts: {shutdown_grace: 2s}
logging:
  level: warning
  access_log: {enabled: false}
metrics: {enabled: false}
services:
EOF
    for name in "${names[@]}"; do
        echo "  $name: {targets: [\"http://127.0.0.1:$(port_of "$name")\"]}"
    done
    cat <<EOF
routes:
  - {name: plain, match: {prefix: /pln/}, service: v1}
  - name: weighted
    match: {prefix: /wgt/}
    services: [{name: v1, weight: 90}, {name: v2, weight: 10}]
  - name: mirrored
    match: {prefix: /mir/}
    service: v1
    mirror: {service: shadow, percent: 100, max_in_flight: 1000}
  - name: aggregate
    match: {path: /agg/x}
    aggregate:
      calls:
        - {service: a, path: /a, key: a}
        - {service: b, path: /b, key: b}
        - {service: c, path: /c, key: c}
  - {name: one-a, match: {path: /one/a}, service: a}
  - {name: one-b, match: {path: /one/b}, service: b}
  - {name: one-c, match: {path: /one/c}, service: c}
EOF
} >"$config"
"$POTOK" check --config "$config" >/dev/null || die "potok rejects $config"
check_port_free "$PORT"
start_potok "$config" "$PROXY_CPU" "$WORK/potok.log"
wait_http "$PORT" "$LAST_PID" /pln/x || die "potok did not start (see $WORK/potok.log)"
log "potok on 127.0.0.1:$PORT (core $PROXY_CPU), nginx on $FIRST_UPSTREAM-$((FIRST_UPSTREAM + 5))"
curl -sf "http://127.0.0.1:$PORT/agg/x" >"$WORK/agg-sample.json" || die "the aggregated route fails"

run_wrk() {  # ROW PATH -> "req/s p99_ms" appended to $WORK/ROW.txt
    local out=$WORK/wrk-$1.txt
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:$PORT$2" >"$out" 2>&1 || die "wrk failed on $2 (see $out)"
    grep -q "Non-2xx" "$out" && die "non-2xx answers on $2 (see $out)"
    local rps p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99=$(wrk_p99_ms "$out")
    echo "$rps $p99" >>"$WORK/$1.txt"
    log "$1: $rps req/s, p99 $p99 ms"
}
run_client() {  # ROW PATH... -> "composites/s p50 p99" appended to $WORK/ROW.txt
    local row=$1 line
    shift
    line=$(taskset -c "$LOAD_CPU" "$PYTHON" "$BENCH_DIR/traffic_client.py" "$PORT" "$DURATION" \
        "$CONNECTIONS" "$@") || die "the client failed on $*"
    "$PYTHON" -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["composites_per_s"], d["p50_ms"], d["p99_ms"])' \
        "$line" >>"$WORK/$row.txt"
    log "$row: $line"
}

# A short warm-up of every route, then the rounds.
for path in /pln/x /wgt/x /mir/x /agg/x /one/a; do
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT$path" >/dev/null 2>&1
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS"
    run_wrk plain /pln/x
    run_wrk weighted /wgt/x
    run_wrk mirrored /mir/x
    run_wrk aggregate /agg/x
    run_client client-aggregate /agg/x
    run_client client-sequential /one/a /one/b /one/c
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

plain=$(column_median "$WORK/plain.txt" 1)
share() { awk -v a="$1" -v b="$plain" 'BEGIN {printf "%.1f %%", 100 * a / b}'; }
table=$WORK/table.md
{
    echo "| Row | req/s (median) | p99 ms (median) | vs plain |"
    echo "|:---|---:|---:|---:|"
    for row in plain weighted mirrored aggregate; do
        rps=$(column_median "$WORK/$row.txt" 1)
        echo "| $row | $rps | $(column_median "$WORK/$row.txt" 2) | $(share "$rps") |"
    done
    echo
    echo "| Front end (traffic_client.py, $CONNECTIONS connections) | answers/s (median) | p50 ms | p99 ms |"
    echo "|:---|---:|---:|---:|"
    echo "| one aggregated call /agg/x | $(column_median "$WORK/client-aggregate.txt" 1) | $(column_median "$WORK/client-aggregate.txt" 2) | $(column_median "$WORK/client-aggregate.txt" 3) |"
    echo "| three sequential calls /one/a, /one/b, /one/c | $(column_median "$WORK/client-sequential.txt" 1) | $(column_median "$WORK/client-sequential.txt" 2) | $(column_median "$WORK/client-sequential.txt" 3) |"
} >"$table"
mkdir -p "$RESULTS"
{
    echo "Traffic shaping, $(date -u '+%Y-%m-%d %H:%M UTC'), $POTOK_SOURCE; $ROUNDS rounds of ${DURATION} s per row,"
    echo "$CONNECTIONS connections; Potok 1 worker on core $PROXY_CPU; nginx and the load on core $LOAD_CPU;"
    echo "load average before $load_before, after $load_after; $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}')."
    echo
    cat "$table"
} | tee "$RESULTS/traffic-latest.md"

if [[ $CALLGRIND == 1 ]]; then
    cleanup
    STARTED_PIDS=()
    log "instructions per request: plain against weighted (bench/instructions.sh)"
    BENCH_NO_LOCK=1 ROUTES="open weighted mirrored aggregate open weighted" REQUESTS=${INSTR_REQUESTS:-2000} \
        INSTR_PORT=$((PORT + 10)) INSTR_UPSTREAM_PORT=$((PORT + 11)) INSTR_REDIS_PORT=$((PORT + 12)) \
        "$BENCH_DIR/instructions.sh"
fi
