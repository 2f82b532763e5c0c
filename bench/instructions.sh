#!/usr/bin/env bash
# User-space instructions per request, route by route, counted by valgrind's callgrind:
# a measure that does not move with the machine's noise, for A/B work on the hot path.
#
#     bench/instructions.sh                  # the routes below, 4,000 requests each (~6 min)
#     ROUTES="open memory open memory" bench/instructions.sh
#     REQUESTS=2000 bench/instructions.sh
#     POTOK_SRC=/path/to/src bench/instructions.sh   # another checkout's src/
#     LOGGED=1 bench/instructions.sh         # access log (to a file) and metrics on
#     TRACING_RATIO=0.01 bench/instructions.sh   # tracing on, 1 % sampled (bench/otlp_sink.py)
#     CACHE_SIM=1 bench/instructions.sh      # also L1/last-level misses per request (slower)
#
# Wall-clock benchmarks on this 2-core VM (bench/jwt.sh, bench/ratelimit.sh) move by
# ±2-5 % between runs, as much as the changes they are meant to judge. Instructions
# executed barely move: the same route measured twice in one run agrees to ~0.3 %.
# What they miss is how long each instruction takes (cache misses, branch
# mispredictions) and the kernel's share, so a change is judged here and confirmed by
# the wall-clock benchmarks. Counted: the Potok process only (Python, uvloop, C
# extensions, libc), not the kernel and not the upstream. Potok runs under callgrind
# (~50x slower); every route is warmed up first; then per route the counters are
# zeroed, `hey` sends exactly REQUESTS requests over CONNECTIONS keep-alive
# connections (all must answer 200), and the counters are dumped. The routes are those
# of bench/jwt.sh and bench/ratelimit.sh (same keys, limits, upstream), with prefixes
# of one length so that only their policies differ. Table: stdout and
# bench/results/instructions-latest.md; dumps (callgrind_annotate) in $WORK.
set -euo pipefail
WORK=${WORK:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.work/instructions}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
UPSTREAM_PORT=${INSTR_UPSTREAM_PORT:-18381}
PORT=${INSTR_PORT:-18098}
REDIS_PORT=${INSTR_REDIS_PORT:-18479}
REQUESTS=${REQUESTS:-4000}  # per route (~250 requests a second under callgrind)
WARMUP_REQUESTS=${WARMUP_REQUESTS:-500}
CONNECTIONS=${CONNECTIONS:-50}
ROUTES=${ROUTES:-open memory memory_bucket redis redis_bucket open_hs_token hs256 open_rs_token rs256 open}
if [[ -n ${POTOK_SRC:-} ]]; then
    export PYTHONPATH="$POTOK_SRC${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"
command -v callgrind_control >/dev/null || die "callgrind_control is needed (valgrind package)"

trap cleanup EXIT
ensure_tools
rm -rf "$WORK"
mkdir -p "$WORK/upstream" "$WORK/redis"

if [[ -n ${TRACING_RATIO:-} ]]; then
    SINK_PORT=${INSTR_SINK_PORT:-18482}
    export TRACING_RATIO TRACING_ENDPOINT="http://127.0.0.1:$SINK_PORT/v1/traces"
    spawn_bg "$WORK/otlp-sink.log" taskset -c "$UPSTREAM_CPU" "$PYTHON" "$BENCH_DIR/otlp_sink.py" \
        "$SINK_PORT" "$WORK/otlp-spans.txt"
fi
"$PYTHON" "$BENCH_DIR/instructions_config.py" "$WORK" "$PORT" "$UPSTREAM_PORT" "$REDIS_PORT"
"$POTOK" check --config "$WORK/potok.yaml" >/dev/null || die "potok rejects the config"

start_upstream
spawn_bg "$WORK/redis/stdout.log" taskset -c "$UPSTREAM_CPU" redis-server --port "$REDIS_PORT" \
    --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis"
wait_port_open() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_port_open "$REDIS_PORT" || die "redis did not start"

check_port_free "$PORT"
# One interpreter, not the console script's wrapper: callgrind follows one process.
# CACHE_SIM=1: callgrind simulates the caches too (its default geometry, the same on
# every run), so a change's L1 misses can be told apart per function in the dumps.
cache_sim=no
[[ ${CACHE_SIM:-0} == 1 ]] && cache_sim=yes
spawn_bg "$WORK/potok.log" taskset -c "$PROXY_CPU" valgrind --tool=callgrind --cache-sim="$cache_sim" \
    --callgrind-out-file="$WORK/callgrind.out.%p" --dump-line=no --compress-strings=no \
    "$PYTHON" -m potok run --config "$WORK/potok.yaml"
PID=$LAST_PID
# Start-up under callgrind takes ~1 min on a quiet machine, several on a busy one.
started=
for _ in $(seq 1 $((2 * ${START_WAIT:-900}))); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/opn/x" && started=1 && break
    kill -0 "$PID" 2>/dev/null || die "potok under valgrind exited (see $WORK/potok.log)"
    sleep 0.5
done
[[ -n $started ]] || die "potok under valgrind did not answer within ${START_WAIT:-900} s"
log "potok under callgrind (pid $PID) on 127.0.0.1:$PORT"

token() { cat "$WORK/$1.token"; }
request_of() {  # ROUTE -> "PATH|TOKEN"
    case $1 in
    open) echo "/opn/x|" ;;
    open_hs_token) echo "/opn/x|$(token hs)" ;;
    hs256) echo "/hs2/x|$(token hs)" ;;
    hs256_sealed) echo "/hsf/x|$(token hs)" ;;
    open_rs_token) echo "/opn/x|$(token rs)" ;;
    rs256) echo "/rs2/x|$(token rs)" ;;
    memory) echo "/mem/x|" ;;
    memory_noheaders) echo "/mnh/x|" ;;
    memory_bucket) echo "/mtb/x|" ;;
    redis) echo "/red/x|" ;;
    redis_bucket) echo "/rtb/x|" ;;
    json4k) echo "/j4k/x|" ;;  # 4 KiB of JSON, as it is
    compress) echo "/cmp/x|" ;;  # the same, gzip (hey's own Accept-Encoding)
    compress_zstd) echo "/cmp/x||zstd" ;;
    compress_br) echo "/cmp/x||br" ;;
    weighted) echo "/wgt/x|" ;;  # 90/10 between two services (bench/traffic.sh)
    mirrored) echo "/mir/x|" ;;  # copied at 100 % to a second service on the same upstream
    aggregate) echo "/agg/x|" ;;  # three calls to the upstream in parallel, one JSON answer
    *) die "unknown route $1" ;;
    esac
}
send() {  # COUNT PATH TOKEN [ACCEPT-ENCODING]: exactly COUNT requests, every answer a 200
    local header=()
    [[ -z $3 ]] || header=(-H "Authorization: Bearer $3")
    [[ -z ${4:-} ]] || header+=(-H "Accept-Encoding: $4")
    hey -n "$1" -c "$CONNECTIONS" -t 120 "${header[@]}" "http://127.0.0.1:$PORT$2" >"$WORK/hey.txt" 2>&1
    # The status lines read `  [200]\t4000 responses`.
    grep -qE "^\s*\[200\]\s+$1 responses" "$WORK/hey.txt" ||
        die "not $1 answers of 200 for $2 (see $WORK/hey.txt)"
}
newest_dump() { ls -t "$WORK"/callgrind.out.* | head -1; }
total_ir() {  # the `totals:` line of the newest dump
    awk '/^totals:/ {print $2}' "$(newest_dump)"
}
l1_misses() {  # CACHE_SIM=1: "instruction data" L1 misses (I1mr; D1mr + D1mw) of the newest dump
    awk '/^events:/ {for (i = 2; i <= NF; i++) at[$i] = i}
        /^totals:/ {print $(at["I1mr"]), $(at["D1mr"]) + $(at["D1mw"])}' "$(newest_dump)"
}

printf '| Route | instructions per request | vs the open route before it | extra work |\n|:---|---:|---:|---:|\n' >"$WORK/table.md"
open_ir=
# Every route warmed up before any is measured: the first route measured right after
# start-up otherwise counts several thousand instructions per request more than later.
for route in $ROUTES; do
    IFS='|' read -r path tok enc <<<"$(request_of "$route")"
    send "$WARMUP_REQUESTS" "$path" "$tok" "$enc"
done
# And the first counted run is thrown away: the first dump after start-up runs ~5 %
# high whatever the route (misses in CPython's method cache; cause not found).
first=${ROUTES%% *}
IFS='|' read -r path tok enc <<<"$(request_of "$first")"
callgrind_control --zero "$PID" >/dev/null
send "$REQUESTS" "$path" "$tok" "$enc"
callgrind_control --dump=discarded "$PID" >/dev/null
for route in $ROUTES; do
    IFS='|' read -r path tok enc <<<"$(request_of "$route")"
    callgrind_control --zero "$PID" >/dev/null
    count=$REQUESTS
    send "$REQUESTS" "$path" "$tok" "$enc"
    callgrind_control --dump="$route" "$PID" >/dev/null
    per=$(($(total_ir) / count))
    misses=
    if [[ $cache_sim == yes ]]; then
        read -r i1 d1 <<<"$(l1_misses)"
        misses=" (L1 misses per request: instruction $((i1 / count)), data $((d1 / count)))"
    fi
    echo "$route $count $(newest_dump)" >>"$WORK/dumps.txt"
    [[ $route == open ]] && open_ir=$per
    delta= share=
    if [[ -n $open_ir ]]; then
        delta=$(printf '%+d' $((per - open_ir)))
        share=$(awk -v d=$((per - open_ir)) -v o="$open_ir" 'BEGIN {printf "%+.1f %%", 100 * d / o}')
    fi
    printf '| %s | %s | %s | %s |\n' "$route" "$per" "$delta" "$share" >>"$WORK/table.md"
    log "$route: $per instructions per request ${delta:+($delta vs open)}$misses"
done
mkdir -p "$RESULTS"
{
    logged=off
    [[ ${LOGGED:-0} == 1 ]] && logged="on (LOGGED=1)"
    echo "Instructions per request (callgrind), $(date -u '+%Y-%m-%d %H:%M UTC'), $REQUESTS requests per route,"
    echo "access log to a file and metrics: $logged, tracing: ${TRACING_RATIO:-off},"
    echo "$CONNECTIONS connections; $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $("$PYTHON" -V)."
    echo
    cat "$WORK/table.md"
} | tee "$RESULTS/instructions-latest.md"
