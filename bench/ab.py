#!/usr/bin/env python3
"""Head-to-head A/B of two variants on the repeated token (the cached path).

    .venv/bin/python bench/ab.py [--generations 10] [--loads 2] [--seconds 2] [--alg RS256] A B

A and B are configurations of bench.py (filter, native_cache, floor_wasm, noop_wasm, none,
native_nocache) or NAME=path/to/module.wasm (this filter, built from another commit or with
other options, say). Run scripts/bench.sh once first: it installs wrk and builds the
no-op/floor module.

The method of bench.py's head-to-head phase (see HEAD_TO_HEAD in bench/workloads.py): per
generation, a fresh Envoy of each variant, both pinned to the same CPU, loaded at the same time
by two wrk processes on the other CPU, and compared by requests per CPU-second of each process. The ratio
A ÷ B per generation is the median of its loads; printed: every generation's, and their median
and quartiles (> 1: A serves more per CPU-second than B). Loaded at the same instant, both see
the machine's slow and fast moments alike, so two modules 1 % apart are told apart in about 10
generations (3 minutes), where loading them one after the other needed hundreds of loads.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import configs  # noqa: E402
from common import ALGS, BENCH, NOOP_WASM, log  # noqa: E402
from configs import KINDS  # noqa: E402
from procs import Envoy, Procs  # noqa: E402
from workloads import Bench  # noqa: E402


def envoy_for(variant: str, alg: str, bench: Bench, run_dir: Path, tag: str) -> Envoy:
    """An Envoy (not started) for a variant: a configuration, or the filter with another module."""
    name, _, path = variant.partition("=")
    if path:
        configs.wasm_used = Path(path).resolve()  # read when the Envoy's configuration is written
        return Envoy("filter", alg, run_dir, bench.jwks_port, bench.args.token_cache_size, bench.envoy_cpu,
                     tag=f"-{name}{tag}")
    return Envoy(name, alg, run_dir, bench.jwks_port, bench.args.token_cache_size, bench.envoy_cpu, tag=tag)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench/ab.py", description=__doc__.split("\n\n")[1])
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--loads", type=int, default=2, help="loads per generation (default 2)")
    ap.add_argument("--seconds", type=int, default=2, help="seconds per load (default 2)")
    ap.add_argument("--alg", choices=ALGS, default="RS256")
    ap.add_argument("a")
    ap.add_argument("b")
    a = ap.parse_args(argv)
    for variant in (a.a, a.b):
        name, _, path = variant.partition("=")
        if path and not Path(path).is_file():
            ap.error(f"{path}: no such module")
        if not path and name not in KINDS:
            ap.error(f"{name}: not one of {', '.join(KINDS)} nor NAME=module.wasm")
    run_dir = BENCH / "runs" / ("ab-" + time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(argparse.Namespace(connections=16, tokens=10, rss_100k=False, token_cache_size=1000,
                                     no_pin=False, wait_idle=30, duration=a.seconds), run_dir)
    configs.noop_used = NOOP_WASM
    ratios: list[float] = []
    try:
        bench.prepare_tokens([a.alg])
        bench.start_jwks()
        for gen in range(a.generations):
            bench.wait_idle()
            pair = [envoy_for(a.a, a.alg, bench, run_dir, f"-a{gen}"), envoy_for(a.b, a.alg, bench, run_dir, f"-b{gen}")]
            try:
                for env in pair:
                    env.start()
                    bench.check(env, a.alg)
                    bench.wrk(env, bench.tokens[a.alg].repeated, 1)  # warm-up
                loads = [bench.head_to_head_load(a.alg, gen, *pair)["ratio"] for _ in range(a.loads)]
            finally:
                for env in pair:
                    env.stop()
            ratios.append(statistics.median(loads))
            log(f"generation {gen + 1:2}/{a.generations}  {a.a} ÷ {a.b} per CPU-second  "
                + "  ".join(f"{r:.3f}" for r in loads) + f"  → {ratios[-1]:.3f}")
    finally:
        Procs.stop_all()
    if bench.problems:
        log("INVALID: " + "; ".join(bench.problems[:5]))
        return 1
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    print(f"{a.alg}, {len(ratios)} generations: {a.a} ÷ {a.b} = {statistics.median(ratios):.3f} per CPU-second "
          f"(quartiles {q[0]:.3f}–{q[2]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
