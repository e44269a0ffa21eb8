"""Envoy's instructions per request under callgrind, for the bench's configurations.

    scripts/bench.sh --instructions [--requests N] [--alg RS256|ES256|EdDSA]
                                    [--configs none,noop_wasm,floor_wasm,native_cache,filter]

Wall-clock req/s on a shared machine swings by tens of percent from one minute to the next;
instruction counts do not. This runs each configuration's Envoy (the very config bench.py
measures, one worker) under `valgrind --tool=callgrind`, warms it up (JIT tiers, token
caches), zeroes the counters, sends N requests with the repeated token (h2load, one h2c
connection, 4 streams), dumps the counters and divides. Code that V8 generated at run time
(the filter's compiled Wasm, and V8's call stubs into it) sits above 4 GiB in the address
space and is reported apart from the Envoy binary and its libraries ("host").

Instructions are not time (the filter's Wasm ran at about 0.21 ns per instruction, native
jwt_authn's cache path at 0.33 ns in the quiet run of bench/latest.md), so the ratios here
are a steady guide for changes, not the issue's req/s targets; those stay bench.py's.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

import configs
from common import ALGS, BENCH, NOOP_WASM, WASM, log
from configs import KINDS, LABELS, NOOP_MODULE_KINDS
from procs import Envoy, Procs, envoy_binary, http_get, tail
from workloads import Bench

JIT_FLOOR = 1 << 32  # V8's code space sits above 4 GiB; the Envoy binary and libc below


def self_costs(path: Path) -> collections.Counter:
    """Exclusive instruction counts per function of a callgrind dump (names or addresses)."""
    names: dict[str, str] = {}
    costs: collections.Counter = collections.Counter()
    current = None
    call_line = False
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if not m.group(1):
                current = names.get(m.group(2), m.group(2))
            continue
        if line.startswith("calls="):
            call_line = True  # the next cost line is the call's inclusive cost
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if call_line:
                call_line = False
                continue
            if len(parts) >= 2 and current is not None and parts[1].isdigit():
                costs[current] += int(parts[1])
    return costs


def is_jit(name: str) -> bool:
    m = re.fullmatch(r"0x([0-9a-f]+)", name)
    return bool(m) and int(m.group(1), 16) >= JIT_FLOOR


def measure(bench: Bench, kind: str, alg: str, requests: int, run_dir: Path) -> dict:
    env = Envoy(kind, alg, run_dir, bench.jwks_port, bench.args.token_cache_size, None)
    out = run_dir / f"callgrind.{kind}"
    argv = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}",
            envoy_binary(), "-c", str(env.cfg_path), "--concurrency", "1", "--disable-hot-restart",
            "-l", "warning"]
    vg_log = (run_dir / f"valgrind-{kind}.log").open("wb")
    proc = Procs.start(f"valgrind-{kind}", argv, vg_log)
    try:
        token = bench.tokens[alg].repeated
        url = env.url + "/status/200"
        deadline = time.monotonic() + 600  # V8 compiles the module under valgrind: minutes
        while http_get(url, {"Authorization": "Bearer " + token}, timeout=30)[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind}: no 200 under valgrind:\n{tail(run_dir / f'valgrind-{kind}.log')}")
            time.sleep(1)
        header = f"Authorization: Bearer {token}"
        subprocess.run(["wrk", "-t1", "-c4", "-d20s", "-H", header, url], capture_output=True, check=False)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        r = subprocess.run(["h2load", "-n", str(requests), "-c", "1", "-m", "4", "-H", header, url],
                           capture_output=True, text=True, check=False)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", r.stdout)
        if not m or int(m.group(3)) != requests:
            raise RuntimeError(f"{kind}: h2load did not get {requests} 2xx answers: {r.stdout[-400:]}")
        dumps = sorted(run_dir.glob(f"callgrind.{kind}.*"), key=lambda p: p.stat().st_mtime)
        if not dumps:
            raise RuntimeError(f"{kind}: callgrind wrote no dump")
        costs = self_costs(dumps[-1])
        jit = sum(v for k, v in costs.items() if is_jit(k))
        total = sum(costs.values())
        return {"total": total / requests, "jit": jit / requests, "host": (total - jit) / requests}
    finally:
        Procs.stop(proc, timeout=60)
        vg_log.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench.sh --instructions", description=__doc__.split("\n\n")[1])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--configs", default="none,noop_wasm,floor_wasm,native_cache,filter")
    ap.add_argument("--token-cache-size", type=int, default=1000)
    ap.add_argument("--alg", choices=ALGS, default="RS256", help="the repeated token's algorithm (default RS256)")
    args = ap.parse_args(argv)
    kinds = [k for k in args.configs.split(",") if k]
    if any(k not in KINDS for k in kinds):
        ap.error(f"--configs takes a subset of {','.join(KINDS)}")
    run_dir = BENCH / "runs" / ("instructions-" + time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    configs.wasm_used = run_dir / WASM.name
    configs.wasm_used.write_bytes(WASM.read_bytes())
    if any(k in NOOP_MODULE_KINDS for k in kinds):
        configs.noop_used = run_dir / NOOP_WASM.name
        configs.noop_used.write_bytes(NOOP_WASM.read_bytes())
    bench = Bench(argparse.Namespace(connections=4, tokens=10, rss_100k=False, no_pin=True, wait_idle=0,
                                     token_cache_size=args.token_cache_size, duration=1), run_dir)
    rows = {}
    try:
        bench.prepare_tokens([args.alg])
        log(f"{args.alg}, the repeated token, {args.requests:,} requests per configuration")
        bench.start_jwks()
        for kind in kinds:
            rows[kind] = measure(bench, kind, args.alg, args.requests, run_dir)
            r = rows[kind]
            log(f"{LABELS[kind]:40} {r['total']:9,.0f} instructions/request"
                f"  (host {r['host']:,.0f}, run-time generated code {r['jit']:,.0f})")
    finally:
        Procs.stop_all()
    if "filter" in rows and "native_cache" in rows:
        log(f"native jwt_authn + cache / filter: {rows['native_cache']['total'] / rows['filter']['total']:.2f}"
            " (instructions; > 1 means the filter runs fewer)")
    if "filter" in rows and "noop_wasm" in rows:
        log(f"filter's own work over the no-op filter: {rows['filter']['total'] - rows['noop_wasm']['total']:,.0f}"
            " instructions/request")
    if "floor_wasm" in rows and "native_cache" in rows:
        log(f"native jwt_authn + cache / the job's host calls only: "
            f"{rows['native_cache']['total'] / rows['floor_wasm']['total']:.2f} (the best a proxy-wasm filter "
            "doing this job can show)")
    if "filter" in rows and "floor_wasm" in rows:
        log(f"filter's own logic over the job's host calls: "
            f"{rows['filter']['total'] - rows['floor_wasm']['total']:,.0f} instructions/request")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
