"""scripts/envoy-docker.sh: without a Docker engine it runs the local Envoy with the same
configuration and flags; with one it hands those flags to the official image.

No Docker engine runs here, so the Docker path is driven through a stand-in `docker` client that
records its arguments and runs the local Envoy with the arguments meant for the container.
Needs the built module (scripts/build.sh) and the venv (scripts/setup.sh).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "envoy-docker.sh"
# The module the e2e tests load (same variable as tests/support/envoy.py).
MODULE = Path(os.environ.get("JWT_FILTER_WASM", ROOT / "wasm" / "jwt_claims_filter.wasm")).resolve()
GROUPS_TOKEN = (ROOT / "tests" / "fixtures" / "istio-samples" / "groups-scope.jwt").read_text().strip()
HOST = {"Host": "httpbin.example.com"}
IMAGE = "envoyproxy/envoy:v1.40-latest"

FAKE_DOCKER = """#!/usr/bin/env bash
# Stand-in for the docker client: an engine that answers, and `run` starts the local Envoy with
# the arguments that follow the image, as the image's entrypoint would.
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  info|stop) exit 0 ;;
  run)
    shift
    while [ $# -gt 0 ] && [ "$1" != "$FAKE_DOCKER_IMAGE" ]; do shift; done
    shift
    exec "$FAKE_DOCKER_ENVOY" "$@" ;;
esac
exit 1
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Run:
    """One envoy-docker.sh process on free ports."""

    def __init__(self, tmp_path: Path, env: dict[str, str], concurrency: int = 2):
        if not MODULE.exists():
            pytest.fail(f"{MODULE} is missing: run scripts/build.sh first")
        self.port, self.admin, self.httpbin, self.jwks = free_ports(4)
        self.stdout, self.stderr = tmp_path / "stdout", tmp_path / "stderr"
        args = [
            str(SCRIPT),
            "--port", str(self.port),
            "--admin-port", str(self.admin),
            "--concurrency", str(concurrency),
            "--httpbin-port", str(self.httpbin),
            "--jwks-port", str(self.jwks),
            "--log-level", "warning",
            "--wasm", str(MODULE),
        ]
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                args, cwd=tmp_path, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"envoy-docker.sh exited {self.proc.returncode}:\n{self.output()[-4000:]}"
            if "Envoy is ready" in self.stdout.read_text(errors="replace"):
                return
            time.sleep(0.1)
        pytest.fail(f"not ready after {timeout}s:\n{self.output()[-4000:]}")

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", headers={**HOST, **headers}, timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def run(tmp_path):
    started: list[Run] = []

    def _start(**kw) -> Run:
        r = Run(tmp_path, **kw)
        started.append(r)
        return r

    yield _start
    for r in started:
        r.stop()


def envoy_flags(output: str) -> list[str]:
    """The Envoy command line the script logged, config path left out (a temp file per run)."""
    (line,) = [l for l in output.splitlines() if l.startswith("[envoy-docker.sh] envoy ")]
    flags = line.split()[2:]
    i = flags.index("-c")
    return flags[:i] + flags[i + 2:]


def test_without_docker_engine_runs_the_local_envoy(run):
    # A client that reaches no engine, wherever this test runs.
    r = run(env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    r.wait_ready()
    assert "no Docker engine answers" in r.output()

    # The seed, end to end: httpbin and the JWKS server came up with Envoy.
    assert r.get("/status/200").status_code == 200
    assert r.get("/headers").status_code == 404
    resp = r.get("/headers", Authorization=f"Bearer {GROUPS_TOKEN}")
    assert resp.status_code == 200, resp.text
    received = {name.lower(): value for name, value in resp.json()["headers"].items()}
    assert received.get("x-jwt-claim.groups") == "group1,group2"

    # The flags reached Envoy.
    info = requests.get(f"http://127.0.0.1:{r.admin}/server_info", timeout=5).json()
    assert int(info["command_line_options"]["concurrency"]) == 2
    assert envoy_flags(r.output()) == ["--concurrency", "2", "--log-level", "warning", "--use-dynamic-base-id"]

    # SIGTERM stops everything the script started.
    assert r.stop() == 143  # 128 + SIGTERM, after cleaning up
    deadline = time.monotonic() + 10
    ports = [r.port, r.admin, r.httpbin, r.jwks]
    while any(accepts(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in ports if accepts(p)] == []


def test_with_docker_engine_runs_the_image_with_the_same_flags(run, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    r = run(
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_DOCKER_LOG": str(log),
            "FAKE_DOCKER_IMAGE": IMAGE,
            "FAKE_DOCKER_ENVOY": str(ROOT / ".venv" / "bin" / "envoy"),
        }
    )
    r.wait_ready()
    assert "Docker engine answers: running envoyproxy/envoy:v1.40-latest" in r.output()
    assert r.get("/status/200").status_code == 200

    calls = log.read_text().splitlines()
    assert calls[0] == "info"
    (docker_run,) = [c.split() for c in calls if c.startswith("run ")]
    assert docker_run[docker_run.index("--network") + 1] == "host"
    mounts = [docker_run[i + 1] for i, a in enumerate(docker_run) if a == "-v"]
    config = docker_run[docker_run.index("-c") + 1]
    # The configuration and the module at the same paths inside as outside.
    assert f"{config}:{config}:ro" in mounts
    assert f"{MODULE}:{MODULE}:ro" in mounts
    after_image = docker_run[docker_run.index(IMAGE) + 1:]
    assert after_image == ["-c", config, "--concurrency", "2", "--log-level", "warning", "--use-dynamic-base-id"]
    assert envoy_flags(r.output()) == ["--concurrency", "2", "--log-level", "warning", "--use-dynamic-base-id"]
