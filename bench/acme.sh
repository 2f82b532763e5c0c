#!/usr/bin/env bash
# What automatic certificates cost (bench/acme_bench.py): the route lookup of every other
# request with and without the challenge route (the only per-request difference), a
# challenge answered from storage through the real gateway, and whole orders against
# Pebble validated through the gateway. ~30 s.
#
#     bench/acme.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cleanup EXIT
command -v pebble >/dev/null || die "pebble is needed (apt-get install pebble)"
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"
"$PYTHON" "$BENCH_DIR/acme_bench.py" "$WORK" | tee "$RESULTS/acme-latest.md"
