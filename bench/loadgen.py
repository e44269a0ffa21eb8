"""The load generators: wrk (one token repeated; bench/distinct.lua for distinct tokens over
HTTP/1.1) and h2load (distinct tokens over HTTP/2), their command lines and their output."""
from __future__ import annotations

import math
import re
from pathlib import Path

from common import BENCH

# bench/distinct.lua: wrk sends every path of a file once, over all its connections.
DISTINCT_LUA = BENCH / "distinct.lua"
DISTINCT_TIMEOUT_S = 600  # an h1 or h2 distinct-token load that takes longer is stopped


def wrk_argv(url: str, token: str, seconds: float, connections: int) -> list[str]:
    """wrk loading `url` (an Envoy) with `token` in `Authorization` for `seconds`."""
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
            "-H", f"Authorization: Bearer {token}", url + "/status/200"]


def h2load_distinct_argv(uris: Path, requests: int, streams: int, log_file: Path) -> list[str]:
    """h2load sending each URI of `uris` once: one h2c connection with `streams` concurrent
    streams (it walks its list from the top for each connection), one row per request in
    `log_file`."""
    return ["h2load", "-i", str(uris), "-n", str(requests), "-c", "1", "-t", "1",
            "-m", str(streams), f"--log-file={log_file}"]


def wrk_distinct_argv(url: str, paths: Path, connections: int) -> list[str]:
    """wrk sending each path of `paths` once over `connections` HTTP/1.1 connections
    (bench/distinct.lua hands them out in order and ends wrk at the last response)."""
    return ["wrk", "-t1", f"-c{connections}", f"-d{DISTINCT_TIMEOUT_S}s", "--timeout", "5s",
            "-s", str(DISTINCT_LUA), url, "--", str(paths)]


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
