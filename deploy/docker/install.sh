#!/bin/sh
# The image's install steps, in one script so tests/integration/test_packaging.py runs
# exactly what the Dockerfile runs (in a fresh venv on the test machine).
#
#   install.sh lock VENV        create VENV and install requirements/runtime.txt into it:
#                               exact versions, every file checked against its hash
#   install.sh app VENV         build potok's wheel from this source tree (no download:
#                               the build backend is in the lock) and install it, no deps;
#                               a C compiler first if there is none (the tracer's C
#                               encoders: the image must have them)
#
# Run from the root of the source tree. Two steps, so the image's lock layer is reused
# while only the source changes.
set -eu

step=${1:?usage: install.sh lock|app VENV}
venv=${2:?usage: install.sh lock|app VENV}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

case "$step" in
  lock)
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --require-hashes --no-deps -r requirements/runtime.txt
    ;;
  app)
    # setup.py builds the tracer's encoders (C) when it finds a compiler; a slim image
    # has none. Installed in the build stage only: the runtime stage copies the venv.
    if ! command -v cc >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
      rm -rf /var/lib/apt/lists/*
    fi
    wheels=$(mktemp -d)
    "$venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" .
    "$venv/bin/python" -m pip install -q --no-deps "$wheels"/potok-*.whl
    rm -rf "$wheels"
    "$venv/bin/python" -c 'from potok.observability.tracing import _encode' \
      || { echo "install.sh: the tracer's C encoders were not built" >&2; exit 1; }
    # Every dependency of the installed wheel is satisfied by the lock.
    "$venv/bin/python" -m pip check
    ;;
  *)
    echo "install.sh: unknown step '$step' (lock or app)" >&2
    exit 2
    ;;
esac
