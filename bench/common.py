"""Paths, the algorithms and workloads' names and the log, shared by the bench's modules.

bench/bench.py is the entry point (scripts/bench.sh runs it); its docstring explains the
method and the choices.
"""
from __future__ import annotations

from pathlib import Path

import tokens as tk

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WASM = ROOT / "wasm" / "jwt_claims_filter.wasm"
# The no-op proxy-wasm filter (bench/noop-filter), built and cached by scripts/bench.sh; a
# snapshot of it is measured, like WASM (configs.noop_used).
NOOP_WASM = BENCH / ".cache" / "noop_filter.wasm"
ALGS = tk.ALGS
# The distinct-token workload, once per protocol: HTTP/1.1 (wrk, --connections connections) and
# HTTP/2 (h2load, one connection with --connections streams); results[alg][workload].
DISTINCT = ("distinct-h1", "distinct-h2")
PROTOCOL = {"distinct-h1": "HTTP/1.1", "distinct-h2": "HTTP/2"}
WORKLOADS = ("repeated",) + DISTINCT
# Algorithms whose repeated-token workload is measured: a cached token is answered without its
# signature being checked, the same path whatever the algorithm, so PS256 (RSA-PSS, which the
# filter verifies in the VM) is measured with distinct tokens only.
REPEATED_ALGS = ("RS256", "ES256", "EdDSA")
RSS_CHUNK = 20000
RSS_TOTAL = 100000


def log(msg: str = "") -> None:
    print(msg, flush=True)


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"

