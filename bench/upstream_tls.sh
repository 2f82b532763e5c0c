#!/usr/bin/env bash
# What an https:// upstream costs: req/s, p99 and Potok's CPU per request through Potok to
# the same nginx over plain HTTP and over TLS (keep-alive pools on both), and over TLS
# with no pool (max_idle: 0: a TCP connect and a full handshake per request, the price the
# pool saves). One Potok worker on core 0; nginx (one worker, serving both ports with a
# certificate from a throwaway CA) and wrk (keep-alive, plain HTTP to Potok) on core 1.
#
#     bench/upstream_tls.sh                       # 3 rounds of 5 s per case (~1 min)
#     ROUNDS=5 DURATION=8 bench/upstream_tls.sh
#     CASES="http https" bench/upstream_tls.sh
#     UTLS_PORT=18150 UTLS_HTTP_PORT=18151 UTLS_HTTPS_PORT=18152 bench/upstream_tls.sh
#
# Cases run interleaved round by round, so drift on a shared machine hits all alike;
# medians are reported. Table: stdout and bench/results/upstream-tls-latest.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
CONNECTIONS=${CONNECTIONS:-20}
PORT=${UTLS_PORT:-18150}
HTTP_PORT=${UTLS_HTTP_PORT:-18151}
HTTPS_PORT=${UTLS_HTTPS_PORT:-18152}
CASES=${CASES:-"http https https-no-pool"}
# On a shared machine: before each run wait (at most QUIET_WAIT s) until other processes
# use less than QUIET_THRESHOLD % of the CPUs; the table shows what they used meanwhile.
QUIET_THRESHOLD=${QUIET_THRESHOLD:-10}
QUIET_WAIT=${QUIET_WAIT:-20}

for tool in wrk nginx; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] \
        || die "$tool is missing: apt-get install $tool"
done
PATH=$PATH:/usr/sbin
[[ -x $POTOK ]] || die "$POTOK not found: create the venv and 'pip install -e .' first"

trap cleanup EXIT
prepare_potok
rm -rf "$WORK"
mkdir -p "$WORK/nginx/tmp" "$WORK/pki" "$RESULTS"

# A CA and a certificate for "localhost" (ECDSA P-256, trustme's default).
"$PYTHON" - "$WORK/pki" <<'PY'
import sys, trustme
out = sys.argv[1]
ca = trustme.CA()
leaf = ca.issue_cert("localhost", "127.0.0.1")
ca.cert_pem.write_to_path(f"{out}/ca.pem")
leaf.private_key_pem.write_to_path(f"{out}/server.key")
with open(f"{out}/server.pem", "wb") as chain:
    for blob in leaf.cert_chain_pems:
        chain.write(blob.bytes())
PY

check_port_free "$HTTP_PORT"
check_port_free "$HTTPS_PORT"
{
    _nginx_head "$WORK/nginx"
    echo "http {"
    _nginx_http_common "$WORK/nginx"
    cat <<EOF
    server {
        listen 127.0.0.1:$HTTP_PORT backlog=4096;
        listen 127.0.0.1:$HTTPS_PORT ssl backlog=4096;
        ssl_certificate $WORK/pki/server.pem;
        ssl_certificate_key $WORK/pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        default_type application/json;
        location / { return 200 '{"ok":true,"service":"bench"}'; }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"
start_nginx nginx "$UPSTREAM_CPU"
NGINX_PID=$LAST_PID
wait_http "$HTTP_PORT" "$NGINX_PID" || die "nginx did not start (see $WORK/nginx/error.log)"
curl -sf --cacert "$WORK/pki/ca.pem" -o /dev/null "https://localhost:$HTTPS_PORT/" \
    || die "nginx does not answer over TLS (see $WORK/nginx/error.log)"

cat >"$WORK/potok.yaml" <<YAML
server: {host: 127.0.0.1, port: $PORT, workers: 1, timeouts: {shutdown_grace: 2s}}
logging: {level: warning, access_log: {enabled: false}}
metrics: {enabled: true}
services:
  plain: {targets: ["http://127.0.0.1:$HTTP_PORT"]}
  secure:
    targets: ["https://localhost:$HTTPS_PORT"]
    tls: {ca_file: "$WORK/pki/ca.pem"}
  secure-no-pool:
    targets: ["https://localhost:$HTTPS_PORT"]
    tls: {ca_file: "$WORK/pki/ca.pem"}
    pool: {max_idle: 0}
routes:
  - {name: http, match: {prefix: /http/}, service: plain}
  - {name: https, match: {prefix: /https/}, service: secure}
  - {name: https-no-pool, match: {prefix: /https-no-pool/}, service: secure-no-pool}
YAML
"$POTOK" check --config "$WORK/potok.yaml" >/dev/null || die "potok rejects the config"
check_port_free "$PORT"
start_potok "$WORK/potok.yaml" "$PROXY_CPU" "$WORK/potok.log"
PID=$LAST_PID
wait_http "$PORT" "$PID" /https/x || die "potok did not start (see $WORK/potok.log)"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK=$(getconf CLK_TCK)

# wrk's "99%" latency line, in ms.
p99_ms() {
    awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
         f = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1; printf "%.2f", v * f}' "$1"
}

run_case() {  # CASE -> "REQ_PER_S P99_MS US_PER_REQUEST FOREIGN_CPU_PERCENT"
    local before after count errors foreign
    # Wait (at most QUIET_WAIT s) for other processes to calm down; record what they used.
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" quiet $$ --threshold "$QUIET_THRESHOLD" --max-wait "$QUIET_WAIT" >/dev/null
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ >"$WORK/cpu.before"
    before=$(cpu_ticks)
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:$PORT/$1/x" >"$WORK/wrk.txt" 2>&1
    after=$(cpu_ticks)
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" snapshot $$ >"$WORK/cpu.after"
    foreign=$("$PYTHON" "$BENCH_DIR/cpuwatch.py" foreign "$WORK/cpu.before" "$WORK/cpu.after")
    count=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
    errors=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.txt")
    [[ -n $count && -z $errors ]] || die "bad answers for $1 (see $WORK/wrk.txt)"
    awk -v n="$count" -v t="$((after - before))" -v hz="$TICK" -v d="$DURATION" -v p="$(p99_ms "$WORK/wrk.txt")" -v f="$foreign" \
        'BEGIN {printf "%.0f %s %.1f %s\n", n / d, p, t / hz * 1e6 / n, f}'
}

for c in $CASES; do
    DURATION=1 run_case "$c" >/dev/null  # warm-up: pools filled, code paths hot
done
: >"$WORK/runs.txt"
for round in $(seq 1 "$ROUNDS"); do
    for c in $CASES; do
        echo "$c $(run_case "$c")" >>"$WORK/runs.txt"
        log "round $round $c: $(tail -1 "$WORK/runs.txt")"
    done
done
connects=$(curl -s "http://127.0.0.1:$PORT/api/v1/metrics" \
    | awk '/^upstream_connect_duration_seconds_count/ {print}' | sort)

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
{
    echo "HTTPS upstream, $(date -u '+%Y-%m-%d %H:%M UTC'): a 29-byte JSON answer from nginx,"
    echo "$ROUNDS x ${DURATION}s per case, wrk -c$CONNECTIONS keep-alive, one Potok worker on core 0,"
    echo "nginx + wrk on core 1; medians. $POTOK_SOURCE."
    echo
    echo "| upstream | req/s | p99 ms | Potok CPU µs per request | req/s vs http | CPU used by others |"
    echo "|:---|---:|---:|---:|---:|---:|"
    base=$(awk '$1 == "http" {print $2}' "$WORK/runs.txt" | median)
    for c in $CASES; do
        rps=$(awk -v c="$c" '$1 == c {print $2}' "$WORK/runs.txt" | median)
        p99=$(awk -v c="$c" '$1 == c {print $3}' "$WORK/runs.txt" | median)
        us=$(awk -v c="$c" '$1 == c {print $4}' "$WORK/runs.txt" | median)
        share=$(awk -v r="$rps" -v b="${base:-0}" 'BEGIN {if (b > 0) printf "%.0f %%", 100 * r / b; else print "-"}')
        others=$(awk -v c="$c" '$1 == c {print $5}' "$WORK/runs.txt" | median)
        echo "| $c | $rps | $p99 | $us | $share | $others % |"
    done
    echo
    echo "New upstream connections opened during the whole run (warm-up included):"
    echo
    echo '```'
    echo "$connects"
    echo '```'
} | tee "$RESULTS/upstream-tls-latest.md"
