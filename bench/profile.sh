#!/usr/bin/env bash
# Where does Potok spend its time? Profile Potok bare under wrk load with py-spy.
#
#     bench/profile.sh                  # 10 s of wrk -c50, 9 s of it sampled at 200 Hz
#     NATIVE=1 bench/profile.sh         # also unwind C frames (uvloop, httptools)
#     CONNS=10 DURATION=5 bench/profile.sh
#     POTOK_REF=HEAD bench/profile.sh   # a commit's src/ instead of the working tree
#
# Same layout as bench/proxy.sh: Potok (bare config) on core 0, the upstream
# nginx and wrk on core 1. Two recordings of DURATION s each (py-spy writes one
# format per run):
#   bench/results/profile-latest.collapsed.txt    collapsed stacks (--format raw)
#   bench/results/profile-latest.svg              flame graph (--format flamegraph)
#   bench/results/profile-latest.speedscope.json  speedscope, made from the collapsed stacks
#   bench/results/profile-latest.md               top functions by own and total time
# (profile-latest-native.* with NATIVE=1).
# then prints the top 25 functions by own time and by total time.
# py-spy needs root (ptrace).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-50}
RATE=${RATE:-200}
PORT=18090
PYSPY=$VENV/bin/py-spy
((DURATION <= 10)) || die "DURATION is capped at 10 s"
[[ -x $PYSPY ]] || die "$PYSPY not found (pip install py-spy into the venv)"
[[ $(id -u) == 0 ]] || die "py-spy needs root to attach to a process"

OUT=$RESULTS/profile-latest
native=()
if [[ ${NATIVE:-0} == 1 ]]; then
    native=(--native)
    OUT=$RESULTS/profile-latest-native
fi

trap cleanup EXIT
ensure_tools
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"

prepare_potok
start_upstream
write_potok_config "$WORK/potok.yaml" "$PORT" false false
start_potok "$WORK/potok.yaml" "$PROXY_CPU" "$WORK/potok.log"
POTOK_PID=$LAST_PID
wait_http "$PORT" "$POTOK_PID" || { tail -n 30 "$WORK/potok.log" >&2; die "potok did not start"; }
log "potok bare (pid $POTOK_PID, core $PROXY_CPU) on 127.0.0.1:$PORT"

url="http://127.0.0.1:$PORT/"
log "warm-up ${WARMUP}s"
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true

# record FORMAT FILE: wrk loads the gateway for DURATION s; py-spy samples
# DURATION-1 s of it (starting once the load is on).
SAMPLE_S=$((DURATION > 1 ? DURATION - 1 : 1))
record() {
    local format=$1 file=$2
    log "recording --format $format for ${SAMPLE_S}s under wrk -c$CONNS"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$file.wrk.txt" 2>&1 &
    local wrk_pid=$!
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ >"$WORK/cpu.before"
    sleep 0.3
    "$PYSPY" record --pid "$POTOK_PID" --rate "$RATE" --duration "$SAMPLE_S" \
        --format "$format" --output "$file" "${native[@]}" >"$file.pyspy.log" 2>&1 \
        || { cat "$file.pyspy.log" >&2; die "py-spy failed"; }
    wait "$wrk_pid" || true
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ >"$WORK/cpu.after"
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" foreign "$WORK/cpu.before" "$WORK/cpu.after" >"$file.foreign"
    grep -E "Requests/sec|Non-2xx|Socket errors" "$file.wrk.txt" | sed 's/^/    wrk: /' >&2 || true
    log "processes outside the benchmark used $(cat "$file.foreign") % of the CPUs meanwhile"
}

quiet=$("$PYTHON" "$BENCH_DIR/cpuwatch.py" quiet $$ --threshold 10 --max-wait "${QUIET_WAIT:-60}")
log "other processes use $quiet % of the CPUs before recording"
record raw "$OUT.collapsed.txt"
record flamegraph "$OUT.svg"
kill -0 "$POTOK_PID" 2>/dev/null || die "potok exited during profiling (see $WORK/potok.log)"

{
    echo "Potok: $POTOK_SOURCE"
    echo "Potok bare, wrk -t1 -c$CONNS for ${DURATION}s, py-spy record --rate $RATE for ${SAMPLE_S}s ${native[*]}"
    grep -E "Requests/sec" "$OUT.collapsed.txt.wrk.txt" | sed 's/^/wrk under profiling: /' || true
    echo "other processes meanwhile: $(cat "$OUT.collapsed.txt.foreign") % of the CPUs"
    echo
} >"$WORK/head.txt"
cat "$WORK/head.txt"
"$PYTHON" "$BENCH_DIR/stacks.py" "$OUT.collapsed.txt" --top 25 \
    --markdown "$WORK/top.md" --speedscope "$OUT.speedscope.json"
{ cat "$WORK/head.txt"; cat "$WORK/top.md"; } >"$OUT.md"
log "collapsed stacks: $OUT.collapsed.txt"
log "flame graph:      $OUT.svg"
log "speedscope:       $OUT.speedscope.json"
log "summary:          $OUT.md"
