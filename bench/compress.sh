#!/usr/bin/env bash
# What the compress policy costs by the clock: Potok's CPU time per request (user +
# system, from /proc) and req/s for a 4 KiB JSON answer (bench/lib.sh's upstream), on a
# route without the policy and on one with it, per encoding. One worker on core 0; the
# upstream nginx and hey on core 1.
#
#     bench/compress.sh                      # 3 rounds of 5 s per case (~2 min)
#     ROUNDS=5 DURATION=8 bench/compress.sh
#     COMPRESS_PORT=18140 COMPRESS_UPSTREAM_PORT=18141 bench/compress.sh   # other ports
#
# CPU per request is the measure to compare: on a shared 2-core machine req/s move with
# whatever else runs, CPU seconds per request much less. Table: stdout and
# bench/results/compress-latest.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-20}
PORT=${COMPRESS_PORT:-18094}
UPSTREAM_PORT=${COMPRESS_UPSTREAM_PORT:-18384}  # lib.sh's default is bench/proxy.sh's
CASES=${CASES:-"plain gzip br zstd none"}

trap cleanup EXIT
ensure_tools
prepare_potok
rm -rf "$WORK"
mkdir -p "$WORK/upstream"
start_upstream
cat >"$WORK/potok.yaml" <<YAML
server: {host: 127.0.0.1, port: $PORT, workers: 1, timeouts: {shutdown_grace: 2s}}
logging: {level: warning, access_log: {enabled: false}}
metrics: {enabled: false}
services:
  bench: {targets: ["http://127.0.0.1:$UPSTREAM_PORT"]}
routes:
  - {name: json4k, match: {prefix: /j4k/}, service: bench}
  - {name: compress, match: {prefix: /cmp/}, service: bench, policies: {compress: {}}}
YAML
"$POTOK" check --config "$WORK/potok.yaml" >/dev/null || die "potok rejects the config"
check_port_free "$PORT"
start_potok "$WORK/potok.yaml" "$PROXY_CPU" "$WORK/potok.log"
PID=$LAST_PID
wait_http "$PORT" "$PID" /j4k/x || die "potok did not start (see $WORK/potok.log)"

case_args() {  # CASE -> "PATH ACCEPT-ENCODING" (hey's own default is gzip)
    case $1 in
    plain) echo "/j4k/x gzip" ;;  # the same answer on a route without the policy
    gzip) echo "/cmp/x gzip" ;;
    br) echo "/cmp/x br" ;;
    zstd) echo "/cmp/x zstd" ;;
    none) echo "/cmp/x identity" ;;  # the policy on, the client takes none of its encodings
    *) die "unknown case $1" ;;
    esac
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK=$(getconf CLK_TCK)

run_case() {  # CASE -> "REQ_PER_S US_PER_REQUEST"
    local path accept before after count
    read -r path accept <<<"$(case_args "$1")"
    before=$(cpu_ticks)
    taskset -c "$LOAD_CPU" hey -z "${DURATION}s" -c "$CONNECTIONS" -H "Accept-Encoding: $accept" \
        "http://127.0.0.1:$PORT$path" >"$WORK/hey.txt" 2>&1
    after=$(cpu_ticks)
    count=$(awk '/\[200\]/ {print $2}' "$WORK/hey.txt")
    [[ -n $count ]] || die "no 200 answers for $1 (see $WORK/hey.txt)"
    awk -v n="$count" -v t="$((after - before))" -v hz="$TICK" -v d="$DURATION" \
        'BEGIN {printf "%.0f %.1f\n", n / d, t / hz * 1e6 / n}'
}

# Warm up every case, then ROUNDS rounds of all cases (interleaved: drift hits all alike).
for c in $CASES; do
    DURATION=1 run_case "$c" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
    for c in $CASES; do
        echo "$c $(run_case "$c")" >>"$WORK/runs.txt"
        log "round $round $c: $(tail -1 "$WORK/runs.txt")"
    done
done
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
{
    echo "compress policy, $(date -u '+%Y-%m-%d %H:%M UTC'): 4,055-byte JSON answer, $ROUNDS x ${DURATION}s per case,"
    echo "$CONNECTIONS connections, one worker; medians. $POTOK_SOURCE."
    echo
    echo "| case | req/s | Potok CPU µs per request | over plain |"
    echo "|:---|---:|---:|---:|"
    plain=$(awk '$1 == "plain" {print $3}' "$WORK/runs.txt" | median)
    for c in $CASES; do
        rps=$(awk -v c="$c" '$1 == c {print $2}' "$WORK/runs.txt" | median)
        us=$(awk -v c="$c" '$1 == c {print $3}' "$WORK/runs.txt" | median)
        echo "| $c | $rps | $us | $(awk -v u="$us" -v p="$plain" 'BEGIN {printf "%+.1f", u - p}') |"
    done
} | tee "$RESULTS/compress-latest.md"
