#!/usr/bin/env bash
# TLS termination on loopback: Potok over https vs Potok plain vs nginx with the same
# certificate, protocols and ciphers (Mozilla "intermediate", TLS 1.2+1.3), all proxying
# to the same fast nginx upstream. One command:
#
#     bench/tls.sh                 # 3 rounds of 8 s per measurement (~5 min)
#     QUICK=1 bench/tls.sh         # 1 round of 3 s
#
# Rounds alternate the targets (nginx, Potok plain, Potok https, ...) so a neighbour's
# load lands on all of them alike; the medians are reported. Before each run the script
# waits (at most QUIET_WAIT s) for other processes to calm down (bench/cpuwatch.py).
#
# Per target: keep-alive req/s (wrk -c50) and new connections/s with a full handshake
# each (wrk -c50 -H 'Connection: close': every request a new TCP + TLS connection).
# Layout (2 cores): the server under test on core 0; the upstream nginx and wrk on core 1.
# Goals (issue 16): Potok https keep-alive >= 80 % of Potok plain; Potok handshakes/s
# >= 50 % of nginx's. Raw outputs in bench/results/raw-tls/, the table on stdout and in
# bench/results/tls-latest.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
QUIET_THRESHOLD=${QUIET_THRESHOLD:-10}
QUIET_WAIT=${QUIET_WAIT:-15}
if [[ ${QUICK:-0} == 1 ]]; then
    DURATION=3
    ROUNDS=1
fi
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

NGINX_TLS_PORT=18443
POTOK_PLAIN_PORT=18190
POTOK_TLS_PORT=18444
RAW=$RESULTS/raw-tls

make_certificate() {
    # One ECDSA P-256 leaf for 127.0.0.1/localhost from a throw-away CA (trustme).
    "$PYTHON" - "$WORK/pki" <<'PY'
import pathlib, sys, trustme
d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True)
ca = trustme.CA(); leaf = ca.issue_cert("localhost", "127.0.0.1")
ca.cert_pem.write_to_path(str(d / "ca.pem"))
(d / "cert.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
leaf.private_key_pem.write_to_path(str(d / "key.pem"))
PY
}

start_nginx_tls() {
    local dir=$WORK/nginx-tls
    mkdir -p "$dir/tmp"
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
        listen 127.0.0.1:$NGINX_TLS_PORT ssl backlog=4096;
        ssl_certificate $WORK/pki/cert.pem;
        ssl_certificate_key $WORK/pki/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $CIPHERS;
        ssl_prefer_server_ciphers off;
        ssl_session_tickets on;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    start_nginx nginx-tls "$PROXY_CPU"
    NGINX_PID=$LAST_PID
}

start_potok_both() {
    # One process, two listeners: plain and https (measured one at a time).
    local dir=$WORK/potok
    mkdir -p "$dir"
    cat >"$dir/potok.yaml" <<EOF
server:
  listeners:
    - {host: 127.0.0.1, port: $POTOK_PLAIN_PORT}
    - host: 127.0.0.1
      port: $POTOK_TLS_PORT
      protocol: https
      tls:
        certificates: [{cert: $WORK/pki/cert.pem, key: $WORK/pki/key.pem}]
  timeouts: {shutdown_grace: 2s}
logging: {level: warning, access_log: {enabled: false}}
metrics: {enabled: false}
services:
  bench: {targets: ["http://127.0.0.1:$UPSTREAM_PORT"]}
routes:
  - {name: bench, match: {prefix: /}, service: bench}
EOF
    "$POTOK" check --config "$dir/potok.yaml" >/dev/null || die "potok rejects $dir/potok.yaml"
    start_potok "$dir/potok.yaml" "$PROXY_CPU" "$dir/stdout.log"
    POTOK_PID=$LAST_PID
}

wait_https() {  # PORT PID
    local i
    for i in $(seq 1 150); do
        curl -s -o /dev/null --cacert "$WORK/pki/ca.pem" -m 1 "https://127.0.0.1:$1/" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# run NAME URL KIND ROUND: KIND keepalive | close
run() {
    local name=$1 url=$2 kind=$3 round=$4 out=$RAW/$1.$3.$4.txt
    local extra=()
    [[ $kind == close ]] && extra=(-H "Connection: close")
    "$PYTHON" "$BENCH_DIR/cpuwatch.py" quiet $$ --threshold "$QUIET_THRESHOLD" --max-wait "$QUIET_WAIT" >"$out.foreign" || true
    log "$name $kind round $round: ${DURATION}s on $url (others used $(cat "$out.foreign") % CPU before)"
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" "${extra[@]}" "$url" >/dev/null 2>&1 || true
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "${extra[@]}" "$url" >"$out" 2>&1 || true
}

# Median over the rounds of a wrk figure: rps NAME KIND, p99 NAME KIND.
_median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'; }
rps() { cat "$RAW/$1.$2".*.txt 2>/dev/null | awk '/Requests\/sec/ {print int($2)}' | _median; }
p99() {
    cat "$RAW/$1.$2".*.txt 2>/dev/null | awk '$1 == "99%" { v = $2; if (v ~ /ms$/) v = v + 0; else if (v ~ /us$/) v = v / 1000; else if (v ~ /s$/) v = v * 1000; print v }' \
        | _median | awk '{ printf "%.1f ms", $1 }'
}
errors() { cat "$RAW/$1.$2".*.txt 2>/dev/null | grep -E 'Socket errors|Non-2xx' | tr -s ' ' | paste -sd';' - || true; }

trap cleanup EXIT
ensure_tools
rm -rf "$WORK" "$RAW"
mkdir -p "$WORK" "$RAW"
prepare_potok
make_certificate
start_upstream

start_nginx_tls
wait_https "$NGINX_TLS_PORT" "$NGINX_PID" || die "nginx https did not start (see $WORK/nginx-tls/error.log)"
start_potok_both
wait_https "$POTOK_TLS_PORT" "$POTOK_PID" || die "potok https did not start (see $WORK/potok/stdout.log)"
# What a client negotiates (for the record): protocol and cipher.
negotiated=$(curl -sv --cacert "$WORK/pki/ca.pem" "https://127.0.0.1:$POTOK_TLS_PORT/" 2>&1 \
    | grep -oE 'SSL connection using [^ ]+ / [^ ]+' | head -n1 || true)
# Both servers stay up; each is pinned to core 0 but only one is loaded at a time.
for round in $(seq 1 "$ROUNDS"); do
    for kind in keepalive close; do
        run nginx-https "https://127.0.0.1:$NGINX_TLS_PORT/" "$kind" "$round"
        run potok-plain "http://127.0.0.1:$POTOK_PLAIN_PORT/" "$kind" "$round"
        run potok-https "https://127.0.0.1:$POTOK_TLS_PORT/" "$kind" "$round"
    done
done
stop_pid "$NGINX_PID"
stop_pid "$POTOK_PID"

{
    echo "# TLS termination ($(date -u +%Y-%m-%dT%H:%MZ), medians of $ROUNDS rounds of ${DURATION}s, wrk -t1 -c50, server on core $PROXY_CPU, load average $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "Potok: $POTOK_SOURCE. Certificate: ECDSA P-256 (trustme); $negotiated."
    echo
    echo "| target | keep-alive req/s | p99 | new connections/s (Connection: close) | p99 |"
    echo "|---|---:|---:|---:|---:|"
    for name in nginx-https potok-plain potok-https; do
        echo "| $name | $(rps "$name" keepalive) | $(p99 "$name" keepalive) | $(rps "$name" close) | $(p99 "$name" close) |"
    done
    echo
    ka_share=$(awk -v a="$(rps potok-https keepalive)" -v b="$(rps potok-plain keepalive)" 'BEGIN { printf "%.0f", b ? 100*a/b : 0 }')
    hs_share=$(awk -v a="$(rps potok-https close)" -v b="$(rps nginx-https close)" 'BEGIN { printf "%.0f", b ? 100*a/b : 0 }')
    echo "- Potok https keep-alive = **${ka_share} %** of Potok plain (goal >= 80 %)."
    echo "- Potok https handshakes/s = **${hs_share} %** of nginx's (goal >= 50 %)."
    for name in nginx-https potok-plain potok-https; do
        for kind in keepalive close; do
            e=$(errors "$name" "$kind")
            [[ -z $e ]] || echo "- $name $kind: $e"
        done
    done
} | tee "$RESULTS/tls-latest.md"
