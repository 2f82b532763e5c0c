#!/usr/bin/env bash
# Reverse-proxy comparison on loopback: nginx vs Caddy vs Potok (three ways),
# against the same fast nginx upstream. One command:
#
#     bench/proxy.sh                 # 3 rounds of 10 s per measurement (~10 min)
#     QUICK=1 bench/proxy.sh         # 1 round of 3 s (smoke test, ~2 min)
#     ROUNDS=5 bench/proxy.sh        # more rounds (medians are reported)
#     TARGETS="nginx potok" bench/proxy.sh   # a subset
#     POTOK_REF=HEAD bench/proxy.sh  # measure a commit's src/, not the working tree
#     TRACING=1 bench/proxy.sh       # tracing off / 1 % / 100 % sampled, beside nginx
#
# Layout (2-core machine): the proxy under test runs on core 0; the upstream
# nginx and the load generators (wrk, hey) share core 1. "Potok --workers 2"
# is pinned to cores 0-1, so it competes with the upstream and wrk for core 1.
#
# Per target: 2 s warm-up, then ROUNDS x {wrk -c50, wrk -c10, hey at a fixed
# 2,000 req/s}; the CPU time of the server's process tree is recorded too
# (CPU us per request). Raw outputs go to bench/results/raw-latest/, the table
# to stdout and bench/results/proxy-latest.md.
#
# On a shared machine: runs are redone when other processes used the CPUs
# meanwhile (QUIET_THRESHOLD, QUIET_WAIT, RETRIES, NOISE_BUDGET below), and
# lib.sh holds a lock so two bench scripts never run at once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=1
    DURATION=3
fi
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
if [[ ${TRACING:-0} == 1 ]]; then
    TARGETS=${TARGETS:-"direct nginx potok potok-traced1 potok-traced100"}
fi
TARGETS=${TARGETS:-"direct nginx caddy potok potok-logged potok-w2"}
W2_CPUS=${W2_CPUS:-0-1}
# Other sessions may run test suites on this machine. Before each run, wait
# (at most QUIET_WAIT s) until processes outside this benchmark use less than
# QUIET_THRESHOLD % of the CPUs; record how much they used during the run and
# redo a disturbed run up to RETRIES times. All this waiting and redoing is
# capped at NOISE_BUDGET s for the whole benchmark.
QUIET_THRESHOLD=${QUIET_THRESHOLD:-10}
QUIET_WAIT=${QUIET_WAIT:-20}
RETRIES=${RETRIES:-2}
NOISE_BUDGET=${NOISE_BUDGET:-600}
NOISE_SPENT=0

NGINX_PORT=${NGINX_PORT:-18082}
CADDY_PORT=${CADDY_PORT:-18083}
POTOK_PORT=${POTOK_PORT:-18090}
POTOK_LOGGED_PORT=${POTOK_LOGGED_PORT:-18091}
POTOK_W2_PORT=${POTOK_W2_PORT:-18092}
POTOK_TRACED_PORT=${POTOK_TRACED_PORT:-18093}
OTLP_SINK_PORT=${OTLP_SINK_PORT:-18094}

RAW=$RESULTS/raw-latest

# ---------------------------------------------------------------- proxies --
# Each start_* function starts one proxy on core $PROXY_CPU and sets PORT/PID.

start_direct() {
    PORT=$UPSTREAM_PORT
    PID=$UPSTREAM_PID
}

start_nginx_proxy() {
    local dir=$WORK/nginx-proxy
    mkdir -p "$dir/tmp"
    check_port_free "$NGINX_PORT"
    {
        _nginx_head "$dir"
        echo "http {"
        _nginx_http_common "$dir"
        cat <<EOF
    upstream bench {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    start_nginx nginx-proxy "$PROXY_CPU"
    PORT=$NGINX_PORT
    PID=$LAST_PID
}

start_caddy() {
    local dir=$WORK/caddy
    mkdir -p "$dir"
    check_port_free "$CADDY_PORT"
    cat >"$dir/Caddyfile" <<EOF
{
	admin off
	auto_https off
	log {
		output file $dir/caddy.log
		level ERROR
	}
}

http://127.0.0.1:$CADDY_PORT {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$UPSTREAM_PORT
}
EOF
    # HOME/XDG_* point into the work dir so Caddy writes nothing elsewhere.
    HOME=$dir XDG_DATA_HOME=$dir/data XDG_CONFIG_HOME=$dir/config GOMAXPROCS=1 \
        spawn_bg "$dir/stdout.log" taskset -c "$PROXY_CPU" caddy run --config "$dir/Caddyfile" --adapter caddyfile
    PID=$LAST_PID
    PORT=$CADDY_PORT
}

start_potok_bare() {
    local dir=$WORK/potok
    mkdir -p "$dir"
    check_port_free "$POTOK_PORT"
    write_potok_config "$dir/potok.yaml" "$POTOK_PORT" false false
    start_potok "$dir/potok.yaml" "$PROXY_CPU" "$dir/stdout.log"
    PORT=$POTOK_PORT
    PID=$LAST_PID
}

start_potok_logged() {
    local dir=$WORK/potok-logged
    mkdir -p "$dir"
    check_port_free "$POTOK_LOGGED_PORT"
    write_potok_config "$dir/potok.yaml" "$POTOK_LOGGED_PORT" true true "$dir/access.log"
    start_potok "$dir/potok.yaml" "$PROXY_CPU" "$dir/stdout.log"
    PORT=$POTOK_LOGGED_PORT
    PID=$LAST_PID
}

start_potok_w2() {
    local dir=$WORK/potok-w2
    mkdir -p "$dir"
    check_port_free "$POTOK_W2_PORT"
    write_potok_config "$dir/potok.yaml" "$POTOK_W2_PORT" false false
    start_potok "$dir/potok.yaml" "$W2_CPUS" "$dir/stdout.log" --workers 2
    PORT=$POTOK_W2_PORT
    PID=$LAST_PID
}

# potok-traced1 / potok-traced100: the bare config plus tracing at 1 % / 100 %, spans
# exported to bench/otlp_sink.py (on the load generator's core, as a collector would
# be elsewhere); the exporter runs on the Potok process's loop and is measured.
start_potok_traced() {
    local name=$1 ratio=$2
    local dir=$WORK/$name
    mkdir -p "$dir"
    check_port_free "$POTOK_TRACED_PORT"
    if [[ -z ${OTLP_SINK_PID:-} ]]; then
        check_port_free "$OTLP_SINK_PORT"
        spawn_bg "$WORK/otlp-sink.log" taskset -c "$LOAD_CPU" "$PYTHON" "$BENCH_DIR/otlp_sink.py" \
            "$OTLP_SINK_PORT" "$WORK/otlp-spans.txt"
        OTLP_SINK_PID=$LAST_PID
    fi
    write_potok_config "$dir/potok.yaml" "$POTOK_TRACED_PORT" false false
    cat >>"$dir/potok.yaml" <<EOF
tracing:
  enabled: true
  sample_ratio: $ratio
  endpoint: http://127.0.0.1:$OTLP_SINK_PORT/v1/traces
EOF
    "$POTOK" check --config "$dir/potok.yaml" >/dev/null || die "potok rejects $dir/potok.yaml"
    start_potok "$dir/potok.yaml" "$PROXY_CPU" "$dir/stdout.log"
    PORT=$POTOK_TRACED_PORT
    PID=$LAST_PID
}

# ------------------------------------------------------------ measurement --

# One bounded load run of KIND against $PORT, output to FILE.
load_once() {
    local kind=$1 out=$2
    local url="http://127.0.0.1:$PORT/"
    case $kind in
        wrk50) taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "$url" >"$out" 2>&1 || true ;;
        wrk10) taskset -c "$LOAD_CPU" wrk -t1 -c10 -d"${DURATION}s" --latency "$url" >"$out" 2>&1 || true ;;
        # 10 workers x 200 req/s each = a fixed 2,000 req/s.
        hey2k) taskset -c "$LOAD_CPU" hey -z "${DURATION}s" -c 10 -q 200 "$url" >"$out" 2>&1 || true ;;
    esac
}

# run_load NAME KIND ROUND: wait for a quiet machine, run, and if processes
# outside the benchmark used >= QUIET_THRESHOLD % CPU meanwhile, run again
# (at most RETRIES times, within NOISE_BUDGET s of extra time for the whole
# benchmark). The last attempt is kept; retries are listed in NAME.retries.
run_load() {
    local name=$1 kind=$2 round=$3
    local out=$RAW/$name.$kind.$round.txt attempt foreign t0
    for attempt in $(seq 1 $((RETRIES + 1))); do
        if ((NOISE_SPENT < NOISE_BUDGET)); then
            t0=$SECONDS
            foreign=$("$PYTHON" "$BENCH_DIR/cpuwatch.py" quiet $$ --threshold "$QUIET_THRESHOLD" --max-wait "$QUIET_WAIT")
            # The check itself samples for 1 s; only waiting beyond that counts.
            if ((SECONDS - t0 > 1)); then NOISE_SPENT=$((NOISE_SPENT + SECONDS - t0 - 1)); fi
            ((SECONDS - t0 <= 2)) || log "$name: waited $((SECONDS - t0)) s for other processes to calm down (now $foreign % CPU)"
        fi
        t0=$SECONDS
        "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ --proc "$PID" >"$WORK/cpu.before"
        load_once "$kind" "$out"
        "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ --proc "$PID" >"$WORK/cpu.after"
        foreign=$("$PYTHON" "$BENCH_DIR/cpuwatch.py" foreign "$WORK/cpu.before" "$WORK/cpu.after")
        echo "$foreign" >"${out%.txt}.foreign"
        # CPU seconds the server under test (its whole process tree) used in this run.
        "$PYTHON" "$BENCH_DIR/cpuwatch.py" proc-seconds "$WORK/cpu.before" "$WORK/cpu.after" >"${out%.txt}.cpu"
        ((attempt == 1)) || NOISE_SPENT=$((NOISE_SPENT + SECONDS - t0))
        if awk -v a="$foreign" -v b="$QUIET_THRESHOLD" 'BEGIN { exit !(a < b) }'; then
            return 0
        fi
        echo "$kind round $round attempt $attempt: other processes used $foreign % CPU" >>"$RAW/$name.retries"
        if ((attempt > RETRIES || NOISE_SPENT >= NOISE_BUDGET)); then
            log "$name: $kind round $round disturbed ($foreign % CPU used by others); keeping it"
            return 0
        fi
        log "$name: $kind round $round disturbed ($foreign % CPU used by others); running it again"
    done
}

measure() {
    local name=$1 round kind
    log "$name: warm-up ${WARMUP}s on 127.0.0.1:$PORT"
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" "http://127.0.0.1:$PORT/" >"$RAW/$name.warmup.txt" 2>&1 || true
    for round in $(seq 1 "$ROUNDS"); do
        for kind in wrk50 wrk10 hey2k; do
            log "$name: round $round/$ROUNDS $kind (${DURATION}s)"
            run_load "$name" "$kind" "$round"
            if ! kill -0 "$PID" 2>/dev/null; then
                echo "process exited during round $round ($kind)" >>"$RAW/$name.status"
                log "$name: PROCESS EXITED during round $round ($kind)"
                return 0
            fi
        done
    done
}

# Sanity checks after the run, recorded next to the raw outputs.
post_checks() {
    local name=$1
    local notes=$RAW/$name.notes
    case $name in
        potok-logged)
            local lines
            lines=$(wc -l <"$WORK/potok-logged/access.log" 2>/dev/null || echo 0)
            echo "access log lines written: $lines" >>"$notes"
            # Hundreds of MB after a full run; keep only a sample.
            if [[ -f $WORK/potok-logged/access.log ]]; then
                tail -n 1000 "$WORK/potok-logged/access.log" >"$WORK/potok-logged/access.tail.log"
                rm -f "$WORK/potok-logged/access.log"
            fi
            echo "GET /api/v1/metrics -> $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/api/v1/metrics" || echo none)" >>"$notes"
            ;;
        potok-traced1 | potok-traced100)
            echo "what the collector received so far: $(cat "$WORK/otlp-spans.txt" 2>/dev/null || echo nothing)" >>"$notes"
            ;;
        potok-w2)
            echo "child processes of the supervisor (pid $PID):" >>"$notes"
            ps -o pid=,psr=,args= --ppid "$PID" >>"$notes" || true
            ;;
    esac
    # Anything a proxy wrote to its own error output during the run.
    local dir
    case $name in
        nginx) dir=$WORK/nginx-proxy ;;
        direct) dir=$WORK/upstream ;;
        *) dir=$WORK/$name ;;
    esac
    local f
    for f in "$dir/stdout.log" "$dir/error.log" "$dir/caddy.log"; do
        # Caddy's start-up chatter is at level "info"; keep everything else.
        if [[ -s $f ]] && grep -qv '"level":"info"' "$f"; then
            echo "--- $(basename "$f") (last 20 lines)" >>"$notes"
            grep -v '"level":"info"' "$f" | tail -n 20 >>"$notes"
        fi
    done
}

# ------------------------------------------------------------------- main --

trap cleanup EXIT
ensure_tools
rm -rf "$WORK" "$RAW"
mkdir -p "$WORK" "$RAW"

cat >"$RAW/meta.env" <<EOF
ROUNDS=$ROUNDS
DURATION=$DURATION
WARMUP=$WARMUP
QUICK=${QUICK:-0}
PROXY_CPU=$PROXY_CPU
LOAD_CPU=$LOAD_CPU
UPSTREAM_CPU=$UPSTREAM_CPU
W2_CPUS=$W2_CPUS
QUIET_THRESHOLD=$QUIET_THRESHOLD
QUIET_WAIT=$QUIET_WAIT
RETRIES=$RETRIES
NOISE_BUDGET=$NOISE_BUDGET
TARGETS=$TARGETS
EOF

prepare_potok
echo "POTOK_SOURCE=$POTOK_SOURCE" >>"$RAW/meta.env"
start_upstream

for target in $TARGETS; do
    case $target in
        direct) start_direct ;;
        nginx) start_nginx_proxy ;;
        caddy) start_caddy ;;
        potok) start_potok_bare ;;
        potok-logged) start_potok_logged ;;
        potok-w2) start_potok_w2 ;;
        potok-traced1) start_potok_traced potok-traced1 0.01 ;;
        potok-traced100) start_potok_traced potok-traced100 1.0 ;;
        *) die "unknown target $target" ;;
    esac
    if ! wait_http "$PORT" "$PID"; then
        # Record it and go on with the other proxies.
        echo "did not start (see the notes for its output)" >"$RAW/$target.status"
        log "$target: DID NOT START; skipping it"
    else
        log "$target: pid $PID listening on 127.0.0.1:$PORT"
        measure "$target"
    fi
    post_checks "$target"
    [[ $target == direct ]] || stop_pid "$PID"
done

echo "NOISE_SPENT=$NOISE_SPENT" >>"$RAW/meta.env"
"$PYTHON" "$BENCH_DIR/report.py" proxy --raw "$RAW" --out "$RESULTS/proxy-latest.md"
log "raw outputs: $RAW"
log "markdown:    $RESULTS/proxy-latest.md"
