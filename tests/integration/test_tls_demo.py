"""`potok demo --https`: a certificate from a CA made for the run, and the printed
`curl --cacert` lines work as printed (verified TLS, no -k)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.integration.test_demo import Demo, distinct_free_ports


def test_demo_https_prints_working_curl_cacert_lines():
    (https_port,) = distinct_free_ports(1)
    demo = Demo(args=("--https", "--https-port", str(https_port)))
    try:
        demo.wait_started()
        out = demo.stdout_path.read_text()
        lines = [line.strip() for line in out.splitlines() if "--cacert" in line]
        assert lines, out
        ca_file = None
        for line in lines:
            assert "-k" not in shlex.split(line.split("|")[0])  # verified, never insecure
            run = subprocess.run(
                line, shell=True, capture_output=True, text=True, timeout=30, check=False
            )
            assert run.returncode == 0, (line, run.stdout, run.stderr)
            if "/api/v1/health" in line and "|" not in line:
                assert '"status"' in run.stdout, run.stdout
            if "grep" in line:
                assert "ALPN" in run.stdout or "SSL connection" in run.stdout
            ca_file = shlex.split(line)[shlex.split(line).index("--cacert") + 1]
        assert ca_file is not None and Path(ca_file).exists()
    finally:
        demo.stop()
    assert not Path(ca_file).exists()  # the run's CA leaves with it
