#!/usr/bin/env bash
# What an open dashboard costs the data plane: the same Potok (one worker, core 0) under
# the same wrk load (core 1), with no dashboard and with one open — its live stream
# (/dashboard/stream on the metrics listener) at 0.5 s, four times the page's default
# rate. Rounds alternate closed/open so a slow machine hurts both alike. One command:
#
#     bench/dashboard.sh              # 3 rounds x 2 runs of 8 s (~1 min)
#     ROUNDS=5 DURATION=10 bench/dashboard.sh
#
# The stream is read by curl, not a browser: what the gateway does for an open page is
# exactly that stream (the page renders in the browser, on another machine in practice),
# and a headless Chromium here would compete for the two cores with what is measured.
# Table to stdout and bench/results/dashboard-latest.md; raw wrk outputs in
# bench/results/raw-latest/dashboard.*.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
INTERVAL=${INTERVAL:-0.5}
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
POTOK_PORT=18096
LISTEN_PORT=18097
RAW=$RESULTS/raw-latest
STREAM_PID=

trap 'stop_stream; cleanup' EXIT
ensure_tools
rm -rf "$WORK" && mkdir -p "$WORK" "$RAW"
prepare_potok

start_upstream
check_port_free "$POTOK_PORT"
check_port_free "$LISTEN_PORT"
write_potok_config "$WORK/potok.yaml" "$POTOK_PORT" false true
# The dashboard (with the admin API) is on the metrics listener.
sed -i "s|^metrics: {enabled: true}\$|metrics: {enabled: true, listen: \"127.0.0.1:$LISTEN_PORT\"}|" "$WORK/potok.yaml"
"$POTOK" check --config "$WORK/potok.yaml" >/dev/null || die "potok rejects $WORK/potok.yaml"
start_potok "$WORK/potok.yaml" "$PROXY_CPU" "$WORK/potok.log"
POTOK_PID=$LAST_PID
wait_http "$POTOK_PORT" "$POTOK_PID" || die "potok did not start (see $WORK/potok.log)"
wait_http "$LISTEN_PORT" "$POTOK_PID" /dashboard || die "no dashboard on the listener"
log "potok (pid $POTOK_PID, core $PROXY_CPU) on $POTOK_PORT, dashboard on $LISTEN_PORT"

start_stream() {
    taskset -c "$LOAD_CPU" curl -sN "http://127.0.0.1:$LISTEN_PORT/dashboard/stream?interval=$INTERVAL" \
        >"$WORK/stream.$1.txt" 2>/dev/null {BENCH_LOCK_FD}>&- &
    STREAM_PID=$!
    sleep 1.5  # the page's first updates
}

stop_stream() {
    if [[ -n $STREAM_PID ]]; then
        kill "$STREAM_PID" 2>/dev/null || true
        wait "$STREAM_PID" 2>/dev/null || true
        STREAM_PID=
    fi
}

run() {  # MODE ROUND
    local out=$RAW/dashboard.$1.$2.txt
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "http://127.0.0.1:$POTOK_PORT/" >"$out" 2>&1
    log "$1 round $2: $(grep Requests/sec "$out")"
}

taskset -c "$LOAD_CPU" wrk -t1 -c50 -d2s "http://127.0.0.1:$POTOK_PORT/" >/dev/null 2>&1  # warm-up
for round in $(seq 1 "$ROUNDS"); do
    run closed "$round"
    start_stream "$round"
    run open "$round"
    events=$(grep -c '^event: snapshot' "$WORK/stream.$round.txt" || true)
    stop_stream
    ((events > 0)) || die "the stream sent no snapshot during round $round"
    log "open round $round: the dashboard got $events updates"
done

# The cost itself, free of the load's noise: the idle gateway's CPU time with the stream
# open, per update (utime + stime of the worker from /proc, CPU_SECONDS each way).
CPU_SECONDS=${CPU_SECONDS:-10}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$POTOK_PID/stat"; }
idle_before=$(cpu_ticks); sleep "$CPU_SECONDS"; idle_after=$(cpu_ticks)
start_stream cpu
open_before=$(cpu_ticks); sleep "$CPU_SECONDS"; open_after=$(cpu_ticks)
updates=$(grep -c '^event: snapshot' "$WORK/stream.cpu.txt" || true)
stop_stream
echo "$((idle_after - idle_before)) $((open_after - open_before)) $updates $(getconf CLK_TCK) $CPU_SECONDS" >"$RAW/dashboard.cpu.txt"

"$PYTHON" - "$RAW" "$ROUNDS" "$INTERVAL" <<'PY' | tee "$RESULTS/dashboard-latest.md"
import re, statistics, sys
from pathlib import Path

raw, rounds, interval = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def unit_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def parse(mode):
    rps, p99 = [], []
    for r in range(1, rounds + 1):
        text = (raw / f"dashboard.{mode}.{r}.txt").read_text()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)))
        p99.append(unit_ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)))
    return rps, p99

closed, opened = parse("closed"), parse("open")
c_rps, o_rps = statistics.median(closed[0]), statistics.median(opened[0])
c_p99, o_p99 = statistics.median(closed[1]), statistics.median(opened[1])
print(f"| Potok, 1 worker, wrk -c50 ({rounds} rounds, medians) | req/s | p99 (ms) | runs (req/s) |")
print("|---|---:|---:|---|")
print(f"| no dashboard | {c_rps:,.0f} | {c_p99:.2f} | {', '.join(f'{v:,.0f}' for v in closed[0])} |")
print(f"| dashboard open (stream every {interval} s) | {o_rps:,.0f} | {o_p99:.2f} | {', '.join(f'{v:,.0f}' for v in opened[0])} |")
print(f"| difference | {100 * (o_rps - c_rps) / c_rps:+.1f} % | {100 * (o_p99 - c_p99) / c_p99:+.1f} % | |")
idle, opened_ticks, updates, hz, seconds = map(int, (raw / "dashboard.cpu.txt").read_text().split())
per_update_ms = 1000 * (opened_ticks - idle) / hz / max(updates, 1)
print()
print(f"Idle gateway, {seconds} s each: CPU {1000 * idle / hz:.0f} ms without the dashboard, "
      f"{1000 * opened_ticks / hz:.0f} ms with it open ({updates} updates): "
      f"~{per_update_ms:.1f} ms of one core per update, "
      f"{per_update_ms / 2 / 10:.2f} % of a core at the page's default (one update / 2 s).")
PY
