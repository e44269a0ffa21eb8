#!/usr/bin/env python3
"""Interleaved A/B of Envoy CPU time per request, every configuration up at once.

    .venv/bin/python bench/ab.py [--rounds 40] [--seconds 2] VARIANT...

VARIANT is a configuration of bench.py (native_cache, floor_wasm, noop_wasm, none, filter) or
NAME=path/to/module.wasm (this filter, built from another commit, say). Run scripts/bench.sh
once first: it installs wrk and builds the no-op/floor module.

bench.py's repeated-token workload interleaves its configurations the same way (every Envoy
up at once, short shuffled loads); this script is for comparing modules (a build from another
commit against this one, say), in Envoy CPU time per request. Every Envoy (one worker each,
all on the same CPU, the load generator on the other) stays up, and each round loads every one
of them for --seconds, in a shuffled order, so a slow minute slows all of them. Per variant: the median of
the rounds' Envoy CPU µs per request, the overall figure (CPU time summed ÷ requests summed),
and the ratio to the first variant paired round by round (its median and quartiles; > 1 means
the variant needs less CPU than the first). The repeated token only: the cached path.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench/ab.py", description=__doc__.split("\n\n")[1])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("variants", nargs="+")
    a = ap.parse_args(argv)
    run_dir = B.BENCH / "runs" / ("ab-" + time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    bench = B.Bench(argparse.Namespace(connections=16, tokens=10, rss_100k=False, token_cache_size=1000,
                                       no_pin=False, wait_idle=30, duration=a.seconds), run_dir)
    B.noop_used = B.NOOP_WASM
    envs: dict[str, B.Envoy] = {}
    results: dict[str, list[tuple[int, float]]] = {}
    try:
        bench.prepare_tokens(["RS256"])
        bench.start_jwks()
        token = bench.tokens["RS256"].repeated
        bench.wait_idle()
        for variant in a.variants:
            name, _, path = variant.partition("=")
            if path:
                B.wasm_used = Path(path).resolve()
            elif name not in B.KINDS:
                ap.error(f"{name}: not one of {', '.join(B.KINDS)} nor NAME=module.wasm")
            (run_dir / name).mkdir(exist_ok=True)
            env = B.Envoy("filter" if path else name, "RS256", run_dir / name, bench.jwks_port, 1000,
                          bench.envoy_cpu)
            envs[name] = env
            env.start()
            bench.check(env, "RS256")
        for env in envs.values():
            bench.wrk(env, token, 3)  # warm-up
        results = {name: [] for name in envs}
        for round_ in range(a.rounds):
            order = list(envs)
            random.shuffle(order)
            for name in order:
                env = envs[name]
                cpu0 = env.cpu_seconds()
                r = bench.wrk(env, token, a.seconds)
                results[name].append((r["requests"], env.cpu_seconds() - cpu0))
            B.log(f"round {round_ + 1:3}/{a.rounds}  Envoy CPU µs/request  " + "  ".join(
                f"{name} {1e6 * results[name][-1][1] / max(results[name][-1][0], 1):.2f}" for name in envs))
    finally:
        B.Procs.stop_all()
    base = next(iter(envs))
    print(f"Envoy CPU µs per request over {a.rounds} rounds of {a.seconds} s; ratio = {base} ÷ variant, paired per round")
    for name, runs in results.items():
        us = [1e6 * cpu / requests for requests, cpu in runs if requests]
        overall = 1e6 * sum(cpu for _, cpu in runs) / max(sum(requests for requests, _ in runs), 1)
        ratios = [b / v for b, v in zip((1e6 * c / q for q, c in results[base] if q), us)]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [float("nan")] * 3
        print(f"{name:16} median {statistics.median(us):6.2f}  overall {overall:6.2f}   paired ratio median "
              f"{statistics.median(ratios):.3f} (quartiles {quartiles[0]:.3f}–{quartiles[2]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
