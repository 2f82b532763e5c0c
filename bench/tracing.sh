#!/usr/bin/env bash
# Tracing's cost (issue 19's benchmark): the same proxy with tracing off, at 1 % and at
# 100 % sampling, in one run.
#
#     bench/tracing.sh                     # 5 rounds of 8 s per row, then callgrind (~12 min)
#     ROUNDS=7 DURATION=10 bench/tracing.sh
#     CALLGRIND=0 bench/tracing.sh         # wall clock only (~3 min)
#
# Three Potoks (one worker each, all on core $PROXY_CPU, only the measured one loaded)
# with bench/proxy.sh's bare config (one route to the nginx upstream, access log and
# metrics off), tracing off / sample_ratio 0.01 / 1.0, spans exported over OTLP/HTTP to
# bench/otlp_sink.py (core $LOAD_CPU, with nginx and wrk: a collector would be on
# another machine). wrk -c50 in rows that alternate inside each round (in a rotating
# order), so the machine's load falls on all alike; the table shows medians over the
# rounds: req/s, p99, and the Potok process's CPU time per request (user + system, from
# /proc: what a request costs the gateway's core, whatever the load generator does).
# Goals: <= 3 % fewer req/s at 1 %, <= 15 % at 100 %.
# Then (CALLGRIND=1) bench/instructions.sh counts user-space instructions per request,
# off / 1 % / 100 %: load-independent, but blind to the kernel's share of a request
# (receiving and sending it), so it shows tracing's relative cost larger than req/s do.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FIRST_PORT=${TRACING_PORT:-19400}  # this and the next two: off, 1 %, 100 %
SINK_PORT=$((FIRST_PORT + 3))
UPSTREAM_PORT=${TRACING_UPSTREAM_PORT:-$((FIRST_PORT + 4))}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-50}
CALLGRIND=${CALLGRIND:-1}

trap cleanup EXIT
ensure_tools
prepare_potok
rm -rf "$WORK"
mkdir -p "$WORK"
start_upstream

check_port_free "$SINK_PORT"
spawn_bg "$WORK/otlp-sink.log" taskset -c "$LOAD_CPU" "$PYTHON" "$BENCH_DIR/otlp_sink.py" \
    "$SINK_PORT" "$WORK/otlp-spans.txt"

rows=(off traced1 traced100)
declare -A PORT_OF PID_OF
declare -A RATIO_OF=([traced1]=0.01 [traced100]=1.0)
declare -A LABEL_OF=([off]="off" [traced1]="1 % sampled" [traced100]="100 % sampled")
for i in "${!rows[@]}"; do
    row=${rows[$i]}
    port=$((FIRST_PORT + i))
    PORT_OF[$row]=$port
    mkdir -p "$WORK/$row"
    check_port_free "$port"
    write_potok_config "$WORK/$row/potok.yaml" "$port" false false
    if [[ $row != off ]]; then
        printf 'tracing:\n  enabled: true\n  sample_ratio: %s\n  endpoint: http://127.0.0.1:%s/v1/traces\n' \
            "${RATIO_OF[$row]}" "$SINK_PORT" >>"$WORK/$row/potok.yaml"
        "$POTOK" check --config "$WORK/$row/potok.yaml" >/dev/null || die "potok rejects $row's config"
    fi
    start_potok "$WORK/$row/potok.yaml" "$PROXY_CPU" "$WORK/$row/potok.log"
    PID_OF[$row]=$LAST_PID
    wait_http "$port" "$LAST_PID" || die "potok ($row) did not start (see $WORK/$row/potok.log)"
done
log "potok off / 1 % / 100 % on ports $FIRST_PORT-$((FIRST_PORT + 2)) (core $PROXY_CPU), sink on $SINK_PORT"

run_wrk() {  # ROW -> "req/s p99_ms cpu_us_per_request" appended to $WORK/ROW.txt
    local row=$1 out=$WORK/wrk-$1.txt pid=${PID_OF[$1]}
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ --proc "$pid" >"$WORK/cpu.before"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:${PORT_OF[$row]}/" >"$out" 2>&1 || die "wrk failed on $row (see $out)"
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ --proc "$pid" >"$WORK/cpu.after"
    if grep -q "Non-2xx" "$out"; then die "non-2xx answers from $row (see $out)"; fi
    local rps p99 requests seconds cpu
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    requests=$(awk '/requests in/ {print $1}' "$out")
    p99=$(awk '$1 == "99%" {v = $2; if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; print v}' "$out")
    seconds=$("$PYTHON" "$BENCH_DIR/cpuwatch.py" proc-seconds "$WORK/cpu.before" "$WORK/cpu.after")
    cpu=$(awk -v s="$seconds" -v n="$requests" 'BEGIN {printf "%.1f", 1e6 * s / n}')
    echo "$rps $p99 $cpu" >>"$WORK/$row.txt"
    log "$row: $rps req/s, p99 $p99 ms, $cpu us CPU per request"
}

for row in "${rows[@]}"; do  # warm-up
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:${PORT_OF[$row]}/" >/dev/null 2>&1
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS"
    # A rotating order: no row always runs first, or always right after another.
    case $((round % 3)) in
        1) order=(off traced1 traced100) ;;
        2) order=(traced1 traced100 off) ;;
        0) order=(traced100 off traced1) ;;
    esac
    for row in "${order[@]}"; do run_wrk "$row"; done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 2  # the last batches
spans=$(cat "$WORK/otlp-spans.txt" 2>/dev/null || echo 0)

median() {  # FILE COLUMN
    sort -g -k"$2","$2" "$1" | awk -v c="$2" '{v[NR] = $c} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
versus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f %%", 100 * (a - b) / b}'; }
off_rps=$(median "$WORK/off.txt" 1)
off_cpu=$(median "$WORK/off.txt" 3)
table=$WORK/table.md
{
    echo "| Tracing | req/s (median) | vs off | p99 ms (median) | CPU µs per request (median) | vs off | req/s by round |"
    echo "|:---|---:|---:|---:|---:|---:|:---|"
    for row in "${rows[@]}"; do
        rps=$(median "$WORK/$row.txt" 1)
        cpu=$(median "$WORK/$row.txt" 3)
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL_OF[$row]}" "$rps" \
            "$(versus "$rps" "$off_rps")" "$(median "$WORK/$row.txt" 2)" "$cpu" \
            "$(versus "$cpu" "$off_cpu")" "$(cut -d' ' -f1 "$WORK/$row.txt" | paste -sd' ')"
    done
} >"$table"
mkdir -p "$RESULTS"
{
    echo "Tracing, $(date -u '+%Y-%m-%d %H:%M UTC'), $POTOK_SOURCE; $ROUNDS rounds of ${DURATION} s per row"
    echo "(wrk -c$CONNECTIONS, rows alternating); Potok 1 worker on core $PROXY_CPU; nginx, wrk and the OTLP sink"
    echo "on core $LOAD_CPU; load average before $load_before, after $load_after; spans the sink received: $spans;"
    echo "$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}')."
    echo
    cat "$table"
} | tee "$RESULTS/tracing-latest.md"

if [[ $CALLGRIND == 1 ]]; then
    cleanup
    STARTED_PIDS=()
    for ratio in off 0.01 1.0; do
        log "instructions per request, tracing $ratio (bench/instructions.sh)"
        ratio_env=()
        [[ $ratio == off ]] || ratio_env=(TRACING_RATIO="$ratio")
        env "${ratio_env[@]}" BENCH_NO_LOCK=1 ROUTES="open open" REQUESTS="${INSTR_REQUESTS:-3000}" \
            WORK="$WORK/instr-$ratio" INSTR_PORT=$((FIRST_PORT + 10)) \
            INSTR_UPSTREAM_PORT=$((FIRST_PORT + 11)) INSTR_REDIS_PORT=$((FIRST_PORT + 12)) \
            INSTR_SINK_PORT=$((FIRST_PORT + 13)) "$BENCH_DIR/instructions.sh" >"$WORK/instr-$ratio.txt"
    done
    count() {  # the mean of the two counts of the open route
        awk -F'|' '$2 ~ /^ open / {gsub(/ /, "", $3); s += $3; n++} END {printf "%.0f", s / n}' "$WORK/instr-$1.txt"
    }
    off=$(count off)
    {
        echo
        echo "Instructions per request (callgrind, user space only; mean of two counts of ${INSTR_REQUESTS:-3000} requests):"
        echo
        echo "| Tracing | instructions per request | vs off |"
        echo "|:---|---:|---:|"
        for ratio in off 0.01 1.0; do
            n=$(count "$ratio")
            echo "| $ratio | $n | $(versus "$n" "$off") |"
        done
    } | tee -a "$RESULTS/tracing-latest.md"
fi
