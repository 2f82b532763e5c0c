#!/usr/bin/env bash
# The cost of resilience on a healthy upstream, in one run: the same Potok process
# serves /plain (retries off, no breaker, no ejection) and /resilient (the defaults:
# 3 attempts with a retry budget, circuit breaker, passive ejection; plus active
# health checks and a bulkhead far above the load). Both go to one nginx upstream.
# Rounds alternate the two routes so drift hits both alike.
#
#     bench/resilience.sh            # 3 rounds of 10 s per route
#     QUICK=1 bench/resilience.sh    # 1 round of 3 s (smoke test)
#
# Layout as bench/proxy.sh: Potok on core 0, upstream nginx and wrk on core 1.
# Table: stdout and bench/results/resilience-latest.md.
#
#     bench/resilience.sh faults     # issue 13 items 8-9: one bad target of two
#
# Fault runs: a service of two nginx targets with the default resilience config,
# `hey -c 50 -q 10` (500 req/s) for FAULT_SECONDS (20) per scenario; after 5 s one
# target is killed (kill -9), frozen (SIGSTOP: connections accepted, never answered;
# with round robin, then with least_requests), or — from the start — answers 503 to
# half its requests (passive ejection off, so it keeps failing all along). Reported: errors seen by clients, breaker trips, retry
# budget refusals, and for the kill the time until the target is out of rotation.
# Table: stdout and bench/results/resilience-faults-latest.md.
set -euo pipefail
WORK=${WORK:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.work/resilience}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
UPSTREAM_PORT=${RS_UPSTREAM_PORT:-18381}
RS_PORT=${RS_PORT:-18397}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
if [[ ${QUICK:-0} == 1 ]]; then ROUNDS=1; DURATION=3; fi
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
RAW=$RESULTS/resilience-raw-latest

trap cleanup EXIT
ensure_tools
if [[ ${1:-} == faults ]]; then
    source "$BENCH_DIR/resilience_faults.sh"
    run_faults
    exit 0
fi
mkdir -p "$WORK/potok" "$WORK/upstream"
rm -rf "$RAW" && mkdir -p "$RAW"
cat >"$WORK/potok/potok.yaml" <<EOF
server: {host: 127.0.0.1, port: $RS_PORT, timeouts: {shutdown_grace: 2s}}
logging: {level: warning, access_log: {enabled: false}}
metrics: {enabled: false}
services:
  plain:
    targets: ["http://127.0.0.1:$UPSTREAM_PORT"]
    retry: {attempts: 1}
    circuit_breaker: null
    passive_ejection: null
  resilient:
    targets: ["http://127.0.0.1:$UPSTREAM_PORT"]
    health_check: {path: /, interval: 5s}
    bulkhead: {max_concurrent: 10000}
routes:
  - {name: plain, match: {prefix: /plain}, service: plain}
  - {name: resilient, match: {prefix: /resilient}, service: resilient}
  - {name: root, match: {prefix: /}, service: plain}
EOF
"$POTOK" check --config "$WORK/potok/potok.yaml" >/dev/null || die "potok rejects the bench config"
start_upstream
check_port_free "$RS_PORT"
start_potok "$WORK/potok/potok.yaml" "$PROXY_CPU" "$WORK/potok/stdout.log"
PID=$LAST_PID
wait_http "$RS_PORT" "$PID" || die "potok did not start (see $WORK/potok/stdout.log)"
base="http://127.0.0.1:$RS_PORT"
for name in plain resilient; do
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d2s "$base/$name/x" >/dev/null 2>&1 || true
done
for round in $(seq 1 "$ROUNDS"); do
    for name in plain resilient; do
        log "round $round: /$name"
        taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "$base/$name/x" \
            >"$RAW/$name-$round.txt" 2>&1 || true
    done
done
"$PYTHON" - "$RAW" "$ROUNDS" "$RESULTS/resilience-latest.md" <<'PY'
import re, statistics, sys
from pathlib import Path

raw, rounds, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])


def parse(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


rows = {}
for name in ("plain", "resilient"):
    runs = [parse((raw / f"{name}-{r}.txt").read_text()) for r in range(1, rounds + 1)]
    rows[name] = (
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        sum(r[2] for r in runs),
        [round(r[0]) for r in runs],
    )
base = rows["plain"][0]
lines = [
    "| route | req/s @50 (median) | p99 ms | non-2xx | share of plain | per round |",
    "|:---|---:|---:|---:|---:|---:|",
]
for name, (rps, p99, errors, per) in rows.items():
    lines.append(
        f"| {name} | {rps:,.0f} | {p99:.2f} | {errors} | {rps / base * 100:.1f} % | "
        f"{', '.join(f'{x:,}' for x in per)} |"
    )
verdict = rows["resilient"][0] / base
lines += ["", f"Resilient route at {verdict * 100:.1f} % of the plain one: target >= 95 % "
          f"{'MET' if verdict >= 0.95 else 'NOT MET'}."]
text = "\n".join(lines)
print(text)
out.write_text("# Resilience cost (latest run)\n\n" + text + "\n")
PY
