"""The image's install steps and the wheel, run for real in a fresh venv.

The build stage of the Dockerfile is replayed on this machine: its WORKDIR, ENV, COPY and
RUN lines, in order, in a scratch root (absolute paths land under it), so the lock is
installed with only the files the Dockerfile has copied by then, and the wheel is built
from the copied source with `pip wheel --no-deps --no-build-isolation` and installed with
no dependencies (deploy/docker/install.sh). Then `potok` is run from that venv in an
unrelated folder, to show it is the installed wheel that runs, not the source tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.support.net import free_port, request, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BuiltImage:
    root: Path  # the scratch root the build stage ran in
    venv: Path  # its /opt/potok
    home: Path  # an empty folder to run commands from


def build_stage() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's `AS build` stage (continuations joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stage: list[tuple[str, str]] = []
    inside = False
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        op, args = line.split(None, 1)
        if op.upper() == "FROM":
            inside = args.split()[-1] == "build"
            continue
        if inside:
            stage.append((op.upper(), args))
    return stage


def clean_env() -> dict[str, str]:
    """This machine's environment without anything pointing at the source tree or our venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT))
    )
    return env


def replay(stage: list[tuple[str, str]], root: Path) -> dict[str, str]:
    """Run the stage under `root`; returns its ENV (paths mapped under root)."""

    def under(path: str) -> Path:
        return root / path.lstrip("/")

    workdir = root
    env: dict[str, str] = {}
    for op, args in stage:
        if op == "WORKDIR":
            workdir = under(args) if args.startswith("/") else workdir / args
            workdir.mkdir(parents=True, exist_ok=True)
        elif op == "ENV":
            for pair in shlex.split(args):
                name, value = pair.split("=", 1)
                env[name] = str(under(value)) if value.startswith("/") else value
        elif op == "COPY":
            *sources, destination = shlex.split(args)
            target = under(destination) if destination.startswith("/") else workdir / destination
            for source in sources:
                origin = ROOT / source
                into = target / origin.name if destination.endswith("/") else target
                if origin.is_dir():
                    shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, into)
        elif op == "RUN":
            subprocess.run(
                ["sh", "-c", args],
                cwd=workdir,
                env={**clean_env(), **env},
                check=True,
                capture_output=True,
                timeout=600,
            )
        elif op not in ("ARG", "LABEL"):
            raise AssertionError(f"the test does not know how to replay {op} {args}")
    return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    root = tmp_path_factory.mktemp("image-root")
    try:
        env = replay(build_stage(), root)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{exc.cmd}: {exc.stderr.decode()[-3000:]}") from None
    home = tmp_path_factory.mktemp("elsewhere")
    yield BuiltImage(root, Path(env["VIRTUAL_ENV"]), home)


def run(image: BuiltImage, *command: str) -> str:
    result = subprocess.run(
        [str(image.venv / "bin" / command[0]), *command[1:]],
        cwd=image.home,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_the_build_stage_installs_the_lock_then_the_wheel_with_the_install_script():
    runs = [args for op, args in build_stage() if op == "RUN"]
    assert [shlex.split(r)[:2] for r in runs] == [
        ["deploy/docker/install.sh", "lock"],
        ["deploy/docker/install.sh", "app"],
    ]
    script = (ROOT / "deploy" / "docker" / "install.sh").read_text()
    assert "--require-hashes --no-deps -r requirements/runtime.txt" in script
    assert "pip wheel -q --no-deps --no-build-isolation" in script
    runtime = (ROOT / "Dockerfile").read_text().split(" AS runtime", 1)[1]
    assert "COPY --from=build /opt/potok /opt/potok" in runtime


def test_potok_version_runs_from_the_installed_wheel_not_the_source(image):
    assert run(image, "potok", "--version").strip() == f"potok {project_version()}"
    origin = json.loads(
        run(
            image,
            "python",
            "-c",
            "import importlib.metadata as m, json, potok; "
            "d = m.distribution('potok'); "
            "print(json.dumps({'file': potok.__file__, 'url': d.read_text('direct_url.json')}))",
        )
    )
    assert Path(origin["file"]).is_relative_to(image.venv / "lib")
    assert not Path(origin["file"]).is_relative_to(ROOT)
    direct = json.loads(origin["url"]) if origin["url"] else {}
    assert direct.get("url", "").endswith(".whl")  # installed from a wheel, not editable
    assert "dir_info" not in direct


def test_the_wheel_carries_every_file_of_the_package(image):
    source = ROOT / "src" / "potok"
    (site,) = (image.venv / "lib").glob("python3*/site-packages")
    installed = site / "potok"

    def files(top: Path) -> set[str]:
        return {
            p.relative_to(top).as_posix()
            for p in top.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    assert files(source) - files(installed) == set()
    # Package data is usable from the install: the demo's config ships inside the wheel.
    shown = run(image, "potok", "demo", "--show-config")
    assert shown == (source / "demo" / "potok-demo.yaml").read_text()


def test_the_venv_holds_exactly_the_runtime_lock(image):
    """Every pin whose marker fits this Python, at its version, and nothing else."""
    pins = re.findall(
        r"^([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;\s*([^\\\n]+?))?\s*\\?$",
        (ROOT / "requirements" / "runtime.txt").read_text(),
        re.M,
    )
    assert pins
    locked = {
        canonicalize_name(name): version
        for name, version, marker in pins
        if not marker or Marker(marker).evaluate()
    }
    frozen = json.loads(run(image, "python", "-m", "pip", "list", "--format", "json"))
    installed = {canonicalize_name(p["name"]): p["version"] for p in frozen}
    assert installed.pop("potok") == project_version()
    installed.pop("pip", None)  # comes with the venv
    assert installed == locked


# -- the runtime stage: entry point, PID 1, HEALTHCHECK ---------------------------------


def runtime_stage() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stage: list[tuple[str, str]] = []
    inside = False
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        op, args = line.split(None, 1)
        if op.upper() == "FROM":
            inside = args.split()[-1] == "runtime"
        elif inside:
            stage.append((op.upper(), args))
    return stage


def runtime_env(image: BuiltImage) -> dict[str, str]:
    """The runtime stage's ENV, paths under the scratch root ($PATH from this machine)."""
    env = clean_env()
    for op, args in runtime_stage():
        if op != "ENV":
            continue
        for pair in shlex.split(args):
            name, value = pair.split("=", 1)
            value = value.replace("$PATH", env["PATH"])
            env[name] = ":".join(
                str(image.root / part.lstrip("/")) if part.startswith(("/opt/", "/etc/")) else part
                for part in value.split(":")
            )
    return env


def exec_form(args: str) -> list[str]:
    return list(json.loads(args))


def healthcheck(image: BuiltImage, env: dict[str, str]) -> int:
    args = next(args for op, args in runtime_stage() if op == "HEALTHCHECK")
    command = exec_form(args.split(" CMD ", 1)[1])
    return subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode


def namespace_pids(pid: int) -> list[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("NSpid:"))
    return [int(part) for part in line.split()[1:]]


def test_the_entry_point_runs_potok_under_tini_as_pid_1_and_drains_on_sigterm(image, upstream):
    port = free_port()
    env = runtime_env(image)
    config = Path(env["POTOK_CONFIG"])  # the "mounted" file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        yaml.safe_dump(
            {
                "server": {
                    "host": "127.0.0.1",
                    "port": port,
                    "timeouts": {"shutdown_grace": "10s"},
                },
                "services": {"up": {"targets": [upstream.url]}},
                "routes": [{"name": "all", "match": {"prefix": "/"}, "service": "up"}],
            }
        )
    )
    env["POTOK_HEALTH_URL"] = f"http://127.0.0.1:{port}/api/v1/health/liveness"
    assert healthcheck(image, env) != 0  # nothing listens yet
    instructions = runtime_stage()
    workdir = image.root / next(a for op, a in instructions if op == "WORKDIR").lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    entrypoint = exec_form(next(a for op, a in instructions if op == "ENTRYPOINT"))
    command = exec_form(next(a for op, a in instructions if op == "CMD"))
    assert shutil.which(entrypoint[0]), "tini is missing: .ci/deploy-check installs it"
    # A PID namespace of its own, as in a container: tini is its PID 1.
    container = subprocess.Popen(
        ["unshare", "--map-root-user", "--pid", "--fork", "--mount-proc", *entrypoint, *command],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=30)
        (init,) = (
            int(c)
            for c in Path(f"/proc/{container.pid}/task/{container.pid}/children")
            .read_text()
            .split()
        )
        assert namespace_pids(init)[-1] == 1
        assert Path(f"/proc/{init}/cmdline").read_bytes().split(b"\0")[0].endswith(b"tini")
        assert healthcheck(image, env) == 0
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(request, port, "GET", "/slow?delay=1.5")
            time.sleep(0.5)
            os.kill(init, signal.SIGTERM)  # `docker stop`
            assert slow.result(15).status == 200  # the request in flight finished
        assert container.wait(15) == 0, container.stderr.read().decode() if container.stderr else ""
        assert healthcheck(image, env) != 0
    finally:
        if container.poll() is None:
            container.kill()
            container.wait()
