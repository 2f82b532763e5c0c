# The fault runs of bench/resilience.sh (`bench/resilience.sh faults`), sourced after
# lib.sh: one bad target of two under 500 req/s at concurrency 50 (issue 13 items 8-9).

FAULT_SECONDS=${FAULT_SECONDS:-20}
FAULT_AT=${FAULT_AT:-5}
TARGET_A_PORT=${RS_TARGET_A_PORT:-18382}
TARGET_B_PORT=${RS_TARGET_B_PORT:-18383}
((FAULT_SECONDS <= 30)) || die "FAULT_SECONDS is capped at 30 s per scenario"

# fault_target NAME PORT HALF(0|1): an nginx in one process (master_process off), so
# kill -9 and SIGSTOP act on the whole server; HALF=1 answers 503 to half the requests.
fault_target() {
    local name=$1 port=$2 half=$3 dir=$WORK/$1
    mkdir -p "$dir/tmp"
    {
        _nginx_head "$dir"
        echo "master_process off;"
        echo "http {"
        _nginx_http_common "$dir"
        if ((half)); then
            echo '    split_clients "${request_id}" $fail { 50% 1; * 0; }'
        else
            echo '    map $host $fail { default 0; }'
        fi
        cat <<EOF
    server {
        listen 127.0.0.1:$port backlog=4096;
        default_type application/json;
        location / {
            if (\$fail) { return 503 '{"failing":true}'; }
            return 200 '{"ok":true,"service":"bench"}';
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    check_port_free "$port"
    start_nginx "$name" "$UPSTREAM_CPU"
    wait_http "$port" "$LAST_PID" /x || true  # HALF targets may answer 503 here
}

# fault_scenario NAME ACTION SERVICE_EXTRA
# ACTION: kill | freeze | none (the half-failing target fails from the start).
# freeze-least-requests: the freeze with `balancer: least_requests`, which stops feeding
# a target whose requests pile up (round robin keeps sending it every other request
# until it is ejected after 5 response timeouts).
fault_scenario() {
    local name=$1 action=$2 extra=$3 half=0 a_pid b_pid potok_pid actor
    [[ $action == none ]] && half=1
    fault_target "target-a" "$TARGET_A_PORT" 0
    a_pid=$LAST_PID
    fault_target "target-b" "$TARGET_B_PORT" "$half"
    b_pid=$LAST_PID
    mkdir -p "$WORK/potok"
    cat >"$WORK/potok/faults.yaml" <<EOF
server: {host: 127.0.0.1, port: $RS_PORT, timeouts: {shutdown_grace: 2s}}
logging: {level: warning, access_log: {enabled: false}}
services:
  svc:
    targets: ["http://127.0.0.1:$TARGET_B_PORT", "http://127.0.0.1:$TARGET_A_PORT"]
$extra
routes:
  - {name: svc, match: {prefix: /}, service: svc}
EOF
    "$POTOK" check --config "$WORK/potok/faults.yaml" >/dev/null || die "potok rejects the faults config"
    check_port_free "$RS_PORT"
    start_potok "$WORK/potok/faults.yaml" "$PROXY_CPU" "$WORK/potok/faults-$name.log"
    potok_pid=$LAST_PID
    wait_http "$RS_PORT" "$potok_pid" /api/v1/health/liveness || die "potok did not start"
    log "scenario $name: hey -z ${FAULT_SECONDS}s -c 50 -q 10, $action target B at ${FAULT_AT}s"
    (
        sleep "$FAULT_AT"
        case $action in
        kill) kill -KILL "$b_pid" ;;
        freeze) kill -STOP "$b_pid" ;;
        none) exit 0 ;;
        esac
        # How long until the target is out of rotation (polled every 20 ms, up to 15 s).
        "$PYTHON" - "$RS_PORT" "127.0.0.1:$TARGET_B_PORT" <<'PY' >"$RAW/faults-$name.out-after"
import json, sys, time, urllib.request
port, target = sys.argv[1], sys.argv[2]
started = time.monotonic()
while time.monotonic() - started < 15:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
        health = json.load(r)["services"]["svc"]
    if not next(t for t in health["targets"] if t["target"] == target)["healthy"]:
        print(f"{time.monotonic() - started:.2f}")
        break
    time.sleep(0.02)
else:
    print("never")
PY
    ) &
    actor=$!
    taskset -c "$LOAD_CPU" hey -z "${FAULT_SECONDS}s" -c 50 -q 10 -t 30 \
        "http://127.0.0.1:$RS_PORT/x" >"$RAW/faults-$name.txt" 2>&1 || true
    wait "$actor" || true
    curl -s "http://127.0.0.1:$RS_PORT/api/v1/metrics" >"$RAW/faults-$name.metrics"
    curl -s "http://127.0.0.1:$RS_PORT/api/v1/health" >"$RAW/faults-$name.health.json"
    kill -CONT "$b_pid" 2>/dev/null || true
    stop_pid "$potok_pid"
    stop_pid "$b_pid"
    stop_pid "$a_pid"
}

run_faults() {
    mkdir -p "$WORK"
    RAW=$RESULTS/resilience-faults-raw-latest
    rm -rf "$RAW" && mkdir -p "$RAW"
    prepare_potok  # POTOK_REF=<commit> measures that commit (a baseline) instead of the tree
    log "Potok: $POTOK_SOURCE"
    fault_scenario kill kill ""
    fault_scenario freeze freeze ""
    fault_scenario freeze-least-requests freeze "    balancer: least_requests"
    fault_scenario half-failing none "    passive_ejection: null"
    "$PYTHON" - "$RAW" "$RESULTS/resilience-faults-latest.md" "$FAULT_SECONDS" "$FAULT_AT" \
        "$POTOK_SOURCE" <<'PY'
import re, sys
from pathlib import Path

raw, out, seconds, at, source = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:6]


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


rows = [
    "| scenario | requests | non-200 | error rate | breaker opened | budget refusals "
    "| retries | out of rotation after | p99 s | slowest s |",
    "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for name in ("kill", "freeze", "freeze-least-requests", "half-failing"):
    hey = (raw / f"faults-{name}.txt").read_text()
    metrics = (raw / f"faults-{name}.metrics").read_text()
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", hey)}
    errors_section = hey.split("Error distribution:", 1)[1] if "Error distribution:" in hey else ""
    transport_errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s", errors_section))
    total = sum(statuses.values()) + transport_errors
    bad = total - statuses.get(200, 0)
    p99 = re.search(r"99% in ([\d.]+) secs", hey)
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", hey)
    after_file = raw / f"faults-{name}.out-after"
    after = after_file.read_text().strip() if after_file.exists() else ""
    after = f"{after} s" if after and after != "never" else (after or "-")
    if name == "half-failing":
        after = "- (ejection off)"
    rows.append(
        f"| {name} | {total:,} | {bad} | {bad / max(total, 1) * 100:.3f} % | "
        f"{metric(metrics, 'circuit_breaker_transitions_total', state='open'):.0f} | "
        f"{metric(metrics, 'upstream_retry_budget_exhausted_total'):.0f} | "
        f"{metric(metrics, 'upstream_retries_total'):.0f} | {after} | "
        f"{p99.group(1) if p99 else '-'} | {slowest.group(1) if slowest else '-'} |"
    )
text = "\n".join(rows) + (
    f"\n\nPotok: {source}. hey -z {seconds}s -c 50 -q 10 per scenario; the fault at {at} s."
    " Goals (issue 13):"
    " kill/freeze <= 0.1 % errors, half-failing < 0.01 %, breaker never opened.\n"
)
print(text)
out.write_text("# Resilience under faults (latest run)\n\n" + text)
PY
}
