#!/usr/bin/env bash
# Response cache: Potok's `cache` policy beside nginx proxy_cache, against an upstream
# that takes 5 ms per answer. One command:
#
#     bench/cache.sh                 # 5 s per measurement (~2 min)
#     DURATION=10 bench/cache.sh
#
# The proxy under test runs on core 0 (one core, one worker); the upstream (Python,
# asyncio, sleeps 5 ms per request), Redis and wrk share core 1. Paths of the upstream:
#   /hit   Cache-Control: max-age=3600          (after the first request: hits)
#   /miss  Cache-Control: no-store               (every request goes upstream)
#   /swr   max-age=0, stale-while-revalidate     (every request a stale hit; one refresh
#                                                 at a time goes upstream)
# Rows: bare proxy (no cache), Potok memory miss / hit / swr hit, Potok Redis hit, nginx
# proxy (no cache) and nginx proxy_cache hit. (nginx does not cache max-age=0 answers,
# so it has no stale-while-revalidate row.) Table to stdout and
# bench/results/cache-latest.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cleanup EXIT

DURATION=${DURATION:-5}
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
CONNECTIONS=${CONNECTIONS:-50}
# Free ports, chosen now (other benchmarks or services may hold the usual ones).
read -r SLOW_PORT POTOK_PORT NGINX_PORT REDIS_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
ensure_tools
prepare_potok
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"

start_slow_upstream() {
    check_port_free "$SLOW_PORT"
    cat >"$WORK/upstream.py" <<'PY'
import asyncio, sys
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
BODY = b'{"items":[' + b",".join(b'{"id":%d,"v":"x"}' % i for i in range(60)) + b"]}"
HEADS = {
    b"/hit": b"Cache-Control: max-age=3600",
    b"/miss": b"Cache-Control: no-store",
    b"/swr": b'Cache-Control: max-age=0, stale-while-revalidate=3600\r\nETag: "v1"',
}
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            await asyncio.sleep(0.005)
            if b'if-none-match: "v1"' in head.lower():
                writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n' + HEADS[b"/swr"] + b"\r\n\r\n")
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + HEADS.get(path, b"X-No: cache") + b"\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
asyncio.run(main())
PY
    spawn_bg "$WORK/upstream.log" taskset -c "$UPSTREAM_CPU" "$PYTHON" "$WORK/upstream.py" "$SLOW_PORT"
    wait_http "$SLOW_PORT" "$LAST_PID" /hit || die "the 5 ms upstream did not start"
}

start_redis() {
    mkdir -p "$WORK/redis"
    spawn_bg "$WORK/redis/log" taskset -c "$UPSTREAM_CPU" redis-server --bind 127.0.0.1 \
        --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK/redis"
    REDIS_PID=$LAST_PID
    for _ in $(seq 1 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "redis-server did not start"
}

# start_potok_cache NAME CACHE_BLOCK(yaml flow or empty)
start_potok_cache() {
    local name=$1 cache=$2 dir=$WORK/$1
    mkdir -p "$dir"
    check_port_free "$POTOK_PORT"
    local policies=""
    [[ -n $cache ]] && policies="policies: {cache: $cache}"
    cat >"$dir/potok.yaml" <<EOF
server: {host: 127.0.0.1, port: $POTOK_PORT, timeouts: {shutdown_grace: 1s}}
logging: {level: warning, access_log: {enabled: false}}
metrics: {enabled: false}
redis: {url: "redis://127.0.0.1:$REDIS_PORT/0"}
services:
  slow: {targets: ["http://127.0.0.1:$SLOW_PORT"]}
routes:
  - {name: bench, match: {prefix: /}, service: slow, $policies}
EOF
    "$POTOK" check --config "$dir/potok.yaml" >/dev/null || die "potok rejects $dir/potok.yaml"
    start_potok "$dir/potok.yaml" "$PROXY_CPU" "$dir/stdout.log"
    PID=$LAST_PID
    wait_http "$POTOK_PORT" "$PID" /hit || die "potok ($name) did not start"
}

start_nginx_cache() {
    local name=$1 cached=$2 dir=$WORK/$1
    mkdir -p "$dir/tmp" "$dir/cache"
    check_port_free "$NGINX_PORT"
    local cache_lines=""
    if [[ $cached == 1 ]]; then
        cache_lines="proxy_cache bench; proxy_cache_lock on; proxy_cache_use_stale updating; proxy_cache_background_update on;"
    fi
    {
        _nginx_head "$dir"
        echo "http {"
        _nginx_http_common "$dir"
        cat <<EOF
    proxy_cache_path $dir/cache keys_zone=bench:10m max_size=64m;
    upstream slow { server 127.0.0.1:$SLOW_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://slow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            $cache_lines
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    start_nginx "$name" "$PROXY_CPU"
    PID=$LAST_PID
    wait_http "$NGINX_PORT" "$PID" /hit || die "nginx ($name) did not start"
}

# measure LABEL PORT PATH: wrk on core 1, one row of the table
ROWS=()
measure() {
    local label=$1 port=$2 path=$3 out=$WORK/wrk-$1.txt
    curl -s -o /dev/null "http://127.0.0.1:$port$path"
    curl -s -o /dev/null "http://127.0.0.1:$port$path"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port$path" >/dev/null
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:$port$path" >"$out"
    local rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' "$out")
    p50=$(awk '$1 == "50%" {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ')
    ROWS+=("| $label | ${rps%.*} | $p50 | $p99 | ${errors:-} |")
    log "$label: $rps req/s, p50 $p50, p99 $p99 $errors"
}

start_slow_upstream
start_redis

start_potok_cache potok-bare ""
measure "Potok, no cache (bare proxy)" "$POTOK_PORT" /hit
stop_pid "$PID"

start_potok_cache potok-memory "{}"
measure "Potok cache, memory: miss (no-store)" "$POTOK_PORT" /miss
measure "Potok cache, memory: hit" "$POTOK_PORT" /hit
measure "Potok cache, memory: stale-while-revalidate hit" "$POTOK_PORT" /swr
stop_pid "$PID"

start_potok_cache potok-redis "{store: redis}"
measure "Potok cache, Redis: hit" "$POTOK_PORT" /hit
stop_pid "$PID"

start_nginx_cache nginx-proxy 0
measure "nginx proxy, no cache" "$NGINX_PORT" /hit
stop_pid "$PID"

start_nginx_cache nginx-cache 1
measure "nginx proxy_cache: hit" "$NGINX_PORT" /hit
stop_pid "$PID"

{
    echo "Response cache, upstream 5 ms per answer, wrk -t1 -c$CONNECTIONS -d${DURATION}s, proxy on one core ($(date -u +%F))."
    echo "Potok: $POTOK_SOURCE"
    echo
    echo "| setup | req/s | p50 | p99 | errors |"
    echo "|:---|---:|---:|---:|:---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULTS/cache-latest.md"
