"""scripts/run.sh, the README's first command: the seed (envoy.yaml) and `--istio DIR` (the
task's own YAML through the Istio compiler, its https jwksUri answered locally over HTTPS),
each started as a user starts it and asked the task's questions.

run.sh listens on fixed ports (8080, 8000, 8091, 9901); a test skips when one is taken.
RUN_SKIP_BUILD=1: scripts/test.sh has built the module and the venv already.
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
SAMPLES = ROOT / "tests" / "fixtures" / "istio-samples"
GROUPS = (SAMPLES / "groups-scope.jwt").read_text().strip()
DEMO = (SAMPLES / "demo.jwt").read_text().strip()
PORTS = (8080, 8000, 8091, 9901)


def _taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def run_sh(tmp_path):
    procs: list[subprocess.Popen] = []

    def _start(*args: str) -> subprocess.Popen:
        if any(_taken(p) for p in PORTS):
            pytest.skip(f"one of 127.0.0.1:{PORTS} is in use")
        log = open(tmp_path / "run.log", "wb")
        proc = subprocess.Popen([str(ROOT / "scripts" / "run.sh"), *args], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "RUN_SKIP_BUILD": "1"}, start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            try:
                if requests.get("http://127.0.0.1:9901/ready", timeout=1).text.strip() == "LIVE":
                    # The seed's first request waits for the first key fetch; nothing to wait for.
                    return proc
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pytest.fail("run.sh not ready after 120 s:\n" + (tmp_path / "run.log").read_text()[-3000:])

    yield _start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    for p in PORTS:
        deadline = time.monotonic() + 10
        while _taken(p) and time.monotonic() < deadline:
            time.sleep(0.2)


def _status(path: str, token: str | None = None, host: str = "httpbin.example.com") -> int:
    h = {"Host": host}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return requests.get(f"http://127.0.0.1:8080{path}", headers=h, timeout=15).status_code


TASK = [
    ("/status/200", None, 200),
    ("/headers", None, 404),
    ("/headers", "some.invalid.token", 401),
    ("/headers", GROUPS, 200),
    ("/headers", DEMO, 404),
]


@pytest.mark.parametrize("args", [(), ("--istio", "deploy/istio")], ids=["envoy.yaml", "istio"])
def test_run_sh_answers_the_task(run_sh, args):
    run_sh(*args)
    assert [_status(p, t) for p, t, _ in TASK] == [want for _, _, want in TASK]
    assert _status("/status/200", host="other.example.com") == 404


def test_run_sh_serves_the_browser_section(run_sh):
    run_sh("--istio", "deploy/istio/browser")
    r = requests.get("http://127.0.0.1:8080/headers", timeout=15)
    assert r.status_code == 200 and "Host" in r.json()["headers"]
    assert _status("/status/200", host="127.0.0.1:8080") == 404
    assert _status("/headers", "some.invalid.token", host="127.0.0.1:8080") == 401


def test_run_sh_serves_the_first_step(run_sh):
    run_sh("--istio", "deploy/istio/gateway-only")
    assert _status("/status/200") == 200
    assert _status("/headers") == 404
    # No RequestAuthentication yet: a token is not even looked at.
    assert _status("/status/200", "some.invalid.token") == 200
