# Shared helpers for the bench/*.sh scripts (sourced, not run).
#
# Everything runs on 127.0.0.1 only. Every server started here is our own
# instance with its own config, pid and logs under $WORK; nothing touches the
# system nginx/caddy config or services. Callers must `trap cleanup EXIT`.
#
# Set WORK to a directory of your own under bench/.work/ *before* sourcing
# (bench/.work/<script name> by default); scripts may wipe their WORK.
#
# Sourcing this file takes a machine-wide benchmark lock (bench/.work/.lock):
# two benchmarks on a 2-core machine would only measure each other. A second
# benchmark waits (BENCH_LOCK_WAIT s, default 1800) for the first to finish.
# BENCH_NO_LOCK=1 skips the lock.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
_caller=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
WORK=${WORK:-$BENCH_DIR/.work/$_caller}
RESULTS=$BENCH_DIR/results
VENV=${VENV:-$ROOT/.venv}
POTOK=$VENV/bin/potok
PYTHON=$VENV/bin/python

UPSTREAM_PORT=${UPSTREAM_PORT:-18081}

# Cores: the proxy under test gets core 0; the upstream and the load generator
# share core 1. Override with PROXY_CPU / LOAD_CPU on bigger machines.
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
UPSTREAM_CPU=${UPSTREAM_CPU:-1}

STARTED_PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The lock is an flock on a file descriptor of this shell; long-lived children
# (nginx, caddy, potok) are started with that descriptor closed, so the lock
# goes away with the script even if one of them were left behind.
BENCH_LOCK_FD=
bench_lock() {
    local lockdir=$BENCH_DIR/.work
    mkdir -p "$lockdir"
    exec {BENCH_LOCK_FD}>>"$lockdir/.lock"
    if ! flock -n "$BENCH_LOCK_FD"; then
        log "another benchmark is running ($(cat "$lockdir/.lock.owner" 2>/dev/null || echo '?')); waiting up to ${BENCH_LOCK_WAIT:-1800} s"
        flock -w "${BENCH_LOCK_WAIT:-1800}" "$BENCH_LOCK_FD" || die "gave up waiting for the benchmark lock"
    fi
    echo "pid $$ ($_caller.sh), since $(date +%H:%M:%S)" >"$lockdir/.lock.owner"
}
[[ ${BENCH_NO_LOCK:-0} == 1 ]] || bench_lock

# spawn_bg OUTFILE CMD...: start a server in the background, output to OUTFILE,
# with the lock descriptor closed. LAST_PID is CMD's own pid (taskset execs the
# program, so it is the server's pid); it is stopped by `cleanup`.
spawn_bg() {
    local out=$1
    shift
    if [[ -n $BENCH_LOCK_FD ]]; then
        "$@" >"$out" 2>&1 {BENCH_LOCK_FD}>&- &
    else
        "$@" >"$out" 2>&1 &
    fi
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# Install whatever of wrk, nginx, caddy, hey is missing (Debian packages).
# `nginx` is the package: nginx-light is only a transitional package on Debian 12.
# Debian's policy-rc.d / no-systemd setup means the system services are not started.
ensure_tools() {
    local missing=() tool
    for tool in wrk nginx caddy hey; do
        command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        log "installing from Debian: ${missing[*]}"
        [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    [[ -x $POTOK ]] || die "$POTOK not found: create the venv and 'pip install -e .' first"
    PATH=$PATH:/usr/sbin
}

# Wait until GET http://127.0.0.1:PORT/ answers 200 (max ~15 s); returns 1
# (with a message on stderr) if the process exits or nothing answers.
wait_http() {  # PORT [PID] [PATH]
    local port=$1 pid=${2:-} path=${3:-/} i code=
    for i in $(seq 1 150); do
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$port$path" || true)
        [[ $code == 200 ]] && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid for port $port exited during start-up"
            return 1
        fi
        sleep 0.1
    done
    log "nothing answering 200 on 127.0.0.1:$port after 15 s (last status: ${code:-none})"
    return 1
}

# Which Potok is measured. Default: the working tree (the editable install).
# POTOK_REF=<git ref>: a snapshot of that commit's src/ under $WORK, put first
# on PYTHONPATH, so edits others make to the working tree meanwhile do not
# change the code under test. Sets POTOK_SOURCE (a description).
prepare_potok() {
    if [[ -n ${POTOK_REF:-} ]]; then
        local commit
        commit=$(git -C "$ROOT" rev-parse --verify --quiet "$POTOK_REF^{commit}") \
            || die "POTOK_REF=$POTOK_REF is not a commit"
        rm -rf "$WORK/potok-src"
        mkdir -p "$WORK/potok-src"
        git -C "$ROOT" archive "$commit" src | tar -x -C "$WORK/potok-src"
        if git -C "$ROOT" cat-file -e "$commit:setup.py" 2>/dev/null; then  # C extensions
            git -C "$ROOT" archive "$commit" setup.py pyproject.toml README.md \
                | tar -x -C "$WORK/potok-src"
            (cd "$WORK/potok-src" && "$PYTHON" setup.py -q build_ext --inplace >build.log 2>&1) \
                || die "building the snapshot's C extensions failed (see $WORK/potok-src/build.log)"
        fi
        export PYTHONPATH="$WORK/potok-src/src${PYTHONPATH:+:$PYTHONPATH}"
        POTOK_SOURCE="commit $(git -C "$ROOT" rev-parse --short "$commit") (POTOK_REF=$POTOK_REF, snapshot)"
    else
        local dirty=""
        [[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no -- src 2>/dev/null) ]] \
            || dirty=" + uncommitted changes in src/"
        POTOK_SOURCE="working tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
        local source built
        for source in "$ROOT"/src/potok/observability/tracing/_encode.c; do
            built=$(ls "${source%.c}".cpython-*.so 2>/dev/null | head -1)
            [[ -n $built && $built -nt $source ]] \
                || die "${source#"$ROOT"/} is not built or changed since: run pip install -e . again"
        done
    fi
    local where
    where=$("$PYTHON" -c 'import potok; print(potok.__file__)') || die "cannot import potok"
    local encoders
    encoders=$("$PYTHON" -c 'from potok.observability.tracing import encode; print("C" if encode.NATIVE else "Python")')
    log "Potok under test: $POTOK_SOURCE ($where; tracing encoders in $encoders)"
}

# Fail early if a port is already taken by something else.
check_port_free() {
    local port=$1
    if curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/"; then
        die "127.0.0.1:$port is already in use; stop whatever listens there"
    fi
}

# Common nginx config head: own pid, logs and temp dirs under the instance dir.
_nginx_head() {
    local dir=$1
    cat <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
EOF
}

_nginx_http_common() {
    local dir=$1
    cat <<EOF
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 100000;
    keepalive_timeout 75s;
EOF
}

# start_nginx NAME CPU  (reads the config from $WORK/NAME/nginx.conf)
# Prints nothing; sets LAST_PID.
start_nginx() {
    local name=$1 cpu=$2 dir=$WORK/$1
    nginx -t -q -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" \
        || die "nginx config for $name is invalid (see $dir/error.log)"
    spawn_bg "$dir/stdout.log" taskset -c "$cpu" nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf"
}

start_upstream() {
    local dir=$WORK/upstream
    mkdir -p "$dir/tmp" "$dir/www"
    check_port_free "$UPSTREAM_PORT"
    # A 4 KiB JSON document (as a static file: with an ETag) for the compress routes.
    python3 - "$dir/www/doc.json" <<'PY'
import json, sys
items = [{"id": i, "symbol": f"SYM{i * 7919 % 10007:05d}", "price": round(100 + i * 1.37 % 50, 2),
          "change": round((i * 31 % 17 - 8) / 3, 3), "volume": i * 104729 % 1000003,
          "open": i % 3 == 0} for i in range(40)]
text = json.dumps({"items": items, "page": 1, "next": "/api/market-data/items?page=2"})
open(sys.argv[1], "w").write(text)  # 4,055 bytes
PY
    {
        _nginx_head "$dir"
        echo "http {"
        _nginx_http_common "$dir"
        cat <<EOF
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        default_type application/json;
        location / { return 200 '{"ok":true,"service":"bench"}'; }
        location ~ ^/(cmp|j4k)/ { root $dir/www; try_files /doc.json =404; }
    }
}
EOF
    } >"$dir/nginx.conf"
    start_nginx upstream "$UPSTREAM_CPU"
    UPSTREAM_PID=$LAST_PID
    wait_http "$UPSTREAM_PORT" "$UPSTREAM_PID" || die "the upstream nginx did not start (see $dir/error.log)"
    log "upstream nginx (pid $UPSTREAM_PID, core $UPSTREAM_CPU) on 127.0.0.1:$UPSTREAM_PORT"
}

# write_potok_config FILE PORT ACCESS_LOG(true|false) METRICS(true|false) [ACCESS_LOG_PATH]
write_potok_config() {
    local file=$1 port=$2 access=$3 metrics=$4 path=${5:--}
    cat >"$file" <<EOF
server:
  host: 127.0.0.1
  port: $port
  timeouts: {shutdown_grace: 2s}
logging:
  level: warning
  access_log: {enabled: $access, path: "$path"}
metrics: {enabled: $metrics}
services:
  bench: {targets: ["http://127.0.0.1:$UPSTREAM_PORT"]}
routes:
  - {name: bench, match: {prefix: /}, service: bench}
EOF
    "$POTOK" check --config "$file" >/dev/null || die "potok rejects $file"
}

# start_potok CONFIG CPU_LIST LOGFILE [extra args...]; sets LAST_PID
start_potok() {
    local config=$1 cpus=$2 logfile=$3
    shift 3
    spawn_bg "$logfile" taskset -c "$cpus" "$POTOK" run --config "$config" "$@"
}

# Stop one process we started: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "pid $pid did not stop after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# The 99th percentile of a `wrk --latency` output file, in ms.
wrk_p99_ms() {
    awk '$1 == "99%" {v = $2; if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; print v}' "$1"
}

# The median of column COLUMN of FILE (numbers, one row a line).
column_median() {  # FILE COLUMN
    sort -g -k"$2","$2" "$1" | awk -v c="$2" '{v[NR] = $c} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
}
