#!/usr/bin/env bash
# JWT cost on the hot path, in one run: an open route vs a JWT-protected route
# with HS256 and with RS256 (static keys, the verified-token cache on), all
# served by the same Potok process against the same nginx upstream.
#
#     bench/jwt.sh                   # 3 rounds of 10 s per route (~2 min)
#     QUICK=1 bench/jwt.sh           # 1 round of 3 s (smoke test)
#     POTOK_SRC=/path/to/src bench/jwt.sh   # measure another checkout's src/
#     PROFILE=1 QUICK=1 bench/jwt.sh # then py-spy each route for 8 s (root; NATIVE=1 for C frames)
#
# Layout as bench/proxy.sh: Potok on core 0, upstream nginx and wrk on core 1.
# The open route is measured twice: with a bare request, and with the very request
# the JWT routes get (the same Authorization header, passed through unchecked). The
# second isolates what the auth_jwt policy costs; the first adds what carrying a
# ~300-byte token costs any proxy (parsing it, forwarding it, plus the identity headers).
# Per round the routes run back to back so drift of the machine hits them alike.
# HS256 is also measured with `forward_token: false` (the token stops at the gateway),
# and RS256 beside an open route carrying the (longer) RS256 token. Each request carries the same token
# (a client reusing its access token, the cache's case). Raw wrk outputs go to
# bench/results/jwt-raw-latest/, the table to stdout and bench/results/jwt-latest.md.
set -euo pipefail
# Own work dir and upstream port, so this can start while bench/proxy.sh's are in use.
WORK=${WORK:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.work/jwt}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
UPSTREAM_PORT=${JWT_UPSTREAM_PORT:-18181}

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=1
    DURATION=3
fi
((DURATION <= 10)) || die "DURATION is capped at 10 s per run"
JWT_PORT=18095
RAW=$RESULTS/jwt-raw-latest
if [[ -n ${POTOK_SRC:-} ]]; then
    export PYTHONPATH="$POTOK_SRC${PYTHONPATH:+:$PYTHONPATH}"
fi

trap cleanup EXIT
ensure_tools
mkdir -p "$WORK/jwt" "$WORK/upstream"
rm -rf "$RAW"
mkdir -p "$RAW"

# Keys and tokens: an HMAC secret, an RSA key pair, one long-lived token each.
"$PYTHON" - "$WORK/jwt" <<'EOF'
import json, sys, time
from pathlib import Path
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

out = Path(sys.argv[1])
secret = "bench-secret-" + "x" * 40
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
public = key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()
now = int(time.time())
claims = {"iss": "https://idp.bench", "aud": "bench", "sub": "user-1", "iat": now,
          "exp": now + 3600, "roles": ["reader"], "org": "acme"}
(out / "hs.token").write_text(jwt.encode(claims, secret, "HS256", headers={"kid": "hs"}))
(out / "rs.token").write_text(jwt.encode(claims, key, "RS256", headers={"kid": "rs"}))
(out / "keys.json").write_text(json.dumps({"secret": secret, "public": public}))
EOF

"$PYTHON" - "$WORK/jwt" "$JWT_PORT" "$UPSTREAM_PORT" <<'EOF'
import json, sys
from pathlib import Path
import yaml

out, port, upstream = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
keys = json.loads((out / "keys.json").read_text())
issuer = {
    "issuer": "https://idp.bench",
    "audiences": ["bench"],
    "keys": [
        {"kid": "hs", "algorithm": "HS256", "secret": keys["secret"]},
        {"kid": "rs", "algorithm": "RS256", "public_key": keys["public"]},
    ],
}
config = {
    "server": {"host": "127.0.0.1", "port": port, "timeouts": {"shutdown_grace": "2s"}},
    "logging": {"level": "warning", "access_log": {"enabled": False}},
    "metrics": {"enabled": False},
    "services": {"bench": {"targets": [f"http://127.0.0.1:{upstream}"]}},
    "routes": [
        {"name": "hs256", "match": {"prefix": "/hs"}, "service": "bench",
         "policies": {"auth_jwt": {"issuers": [issuer]}}},
        {"name": "hs256_sealed", "match": {"prefix": "/hss"}, "service": "bench",
         "policies": {"auth_jwt": {"issuers": [issuer], "forward_token": False}}},
        {"name": "rs256", "match": {"prefix": "/rs"}, "service": "bench",
         "policies": {"auth_jwt": {"issuers": [issuer]}}},
        {"name": "open", "match": {"prefix": "/open"}, "service": "bench"},
    ],
}
(out / "potok.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
EOF
"$POTOK" check --config "$WORK/jwt/potok.yaml" >/dev/null || die "potok rejects the bench config"

start_upstream
check_port_free "$JWT_PORT"
start_potok "$WORK/jwt/potok.yaml" "$PROXY_CPU" "$WORK/jwt/stdout.log"
PID=$LAST_PID
wait_http "$JWT_PORT" "$PID" /open/x
log "potok (pid $PID, core $PROXY_CPU) on 127.0.0.1:$JWT_PORT"

HS=$(cat "$WORK/jwt/hs.token")
RS=$(cat "$WORK/jwt/rs.token")
base="http://127.0.0.1:$JWT_PORT"
for check in "/hs/x:$HS" "/hss/x:$HS" "/rs/x:$RS"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${check#*:}" "$base${check%%:*}")
    [[ $code == 200 ]] || die "GET ${check%%:*} with its token answered $code"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/hs/x")
[[ $code == 401 ]] || die "GET /hs/x without a token answered $code, expected 401"

# CPU seconds of the Potok process per run (÷ requests = CPU µs per request, which barely
# moves when the machine is disturbed, unlike req/s) and the CPU other processes used.
CPUWATCH=$BENCH_DIR/cpuwatch.py
QUIET_THRESHOLD=${QUIET_THRESHOLD:-10}
QUIET_WAIT=${QUIET_WAIT:-30}
run() {  # NAME PATH TOKEN ROUND
    local name=$1 path=$2 token=$3 round=$4 header=() out
    [[ -z $token ]] || header=(-H "Authorization: Bearer $token")
    out=$RAW/$name.wrk50.$round
    "$PYTHON" "$CPUWATCH" quiet $$ --threshold "$QUIET_THRESHOLD" --max-wait "$QUIET_WAIT" >/dev/null || true
    "$PYTHON" "$CPUWATCH" snapshot $$ --proc "$PID" >"$WORK/jwt/proc.before"
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" --latency "${header[@]}" \
        "$base$path" >"$out.txt" 2>&1 || true
    "$PYTHON" "$CPUWATCH" snapshot $$ --proc "$PID" >"$WORK/jwt/proc.after"
    "$PYTHON" "$CPUWATCH" proc-seconds "$WORK/jwt/proc.before" "$WORK/jwt/proc.after" >"$out.cpu"
    "$PYTHON" "$CPUWATCH" foreign "$WORK/jwt/proc.before" "$WORK/jwt/proc.after" >"$out.foreign"
}

# name:path:token. Each JWT route has an open route with the very same request beside it.
SPECS=(
    "open:/open/x:" "open_token:/open/x:$HS" "hs256:/hs/x:$HS" "hs256_sealed:/hss/x:$HS"
    "open_rs_token:/open/x:$RS" "rs256:/rs/x:$RS"
)
log "warm-up ${WARMUP}s per route"
for spec in "${SPECS[@]}"; do
    IFS=: read -r name path token <<<"$spec"
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${WARMUP}s" ${token:+-H "Authorization: Bearer $token"} \
        "$base$path" >/dev/null 2>&1 || true
done
for round in $(seq 1 "$ROUNDS"); do
    for spec in "${SPECS[@]}"; do
        IFS=: read -r name path token <<<"$spec"
        log "round $round/$ROUNDS $name (${DURATION}s)"
        run "$name" "$path" "$token" "$round"
    done
done
kill -0 "$PID" 2>/dev/null || die "potok exited during the benchmark"

# PROFILE=1: where each route's CPU goes, py-spy at 200 Hz for 8 s under wrk -c50.
if [[ ${PROFILE:-0} == 1 ]]; then
    [[ $(id -u) == 0 ]] || die "py-spy needs root to attach to a process"
    for spec in "${SPECS[@]}"; do
        IFS=: read -r name path token <<<"$spec"
        prof=$RESULTS/jwt-profile-$name
        log "profiling $name: py-spy 8 s under wrk -c50"
        "$PYTHON" "$CPUWATCH" quiet $$ --threshold "$QUIET_THRESHOLD" --max-wait "$QUIET_WAIT" >/dev/null || true
        taskset -c "$LOAD_CPU" wrk -t1 -c50 -d9s ${token:+-H "Authorization: Bearer $token"} \
            "$base$path" >"$prof.wrk.txt" 2>&1 &
        wrk_pid=$!
        sleep 0.5
        "$VENV/bin/py-spy" record --pid "$PID" --rate 200 --duration 8 --format raw \
            ${NATIVE:+--native} --output "$prof.collapsed.txt" >"$prof.pyspy.log" 2>&1 ||
            die "py-spy failed (see $prof.pyspy.log)"
        wait "$wrk_pid" || true
        "$PYTHON" "$BENCH_DIR/stacks.py" "$prof.collapsed.txt" --top 25 --markdown "$prof.md" >/dev/null
    done
fi
cat >"$RAW/meta.env" <<EOF
ROUNDS=$ROUNDS
DURATION=$DURATION
WARMUP=$WARMUP
QUICK=${QUICK:-0}
PROXY_CPU=$PROXY_CPU
LOAD_CPU=$LOAD_CPU
UPSTREAM_CPU=$UPSTREAM_CPU
EOF
"$PYTHON" "$BENCH_DIR/jwt_report.py" --raw "$RAW" --out "$RESULTS/jwt-latest.md"
