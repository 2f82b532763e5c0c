#!/usr/bin/env bash
# gRPC unary calls through Potok vs direct to the same grpcio server, in one run. One
# command:
#
#     bench/grpc.sh               # 10 s per measurement, 2 rounds, alternated (~1 min)
#     QUICK=1 bench/grpc.sh       # 3 s, 1 round (smoke test)
#
# The upstream is a grpc.aio server (bench/grpc_server.py: /potok.bench.Raw/Echo returns
# the request). The load is h2load with a gRPC unary body (a 5-byte length prefix and a
# 64-byte message, `content-type: application/grpc`, `te: trailers`), 10 connections x
# 10 concurrent streams; p99 from h2load's per-request log. Layout as the other
# benchmarks on this 2-core machine: Potok on core 0 (one worker), the grpc server and
# h2load share core 1 — so "direct" is the server with the whole core minus the load
# generator, and through Potok the same server behind the proxy on its own core.
# Before measuring, a real grpcio call checks both paths answer OK; after, Potok's
# grpc_calls_total says how many calls ended OK. Table to stdout and
# bench/results/grpc-latest.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=1
    DURATION=3
fi
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"

GRPC_PORT=${GRPC_PORT:-19101}
POTOK_PORT=${POTOK_PORT:-19102}
RAW=$RESULTS/raw-grpc-latest
CALL=/potok.bench.Raw/Echo

# CPU time (clock ticks) process PID has used: calls/s on a shared machine move with the
# neighbours' load, CPU per call much less.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# run NAME PORT ROUND: h2load with the gRPC body; its log has each call's duration.
# CPU of Potok and of the grpc server counted from the end of h2load's warm-up.
run() {
    local name=$1 port=$2 round=$3 sampler
    (sleep "$WARMUP" && echo "$(cpu_ticks "$POTOK_PID") $(cpu_ticks "$SERVER_PID")" \
        >"$RAW/$name.$round.t0") &
    sampler=$!
    taskset -c "$LOAD_CPU" h2load -c 10 -m 10 -D "$DURATION" --warm-up-time "$WARMUP" \
        -d "$WORK/message.bin" -H "content-type: application/grpc" -H "te: trailers" \
        --log-file="$RAW/$name.$round.log" "http://127.0.0.1:$port$CALL" \
        >"$RAW/$name.$round.txt" 2>&1 || true
    wait "$sampler" || true
    echo "$(cpu_ticks "$POTOK_PID") $(cpu_ticks "$SERVER_PID")" >"$RAW/$name.$round.t1"
}

trap cleanup EXIT
command -v h2load >/dev/null || die "h2load missing (Debian nghttp2-client)"
[[ -x $POTOK ]] || die "$POTOK not found: create the venv and 'pip install -e .' first"
rm -rf "$WORK" "$RAW"
mkdir -p "$WORK" "$RAW"
prepare_potok
check_port_free "$POTOK_PORT"
"$PYTHON" -c 'import sys; m = b"m" * 64; sys.stdout.buffer.write(b"\0" + len(m).to_bytes(4, "big") + m)' \
    >"$WORK/message.bin"

spawn_bg "$WORK/grpc-server.log" taskset -c "$UPSTREAM_CPU" "$PYTHON" "$BENCH_DIR/grpc_server.py" "$GRPC_PORT"
SERVER_PID=$LAST_PID
cat >"$WORK/potok.yaml" <<CONF
server:
  host: 127.0.0.1
  port: $POTOK_PORT
  timeouts: {shutdown_grace: 2s}
logging:
  level: warning
  access_log: {enabled: false}
metrics: {enabled: true}
services:
  grpc: {targets: ["http://127.0.0.1:$GRPC_PORT"]}
routes:
  - {name: grpc, match: {prefix: /potok.bench.Raw/}, service: grpc, grpc: true}
CONF
"$POTOK" check --config "$WORK/potok.yaml" >/dev/null || die "potok rejects its config"
start_potok "$WORK/potok.yaml" "$PROXY_CPU" "$WORK/potok.log"
POTOK_PID=$LAST_PID
wait_http "$POTOK_PORT" "$POTOK_PID" /api/v1/health || die "potok did not start"
for i in $(seq 1 50); do
    "$PYTHON" "$BENCH_DIR/grpc_check.py" "$GRPC_PORT" 2>/dev/null && break
    sleep 0.1
done
"$PYTHON" "$BENCH_DIR/grpc_check.py" "$GRPC_PORT" || die "the grpc server does not answer"
"$PYTHON" "$BENCH_DIR/grpc_check.py" "$POTOK_PORT" || die "Potok does not relay the call"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS: direct"
    run direct "$GRPC_PORT" "$round"
    log "round $round/$ROUNDS: through potok"
    run potok "$POTOK_PORT" "$round"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
curl -s "http://127.0.0.1:$POTOK_PORT/api/v1/metrics" | grep '^grpc_calls_total' >"$RAW/potok.grpc_calls" || true

"$PYTHON" - "$RAW" "$ROUNDS" "$DURATION" "$POTOK_SOURCE" "$LOAD_BEFORE" "$LOAD_AFTER" "$(getconf CLK_TCK)" <<'PY' | tee "$RESULTS/grpc-latest.md"
import re
import statistics
import sys
from pathlib import Path

raw, rounds, duration, source = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
load_before, load_after = sys.argv[5], sys.argv[6]
tick_us = 1_000_000 / int(sys.argv[7])


def cpu(name: str, r: int, calls: int) -> tuple[float, float]:
    """Microseconds of CPU per call: Potok's, the grpc server's."""
    t0 = [int(x) for x in (raw / f"{name}.{r}.t0").read_text().split()]
    t1 = [int(x) for x in (raw / f"{name}.{r}.t1").read_text().split()]
    return tuple((b - a) * tick_us / max(calls, 1) for a, b in zip(t0, t1, strict=True))


def measure(name: str, r: int) -> tuple[float, float, str, float, float]:
    text = (raw / f"{name}.{r}.txt").read_text()
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
    done = re.search(r"requests: .*", text).group(0)
    lines = (raw / f"{name}.{r}.log").read_text().splitlines()
    durations = sorted(int(line.split()[2]) for line in lines if line.strip())
    p99 = durations[int(len(durations) * 0.99) - 1] / 1000 if durations else float("nan")
    return rps, p99, done, *cpu(name, r, len(durations))


rows = {}
for name, label in (("direct", "direct to grpc.aio"), ("potok", "through Potok (1 worker)")):
    runs = [measure(name, r) for r in range(1, rounds + 1)]
    rows[label] = tuple(statistics.median(x[i] for x in runs) for i in (0, 1, 3, 4))
    print(f"<!-- {name}: {'; '.join(x[2] for x in runs)} -->")
calls = (raw / "potok.grpc_calls").read_text().strip().replace("\n", "; ")
print(f"## gRPC unary (bench/grpc.sh): {rounds} round(s) of {duration} s alternated, medians; "
      f"Potok: {source}\n")
print("| path | calls/s | p99 ms | Potok CPU us/call | server CPU us/call |")
print("|:---|---:|---:|---:|---:|")
for label, (rps, p99, potok_cpu, server_cpu) in rows.items():
    potok_cell = "-" if label.startswith("direct") else f"{potok_cpu:.0f}"
    print(f"| {label} | {rps:,.0f} | {p99:.2f} | {potok_cell} | {server_cpu:.0f} |")
direct = rows["direct to grpc.aio"][0]
potok = rows["through Potok (1 worker)"][0]
print()
print(f"Through Potok / direct: **{potok / direct:.0%}** of the calls/s  ")
print(f"Load average (1/5/15 min) before: {load_before}, after: {load_after}  ")
print(f"Potok's count: {calls}")
PY
