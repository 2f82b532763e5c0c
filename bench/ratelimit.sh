#!/usr/bin/env bash
# Rate-limit cost on the hot path, in one run: an open route vs the same route behind
# a memory rate limit and behind a Redis rate limit (sliding window and token bucket),
# all served by one Potok process against one nginx upstream. The limits are far above
# the load, so every request is admitted: this measures the check, not the refusals.
#
#     bench/ratelimit.sh             # 3 rounds of 10 s per route and load (~6 min)
#     QUICK=1 bench/ratelimit.sh     # 1 round of 3 s (smoke test)
#     POTOK_REF=HEAD~1 bench/ratelimit.sh   # a commit's src/ instead of the working tree
#     PROFILE=1 bench/ratelimit.sh   # then py-spy each route for 8 s under wrk -c50 (root)
#     PROFILE=1 NATIVE=1 ...         # the same with C frames (uvloop, hiredis, libc)
#     ROUTES="open redis" bench/ratelimit.sh
#     RESTART=0 bench/ratelimit.sh   # one Potok process for all rounds (default: one per round)
#
# Redis: a redis-server of the benchmark's own (port RL_REDIS_PORT, no persistence),
# pinned to REDIS_CPU (default: the upstream's core, 1). The machine's shared Redis on
# 6379 is not pinned, so it would run on the proxy's core 0 half of the time and take
# CPU from the process under test; in production Redis is on another machine. With
# REDIS_URL set, that Redis is used instead and nothing is started. Layout as
# bench/proxy.sh: Potok on core 0; upstream nginx, Redis and the load generators on
# core 1. Per round every route runs back to back under `wrk -c50` (max throughput,
# and Potok's CPU seconds per request from /proc) and `hey` at a fixed 2,000 req/s
# (latency at a steady rate), so drift of the machine hits all routes alike.
# Raw outputs: bench/results/ratelimit-raw-latest/; table: stdout and
# bench/results/ratelimit-latest.md (profiles: bench/results/ratelimit-profile-*).
set -euo pipefail
# Own work dir and ports, so this can start while other benchmarks' are in use.
WORK=${WORK:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.work/ratelimit}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
UPSTREAM_PORT=${RL_UPSTREAM_PORT:-18281}
RL_PORT=${RL_PORT:-18097}
REDIS_PORT=${RL_REDIS_PORT:-18379}
REDIS_CPU=${REDIS_CPU:-$UPSTREAM_CPU}
OWN_REDIS=0
if [[ -z ${REDIS_URL:-} ]]; then
    OWN_REDIS=1
    REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
fi

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=1
    DURATION=3
fi
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
RAW=$RESULTS/ratelimit-raw-latest
PREFIX="bench-rl-$$:"
ROUTES=${ROUTES:-"open memory memory-tb redis redis-tb"}

redis_cleanup() {
    "$PYTHON" - "$REDIS_URL" "$PREFIX" <<'PY' || true
import sys, redis
client = redis.Redis.from_url(sys.argv[1])
for key in client.scan_iter(match=sys.argv[2] + "*", count=1000):
    client.delete(key)
PY
}
trap 'cleanup; ((OWN_REDIS)) || redis_cleanup' EXIT
ensure_tools
mkdir -p "$WORK/potok" "$WORK/upstream"
rm -rf "$RAW"
mkdir -p "$RAW"
prepare_potok
if ((OWN_REDIS)); then
    check_port_free "$REDIS_PORT"
    mkdir -p "$WORK/redis"
    spawn_bg "$WORK/redis/stdout.log" taskset -c "$REDIS_CPU" redis-server --bind 127.0.0.1 \
        --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK/redis"
    for _ in $(seq 1 50); do
        "$PYTHON" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()" "$REDIS_URL" \
            2>/dev/null && break
        sleep 0.1
    done
    log "redis-server (pid $LAST_PID, core $REDIS_CPU) on 127.0.0.1:$REDIS_PORT"
fi
"$PYTHON" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()" "$REDIS_URL" \
    || die "no Redis answering at $REDIS_URL"

"$PYTHON" - "$WORK/potok/potok.yaml" "$RL_PORT" "$UPSTREAM_PORT" "$REDIS_URL" "$PREFIX" <<'PY'
import sys
from pathlib import Path
import yaml

path, port, upstream, redis_url, prefix = sys.argv[1:]
# Far above what one core can serve: nothing is ever refused.
sliding = {"limit": 10000, "window": "250ms"}  # 40,000 req/s
bucket = {"limit": 1000000, "window": "1s", "algorithm": "token_bucket"}
def route(name, policy=None):
    entry = {"name": name, "match": {"prefix": f"/{name}"}, "service": "bench"}
    if policy is not None:
        entry["policies"] = {"rate_limit": policy}
    return entry
config = {
    "server": {"host": "127.0.0.1", "port": int(port), "timeouts": {"shutdown_grace": "2s"}},
    "logging": {"level": "warning", "access_log": {"enabled": False}},
    "metrics": {"enabled": False},
    "redis": {"url": redis_url, "key_prefix": prefix},
    "services": {"bench": {"targets": [f"http://127.0.0.1:{upstream}"]}},
    "routes": [
        route("memory", sliding),
        route("memory-tb", bucket),
        route("redis", {**sliding, "store": "redis"}),
        route("redis-tb", {**bucket, "store": "redis"}),
        # Not in the default ROUTES: the check without the two response headers.
        route("memory-noheaders", {**sliding, "headers": False}),
        route("redis-noheaders", {**sliding, "store": "redis", "headers": False}),
        route("open"),
        {"name": "root", "match": {"prefix": "/"}, "service": "bench"},
    ],
}
Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
PY
"$POTOK" check --config "$WORK/potok/potok.yaml" >/dev/null || die "potok rejects the bench config"

start_upstream
check_port_free "$RL_PORT"
base="http://127.0.0.1:$RL_PORT"
PID=
# A fresh Potok per round (RESTART=0: one for the whole run). Where a process's objects
# land in memory moves its speed by ±1-2 µs per request, route by route and for the
# whole life of the process (a no-op policy measured +1.4 µs in one process, -0.3 µs
# in another): rounds in fresh processes average that out instead of repeating it.
start_round_potok() {
    if [[ -n $PID ]]; then
        stop_pid "$PID"
    fi
    start_potok "$WORK/potok/potok.yaml" "$PROXY_CPU" "$WORK/potok/stdout.log"
    PID=$LAST_PID
    wait_http "$RL_PORT" "$PID" || die "potok did not start (see $WORK/potok/stdout.log)"
    log "potok (pid $PID, core $PROXY_CPU) on 127.0.0.1:$RL_PORT; warm-up ${WARMUP}s per route"
    local name headers
    for name in $ROUTES; do
        headers=$(curl -s -D - -o /dev/null "$base/$name/x")
        [[ $headers == *" 200 "* ]] || die "GET /$name/x did not answer 200"
        if [[ $name != open && $name != *-noheaders && $headers != *RateLimit-Policy* ]]; then
            die "GET /$name/x carries no RateLimit-Policy: is the limit configured?"
        fi
    done
    for name in $ROUTES; do
        taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" "$base/$name/x" >/dev/null 2>&1 || true
    done
}
start_round_potok
# Other sessions may run test suites on this 2-core machine. With bench/cpuwatch.py
# present: before each run wait (at most QUIET_WAIT s) until processes outside this
# benchmark use under QUIET_THRESHOLD % CPU, record what they used during the run, and
# redo a disturbed run up to RETRIES times (its share is in the table either way).
QUIET_THRESHOLD=${QUIET_THRESHOLD:-10}
QUIET_WAIT=${QUIET_WAIT:-30}
RETRIES=${RETRIES:-2}
CPUWATCH=$BENCH_DIR/cpuwatch.py

# EVALSHA calls Redis has answered so far (the benchmark's own Redis: nothing else uses it).
evalsha_calls() {
    ((OWN_REDIS)) || { echo 0; return; }
    redis-cli -p "$REDIS_PORT" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}

# Busy share of one core from two /proc/stat lines: "cpuN user nice system idle iowait ...".
core_ticks() { grep "^cpu$1 " /proc/stat; }
core_busy() {  # BEFORE AFTER -> percent
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); total = 0
        for (i = 2; i <= n; i++) total += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f\n", total ? 100 * (total - idle) / total : 0 }'
}

load_once() {  # KIND NAME OUT
    local calls_before load_before
    calls_before=$(evalsha_calls)
    load_before=$(core_ticks "$LOAD_CPU")
    case $1 in
        wrk50)
            "$PYTHON" "$CPUWATCH" snapshot $$ --proc "$PID" >"$WORK/proc.before"
            taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "$base/$2/x" >"$3" 2>&1 || true
            "$PYTHON" "$CPUWATCH" snapshot $$ --proc "$PID" >"$WORK/proc.after"
            "$PYTHON" "$CPUWATCH" proc-seconds "$WORK/proc.before" "$WORK/proc.after" >"${3%.txt}.cpu"
            ;;
        hey2k) taskset -c "$LOAD_CPU" hey -z "${DURATION}s" -c 10 -q 200 "$base/$2/x" >"$3" 2>&1 || true ;;
    esac
    echo $(($(evalsha_calls) - calls_before)) >"${3%.txt}.evalsha"
    core_busy "$load_before" "$(core_ticks "$LOAD_CPU")" >"${3%.txt}.loadcore"
}

measure() {  # KIND NAME ROUND
    local kind=$1 name=$2 round=$3 out=$RAW/$2.$1.$3.txt attempt foreign
    for attempt in $(seq 1 $((RETRIES + 1))); do
        "$PYTHON" "$CPUWATCH" quiet $$ --threshold "$QUIET_THRESHOLD" --max-wait "$QUIET_WAIT" >/dev/null
        "$PYTHON" "$CPUWATCH" snapshot $$ >"$WORK/cpu.before"
        load_once "$kind" "$name" "$out"
        "$PYTHON" "$CPUWATCH" snapshot $$ >"$WORK/cpu.after"
        foreign=$("$PYTHON" "$CPUWATCH" foreign "$WORK/cpu.before" "$WORK/cpu.after")
        echo "$foreign" >"${out%.txt}.foreign"
        if awk -v a="$foreign" -v b="$QUIET_THRESHOLD" 'BEGIN { exit !(a < b) }'; then
            return
        fi
        log "$name $kind round $round: other processes used $foreign % CPU (attempt $attempt)"
    done
}

for round in $(seq 1 "$ROUNDS"); do
    if [[ ${RESTART:-1} == 1 && $round -gt 1 ]]; then
        start_round_potok
    fi
    for name in $ROUTES; do
        log "round $round/$ROUNDS $name: wrk -c50 ${DURATION}s, then hey 2,000 req/s ${DURATION}s"
        measure wrk50 "$name" "$round"
        measure hey2k "$name" "$round"
    done
done
kill -0 "$PID" 2>/dev/null || die "potok exited during the benchmark"

# PROFILE=1: where a route's CPU goes, py-spy at 200 Hz for 8 s under wrk -c50 per route.
if [[ ${PROFILE:-0} == 1 ]]; then
    [[ $(id -u) == 0 ]] || die "py-spy needs root to attach to a process"
    for name in $ROUTES; do
        prof=$RESULTS/ratelimit-profile-$name
        log "profiling $name: py-spy 8 s under wrk -c50"
        "$PYTHON" "$CPUWATCH" quiet $$ --threshold "$QUIET_THRESHOLD" --max-wait "$QUIET_WAIT" >/dev/null
        taskset -c "$LOAD_CPU" wrk -t1 -c50 -d9s "$base/$name/x" >"$prof.wrk.txt" 2>&1 &
        wrk_pid=$!
        sleep 0.5
        "$VENV/bin/py-spy" record --pid "$PID" --rate 200 --duration 8 --format raw \
            ${NATIVE:+--native} --output "$prof.collapsed.txt" >"$prof.pyspy.log" 2>&1 || die "py-spy failed (see $prof.pyspy.log)"
        wait "$wrk_pid" || true
        "$PYTHON" "$BENCH_DIR/stacks.py" "$prof.collapsed.txt" --top 25 --markdown "$prof.md" >/dev/null
    done
fi

cat >"$RAW/meta.env" <<EOF
ROUNDS=$ROUNDS
DURATION=$DURATION
WARMUP=$WARMUP
QUICK=${QUICK:-0}
PROXY_CPU=$PROXY_CPU
LOAD_CPU=$LOAD_CPU
UPSTREAM_CPU=$UPSTREAM_CPU
ROUTES=$ROUTES
REDIS_CPU=$REDIS_CPU
OWN_REDIS=$OWN_REDIS
POTOK_SOURCE=$POTOK_SOURCE
PROFILE=${PROFILE:-0}
RESTART=${RESTART:-1}
EOF
"$PYTHON" "$BENCH_DIR/ratelimit_report.py" --raw "$RAW" --out "$RESULTS/ratelimit-latest.md"
