# Potok's image: the locked runtime (requirements/runtime.txt, every file hash-checked)
# in a venv, potok's own wheel on top, run as a non-root user under tini.
#
#   docker build -t potok .
#   docker run -p 8080:8080 -v $PWD/potok.yaml:/etc/potok/potok.yaml:ro \
#     -e ADMIN_SERVICE_API_KEY=... potok                  # `potok run`
#   docker run --rm -v $PWD/potok.yaml:/etc/potok/potok.yaml:ro potok check
#
# The config is a mounted file (POTOK_CONFIG); ${VAR} in it comes from the environment.
# Its server.host must be 0.0.0.0 (or ::) to be reachable from outside the container.
# deploy/docker/install.sh holds the install steps; tests/integration/test_packaging.py
# runs this file's build-stage COPY/RUN lines in a fresh venv to show they work.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the venv, then the wheel ------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV VIRTUAL_ENV=/opt/potok
WORKDIR /src
# The lock first: this layer is reused until requirements/runtime.txt changes.
COPY requirements/runtime.txt requirements/runtime.txt
COPY deploy/docker/install.sh deploy/docker/install.sh
RUN deploy/docker/install.sh lock "$VIRTUAL_ENV"
COPY pyproject.toml setup.py README.md ./
COPY src src
RUN deploy/docker/install.sh app "$VIRTUAL_ENV"

# -- runtime: the venv alone, no compiler, no source tree --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# tini is PID 1: it forwards SIGTERM to potok (which drains for server.timeouts.shutdown_grace)
# and reaps any orphaned process, which a Python PID 1 does not do.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --no-log-init --uid 10001 --user-group --home-dir /var/lib/potok \
    --create-home --shell /usr/sbin/nologin potok
COPY --from=build /opt/potok /opt/potok
ENV PATH=/opt/potok/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    POTOK_CONFIG=/etc/potok/potok.yaml \
    POTOK_HEALTH_URL=http://127.0.0.1:8080/api/v1/health/liveness
# Relative paths (a SQLite file, say) land in the potok user's own directory.
WORKDIR /var/lib/potok
USER 10001:10001
EXPOSE 8080
# No curl in a slim image: the venv's Python asks the liveness probe (set POTOK_HEALTH_URL
# if the config listens elsewhere than port 8080).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['POTOK_HEALTH_URL'], timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "potok"]
CMD ["run"]
