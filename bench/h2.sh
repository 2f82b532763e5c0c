#!/usr/bin/env bash
# HTTP/2 to clients: Potok h2c (prior knowledge) vs nginx h2c (`listen ... http2`),
# both proxying to the same fast nginx upstream over HTTP/1.1, and Potok's own HTTP/1.1
# for the ratio. One command:
#
#     bench/h2.sh                 # 10 s per measurement, 2 rounds (~2 min)
#     QUICK=1 bench/h2.sh         # 3 s, 1 round (smoke test)
#     ROUNDS=3 bench/h2.sh        # more rounds (medians are reported)
#
# Layout (2-core machine, as bench/proxy.sh): the proxy under test on core 0; the
# upstream nginx and the load generator share core 1.
#   h2     h2load -c 10 -m 10 (10 connections x 10 concurrent streams), p99 from its log
#   h1     wrk -t1 -c10 --latency against Potok over HTTP/1.1 (nginx's `listen ... http2`
#          port speaks only h2c, so it has no HTTP/1.1 row)
# Goal (issue 16): Potok h2 >= 50 % of Potok's HTTP/1.1 req/s; the share of nginx's h2
# is reported. The table goes to stdout and bench/results/h2-latest.md.
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

UPSTREAM_PORT=18181
NGINX_PORT=18183
POTOK_PORT=18190
RAW=$RESULTS/raw-h2-latest

start_nginx_h2c() {
    local dir=$WORK/nginx-h2c
    mkdir -p "$dir/tmp"
    check_port_free "$NGINX_PORT"
    {
        _nginx_head "$dir"
        echo "http {"
        _nginx_http_common "$dir"
        cat <<CONF
    http2_max_concurrent_streams 128;
    upstream bench {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT http2 backlog=4096;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    } >"$dir/nginx.conf"
    start_nginx nginx-h2c "$PROXY_CPU"
    NGINX_PID=$LAST_PID
}

start_potok_h2() {
    local dir=$WORK/potok
    mkdir -p "$dir"
    check_port_free "$POTOK_PORT"
    write_potok_config "$dir/potok.yaml" "$POTOK_PORT" false false
    start_potok "$dir/potok.yaml" "$PROXY_CPU" "$dir/stdout.log"
    POTOK_PID=$LAST_PID
}

# CPU time (clock ticks) the process PID has used: req/s on a shared machine moves with
# the neighbours' load, CPU per request much less.
# The process and its children (nginx's worker).
cpu_ticks() {
    local p total=0
    for p in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# h2 NAME PORT ROUND PID: h2load, 10 connections x 10 streams, per-request log for the p99.
run_h2() {
    local name=$1 port=$2 round=$3 pid=$4 sampler
    # CPU counted from the end of h2load's warm-up (its log holds the main phase only).
    (sleep "$WARMUP" && cpu_ticks "$pid" >"$RAW/$name.h2.$round.t0") &
    sampler=$!
    taskset -c "$LOAD_CPU" h2load -c 10 -m 10 -D "$DURATION" --warm-up-time "$WARMUP" \
        --log-file="$RAW/$name.h2.$round.log" "http://127.0.0.1:$port/" >"$RAW/$name.h2.$round.txt" 2>&1 || true
    wait "$sampler" || true
    echo $(($(cpu_ticks "$pid") - $(cat "$RAW/$name.h2.$round.t0"))) >"$RAW/$name.h2.$round.ticks"
}

# h1 NAME PORT ROUND PID: wrk, 10 connections.
run_h1() {
    local name=$1 port=$2 round=$3 pid=$4 t0
    taskset -c "$LOAD_CPU" wrk -t1 -c10 -d"${WARMUP}s" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    t0=$(cpu_ticks "$pid")
    taskset -c "$LOAD_CPU" wrk -t1 -c10 -d"${DURATION}s" --latency "http://127.0.0.1:$port/" \
        >"$RAW/$name.h1.$round.txt" 2>&1 || true
    echo $(($(cpu_ticks "$pid") - t0)) >"$RAW/$name.h1.$round.ticks"
}

trap cleanup EXIT
ensure_tools
command -v h2load >/dev/null || die "h2load missing (Debian nghttp2-client)"
rm -rf "$WORK" "$RAW"
mkdir -p "$WORK" "$RAW"
prepare_potok
start_upstream
start_nginx_h2c
start_potok_h2
wait_http "$POTOK_PORT" "$POTOK_PID" || die "potok did not start"
curl -sf --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || die "nginx h2c does not answer"
curl -sf --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$POTOK_PORT/" || die "potok h2c does not answer"

for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS: potok h2c"
    run_h2 potok "$POTOK_PORT" "$round" "$POTOK_PID"
    log "round $round/$ROUNDS: nginx h2c"
    run_h2 nginx "$NGINX_PORT" "$round" "$NGINX_PID"
    log "round $round/$ROUNDS: potok HTTP/1.1 (wrk)"
    run_h1 potok "$POTOK_PORT" "$round" "$POTOK_PID"
done

"$PYTHON" - "$RAW" "$ROUNDS" "$DURATION" "$POTOK_SOURCE" "$(getconf CLK_TCK)" <<'PY' | tee "$RESULTS/h2-latest.md"
import re
import statistics
import sys
from pathlib import Path

raw, rounds, duration, source = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
tick_us = 1_000_000 / int(sys.argv[5])


def cpu_per_request(name: str, kind: str, r: int, count: int) -> float:
    """Microseconds of the server's CPU per request."""
    return int((raw / f"{name}.{kind}.{r}.ticks").read_text()) * tick_us / max(count, 1)


def h2(name: str, r: int) -> tuple[float, float, str, float]:
    text = (raw / f"{name}.h2.{r}.txt").read_text()
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
    done = re.search(r"requests: .*", text).group(0)
    total = len((raw / f"{name}.h2.{r}.log").read_text().splitlines())
    # h2load's log: start (us since epoch), status, duration (us) per request.
    durations = sorted(int(line.split()[2]) for line in (raw / f"{name}.h2.{r}.log").read_text().splitlines() if line.strip())
    p99 = durations[int(len(durations) * 0.99) - 1] / 1000 if durations else float("nan")
    return rps, p99, done, cpu_per_request(name, "h2", r, total)


def h1(name: str, r: int) -> tuple[float, float, str, float]:
    text = (raw / f"{name}.h1.{r}.txt").read_text()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    count = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    return rps, p99, "", cpu_per_request(name, "h1", r, count)


def median(values: list[float]) -> float:
    return statistics.median(values)


rows = {}
for name in ("potok", "nginx"):
    runs = [h2(name, r) for r in range(1, rounds + 1)]
    rows[f"{name} h2c (h2load -c10 -m10)"] = tuple(median([x[i] for x in runs]) for i in (0, 1, 3))
    print(f"<!-- {name} h2: {'; '.join(x[2] for x in runs)} -->")
for name, label in (("potok", "potok HTTP/1.1 (wrk -c10)"),):
    runs = [h1(name, r) for r in range(1, rounds + 1)]
    rows[label] = tuple(median([x[i] for x in runs]) for i in (0, 1, 3))

potok_h2, _, potok_h2_cpu = rows["potok h2c (h2load -c10 -m10)"]
potok_h1, _, potok_h1_cpu = rows["potok HTTP/1.1 (wrk -c10)"]
nginx_h2 = rows["nginx h2c (h2load -c10 -m10)"][0]
print(f"## HTTP/2 (bench/h2.sh): {rounds} round(s) of {duration} s, medians; Potok: {source}\n")
print("| server | req/s | p99 ms | server CPU us/request |")
print("|:---|---:|---:|---:|")
for label, (rps, p99, cpu) in rows.items():
    print(f"| {label} | {rps:,.0f} | {p99:.2f} | {cpu:.0f} |")
print()
print(f"Potok h2 / Potok HTTP/1.1: **{potok_h2 / potok_h1:.0%}** of the req/s (goal >= 50 %), "
      f"**{potok_h1_cpu / potok_h2_cpu:.0%}** by CPU per request  ")
print(f"Potok h2 / nginx h2: **{potok_h2 / nginx_h2:.0%}**")
PY
