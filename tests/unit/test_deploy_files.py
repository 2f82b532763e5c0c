"""The deployment artefacts refer only to what exists: files, ports, variables, names.

deploy/compose.yaml (with deploy/compose/), deploy/kubernetes/ (rendered with the lock's
kubectl kustomize), the Dockerfile and .dockerignore. Schema validity is .ci/deploy-check's
job (docker-compose config, kubernetes-validate, hadolint); these tests check that the
pieces agree with each other and with Potok: every `${VAR}` has a value, every host:port a
listener, every mounted or copied file a source, and each Potok config passes `potok check`
with exactly the environment its container gets.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml

from potok.cli.main import main as potok_main
from potok.config.loader import load_config
from tests.support.compose import DEPLOY, compose, environment, services

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (DEPLOY / "kubernetes" / "overlays").iterdir() if p.is_dir())
OWN_PROBES = {"/api/v1/health/liveness", "/api/v1/health/readiness"}
POTOK_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")  # config/loader.py's syntax


def potok_check(config: Path, env: dict[str, str]) -> tuple[int, str]:
    """`potok check` (its CLI entry, in this process) with only the container's environment:
    exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, env, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = potok_main(["check", "--config", str(config)])
    return code, out.getvalue() + err.getvalue()


def potok_vars(text: str) -> dict[str, str | None]:
    """${VAR} -> None (required) or its default, for every variable a Potok config reads."""
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for name, default in POTOK_VAR.findall(line):
            found[name] = default or found.get(name)
    return found


# -- docker compose -----------------------------------------------------------------------


def listens(name: str) -> set[int]:
    """Ports the compose service declares it listens on (`expose`)."""
    return {int(port) for port in services()[name].get("expose") or ()}


def assert_listener(host: str, port: int, where: str) -> None:
    assert host in services(), f"{where}: {host} is not a compose service"
    assert port in listens(host), f"{where}: {host} does not listen on {port} ({listens(host)})"


def potok_instances() -> list[str]:
    return [name for name in services() if re.fullmatch(r"potok-\d+", name)]


def test_every_compose_variable_has_a_default():
    assert compose()["_missing"] == [], "set these in the compose file with ${VAR:-default}"


def test_three_potok_instances_behind_haproxy_with_shared_stores():
    assert len(potok_instances()) == 3
    assert services()["lb"]["image"].startswith("haproxy:")
    for store in ("redis", "nats", "postgres", "admin", "state", "task"):
        assert store in services()
    assert "-js" in services()["nats"]["command"]  # JetStream: the bus keeps history


def test_every_mounted_file_and_build_context_exists():
    named = set(compose().get("volumes") or {})
    for name, service in services().items():
        for volume in service.get("volumes") or ():
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
        for dependency in service.get("depends_on") or ():
            assert dependency in services(), f"{name} depends on unknown {dependency}"


def test_every_host_and_port_referenced_has_a_listener():
    haproxy = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    backends = re.findall(r"^\s*server\s+\S+\s+([\w.-]+):(\d+)", haproxy, re.MULTILINE)
    assert sorted(host for host, _ in backends) == sorted(potok_instances())
    for host, port in backends:
        assert_listener(host, int(port), "haproxy.cfg")
    (bind,) = re.findall(r"^\s*bind\s+\S*:(\d+)", haproxy, re.MULTILINE)
    assert int(bind) in listens("lb")
    for mapping in services()["lb"]["ports"]:
        assert int(str(mapping).rsplit(":", 1)[1]) == int(bind)
    for name in ("admin", "state", "task"):
        command = services()[name]["command"]
        assert int(command[command.index("--port") + 1]) in listens(name)
    events = urlsplit(environment(services()["task"])["POTOK_EVENTS_URL"])
    assert_listener(events.hostname or "", events.port or 80, "task: POTOK_EVENTS_URL")


def compose_potok_config() -> Path:
    volumes = services()["potok-1"]["volumes"]
    (mount,) = [v for v in volumes if v.split(":")[1] == "/etc/potok/potok.yaml"]
    return DEPLOY / mount.split(":")[0]


def test_the_potok_config_passes_potok_check_with_each_instances_environment():
    environments: dict[tuple[tuple[str, str], ...], str] = {}
    for name in [*potok_instances(), "potok-init"]:
        env = environment(services()[name])
        assert env["POTOK_CONFIG"] == "/etc/potok/potok.yaml"
        environments.setdefault(tuple(sorted(env.items())), name)
    for env_items, name in environments.items():  # identical instances are checked once
        code, output = potok_check(compose_potok_config(), dict(env_items))
        assert code == 0, f"{name}: {output}"


def test_the_potok_config_reaches_only_compose_services_on_their_ports():
    env = environment(services()["potok-1"])
    config = load_config(compose_potok_config(), env)
    assert config.server.port in listens("potok-1")
    urls = [t.url for s in config.services.values() for t in s.targets]
    assert config.redis is not None and config.realtime is not None
    urls += [config.redis.url, config.database.url, *config.realtime.bus.nats.servers]
    for url in urls:
        parts = urlsplit(url)
        assert_listener(parts.hostname or "", parts.port or 80, f"potok.yaml: {url}")
    # Several instances: everything they must agree on is shared.
    assert config.policies.rate_limit is not None
    assert config.policies.rate_limit.store == "redis"
    assert config.auth.revocation.backend == "redis"
    assert config.realtime.bus.backend == "nats"
    assert config.database.url.startswith("postgresql://")
    # Compose waits past the drain before it kills.
    grace = services()["potok-1"]["stop_grace_period"]
    drain = config.server.timeouts.shutdown_grace + config.server.timeouts.shutdown_delay
    assert int(grace.rstrip("s")) > drain


def test_every_variable_of_the_potok_config_is_set_by_compose():
    text = compose_potok_config().read_text()
    for name in potok_instances():
        env = environment(services()[name])
        required = [var for var, default in potok_vars(text).items() if default is None]
        assert [var for var in required if var not in env] == []


def test_demo_services_get_the_keys_the_gateway_sends():
    gateway = environment(services()["potok-1"])
    for name in ("admin", "state", "task"):
        key = f"{name.upper()}_SERVICE_API_KEY"
        assert environment(services()[name])[key] == gateway[key]
    task = environment(services()["task"])
    assert task["POTOK_EVENTS_KEY"] == gateway["TASK_EVENTS_KEY"]


# -- Kubernetes ---------------------------------------------------------------------------


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = Path(sys.executable).parent / "kubectl"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(overlay: str, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for doc in rendered(overlay)
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def gateway(overlay: str) -> dict[str, Any]:
    (deployment,) = [
        d
        for d in find(overlay, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "gateway"
    ]
    return deployment


def container_env(overlay: str, container: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets, secrets included (prod's Secret comes from outside
    the repo: its keys get stand-in values of the right shape)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or ():
        (config_map,) = find(overlay, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for item in container.get("env") or ():
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secrets = find(overlay, "Secret", ref["name"])
        if secrets:
            data = secrets[0].get("data", {})
            assert ref["key"] in data, f"{overlay}: secret {ref['name']} lacks {ref['key']}"
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
        else:
            assert overlay == "prod", f"{overlay}: no Secret {ref['name']}"
            env[item["name"]] = stand_in(ref["key"])
    return env


def stand_in(key: str) -> str:
    if key.endswith("DATABASE_URL"):
        return "postgresql://potok:secret@postgres.prod.internal:5432/potok"
    # A secret potok check accepts: not one repeated character (the key strength check).
    return f"stand-in-{key.lower()}-0123456789abcdefghijklmnop"


def mounted_config(overlay: str, tmp_path: Path) -> Path:
    spec = gateway(overlay)["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    (config_map,) = find(overlay, "ConfigMap", volume["configMap"]["name"])
    path = tmp_path / f"{overlay}-potok.yaml"
    path.write_text(config_map["data"]["potok.yaml"])
    (container,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert container_env(overlay, container)["POTOK_CONFIG"] == (
        f"{mounts[volume['name']]}/potok.yaml"
    )
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_config_map_passes_potok_check_with_the_pods_environment(overlay, tmp_path):
    (container,) = gateway(overlay)["spec"]["template"]["spec"]["containers"]
    env = container_env(overlay, container)
    config = mounted_config(overlay, tmp_path)
    required = [v for v, d in potok_vars(config.read_text()).items() if d is None]
    assert [v for v in required if v not in env] == []
    code, output = potok_check(config, env)
    assert code == 0, output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_deployment_probes_ports_grace_and_spread(overlay, tmp_path):
    deployment = gateway(overlay)
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = container_env(overlay, container)
    config = load_config(mounted_config(overlay, tmp_path), env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.server.port
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/api/v1/health/liveness"
    assert probes["readinessProbe"]["path"] == "/api/v1/health/readiness"
    assert all(p["port"] in ports for p in probes.values())
    timeouts = config.server.timeouts
    assert pod["spec"]["terminationGracePeriodSeconds"] > (
        timeouts.shutdown_delay + timeouts.shutdown_grace
    )
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation needs it
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    terms = pod["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    for term in terms:
        selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_service_hpa_pdb_and_monitor_point_at_the_gateway(overlay):
    deployment = gateway(overlay)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    (service,) = find(overlay, "Service", "potok")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    (hpa,) = find(overlay, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    (pdb,) = find(overlay, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for monitor in find(overlay, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports
            assert endpoint["path"] == "/api/v1/metrics"


def test_k8s_prod_has_the_service_monitor_and_no_secret_and_dev_has_its_stores():
    assert find("prod", "ServiceMonitor")
    assert not find("prod", "Secret")  # an apply never overwrites the real one
    for store in ("redis", "nats", "postgres"):
        assert find("dev", "Service", store)
    assert not any(find("prod", "Service", store) for store in ("redis", "nats", "postgres"))


def test_k8s_dev_upstreams_are_headless_services_on_the_configured_ports(tmp_path):
    (container,) = gateway("dev")["spec"]["template"]["spec"]["containers"]
    config = load_config(mounted_config("dev", tmp_path), container_env("dev", container))
    urls = [t.url for s in config.services.values() for t in s.targets]
    assert config.redis is not None and config.realtime is not None
    stores = [config.redis.url, config.database.url, *config.realtime.bus.nats.servers]
    for url in urls + stores:
        parts = urlsplit(url)
        (service,) = find("dev", "Service", parts.hostname)
        assert parts.port in {p["port"] for p in service["spec"]["ports"]}, url
        if url in urls:
            assert service["spec"]["clusterIP"] == "None"  # every pod a target (DNS discovery)
    for service in config.services.values():
        assert service.dns is not None
    # The task service reports its events to the gateway's Service.
    (task,) = find("dev", "Deployment", "task")
    (container,) = task["spec"]["template"]["spec"]["containers"]
    events = urlsplit(next(e["value"] for e in container["env"] if e["name"] == "POTOK_EVENTS_URL"))
    (gateway_service,) = find("dev", "Service", events.hostname)
    assert (events.port or 80) in {p["port"] for p in gateway_service["spec"]["ports"]}
    assert events.path == "/api/v1/events"


# -- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerignore_keeps(path: str) -> bool:
    """Whether the build context has `path`: the last .dockerignore pattern matching it, or
    one of its folders, decides ('!' re-includes)."""
    kept = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        regex = re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            kept = negate
    return kept


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context():
    copies = [args for op, args in dockerfile_instructions() if op == "COPY"]
    sources = [s for args in copies if "--from" not in args for s in args.split()[:-1]]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert dockerignore_keeps(relative), f"{relative} is excluded by .dockerignore"
    assert not dockerignore_keeps(".venv/bin/python")
    assert not dockerignore_keeps("tests/conftest.py")


def test_the_image_runs_potok_as_a_non_root_user_with_a_liveness_healthcheck():
    instructions = dockerfile_instructions()
    ops = [op for op, _ in instructions]
    assert ops.count("FROM") >= 2  # multi-stage
    user = [args for op, args in instructions if op == "USER"][-1]
    assert not user.startswith(("0", "root"))
    healthcheck = next(args for op, args in instructions if op == "HEALTHCHECK")
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "python" in healthcheck and "POTOK_HEALTH_URL" in healthcheck
    assert any(path in env for path in OWN_PROBES if path.endswith("liveness"))
    entrypoint = next(args for op, args in instructions if op == "ENTRYPOINT")
    assert '"tini"' in entrypoint and '"potok"' in entrypoint
    assert next(args for op, args in instructions if op == "CMD") == '["run"]'
    assert "POTOK_CONFIG=/etc/potok/potok.yaml" in env
