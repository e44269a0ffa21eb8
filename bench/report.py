"""The report: bench/latest.md's markdown. The run, the machine and the method; the medians
per configuration and workload; the ratios (to native, per pass, head to head) and Envoy's CPU
time per request; RSS to 100,000 tokens; issue 5's targets' verdicts; warnings."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import re
import statistics
import subprocess
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import configs
from common import DISTINCT, REPEATED_ALGS, ROOT, RSS_CHUNK, RSS_TOTAL, WORKLOADS, fmt_ms
from configs import KINDS, LABELS, NOOP_MODULE_KINDS, SHORT
from judging import (TARGET_DISTINCT, TARGET_REPEATED, WASM_LIMIT, h2h_label, h2h_summary, paired, ratio_cell,
                     summarize, target_verdicts)
from procs import envoy_binary

if TYPE_CHECKING:
    from workloads import Bench


def machine() -> dict:
    """The machine, the tools' versions and the commit measured, for the report's header."""
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



def h2h_target(bench: Bench, alg: str) -> dict | None:
    """The head-to-head summary of filter / native + cache, if measured."""
    return h2h_summary(bench.head_to_head.get(alg, {}).get(h2h_label("filter", "native_cache"), []))


def report(bench: Bench, algs: list[str], kinds: list[str], started: dt.datetime, elapsed: float,
           mach: dict, argv: list[str]) -> str:
    wasm_size = configs.wasm_used.stat().st_size
    target = partial(h2h_target, bench)
    L = invalid_banner(bench)
    L += run_header(bench, kinds, started, elapsed, mach, argv)
    L += method_paragraph(bench, algs, kinds, mach)
    targets_at = len(L)  # the targets' verdicts go here once every number is known
    table, summaries = results_table(bench, algs, kinds)
    L += table
    if "filter" in kinds or "noop_wasm" in kinds or "floor_wasm" in kinds:
        L += ratio_sections(bench, algs, kinds, summaries, target)
    if "noop_wasm" in kinds:
        L += cpu_per_request_table(algs, kinds, summaries)
    if bench.rss100k:
        L += rss100k_table(bench)
    L[targets_at:targets_at] = target_verdicts(bench, algs, summaries, target, wasm_size)
    L += ["", f"`wasm/jwt_claims_filter.wasm`: {wasm_size:,} bytes ({wasm_size / 2**20:.2f} MiB; "
          f"{'✓' if wasm_size <= WASM_LIMIT else '✗'} ≤ 1 MiB)."]
    L += warnings_section(bench, mach)
    return "\n".join(L) + "\n"


def invalid_banner(bench: Bench) -> list[str]:
    """The problems that make the run INVALID, first thing in the report."""
    L: list[str] = []
    if bench.problems:
        L += ["> **INVALID RUN** — some requests failed or were not verified; the numbers below do not "
              "measure what they claim:", ">"]
        L += [f"> - {p}" for p in bench.problems[:20]]
        if len(bench.problems) > 20:
            L.append(f"> - … and {len(bench.problems) - 20} more")
        L.append("")
    return L


def run_header(bench: Bench, kinds: list[str], started: dt.datetime, elapsed: float, mach: dict,
               argv: list[str]) -> list[str]:
    """When, how long, on what machine, with which Envoy and which modules."""
    a = bench.args
    wasm_sha = hashlib.sha256(configs.wasm_used.read_bytes()).hexdigest()[:12]
    noop_used = configs.noop_used
    return [
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
    ]


def method_paragraph(bench: Bench, algs: list[str], kinds: list[str], mach: dict) -> list[str]:
    """How the repeated and distinct workloads were run."""
    a = bench.args
    return [
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


def results_table(bench: Bench, algs: list[str], kinds: list[str]) -> tuple[list[str], dict[str, dict[str, dict]]]:
    """The medians per algorithm, configuration and workload, and those summaries
    (summaries[alg]["kind/workload"])."""
    L = [
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
    return L, summaries


def ratio_columns(kinds: list[str]) -> list[tuple[str, str, str, str, bool]]:
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
    return cols


def ratio_table(cols: list[tuple[str, str, str, str, bool]], algs: list[str], summaries: dict, key: str,
                targets: bool, h2h_target) -> list[str]:
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


def ratio_sections(bench: Bench, algs: list[str], kinds: list[str], summaries: dict, h2h_target) -> list[str]:
    """The ratios of the medians to native (req/s, with the targets; and per CPU-second), the
    head-to-head table and the ratios taken within each pass."""
    cols = ratio_columns(kinds)
    L: list[str] = []
    L += ["", "Ratios of the medians (req/s), with the targets of issue 5"
          + (" (the repeated token's is judged head to head, below)" if any(map(h2h_target, algs)) else "")
          + ":", ""]
    L += ratio_table(cols, algs, summaries, "rps", True, h2h_target)
    if bench.head_to_head:
        L += head_to_head_table(bench, algs)
    L += pass_ratio_table(algs, kinds, summaries)
    L += ["", "The same ratios per Envoy CPU-second (requests ÷ CPU time Envoy used; less sensitive to "
          "other load on the machine):", ""]
    L += ratio_table(cols, algs, summaries, "rps_per_cpu", False, h2h_target)
    return L


def head_to_head_table(bench: Bench, algs: list[str]) -> list[str]:
    """The head-to-head measurement: how it was run, and each pair's median per algorithm."""
    a = bench.args
    L = ["", f"**Repeated token, head to head**: per algorithm, {a.head_to_head} generations, each "
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
    return L


def pass_ratio_table(algs: list[str], kinds: list[str], summaries: dict) -> list[str]:
    """The repeated token's ratio to native + cache taken within each pass (none if native + cache
    or both of filter and floor-wasm were not measured)."""
    # The repeated workload's rounds load every Envoy within seconds of each other, so a
    # ratio taken within each round cancels the machine's drift; its median and quartiles
    # say how steady the ratio of the medians above is.
    pair_cols = [(num, label, key) for num, label in (("filter", "filter"), ("floor_wasm", "floor-wasm"))
                 if num in kinds and "native_cache" in kinds
                 for key in ("rps", "rps_per_cpu")]
    if not pair_cols:
        return []

    def spread(ratios: list[float]) -> str:
        if not ratios:
            return "–"
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
        return f"{statistics.median(ratios):.3f} ({q[0]:.2f}–{q[2]:.2f})"

    L = ["", "Repeated token, the ratio to native + cache taken within each pass (every Envoy up at "
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
    return L


def cpu_per_request_table(algs: list[str], kinds: list[str], summaries: dict) -> list[str]:
    """Envoy's CPU time per request per configuration, and the differences that split the gap
    to native into the Wasm floor, the host calls and the filter's own work."""
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
    L = ["", "Envoy CPU time per request (µs; 10⁶ ÷ the median requests per Envoy CPU-second). "
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
    return L


def rss100k_table(bench: Bench) -> list[str]:
    """RSS of one Envoy per configuration while 100,000 distinct tokens go through it."""
    a = bench.args
    kinds100 = list(bench.rss100k)
    alg100 = bench.rss100k[kinds100[0]]["alg"]
    L = ["", f"RSS (MiB) of one Envoy while {RSS_TOTAL:,} distinct {alg100} tokens go through it, "
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
    return L


def warnings_section(bench: Bench, mach: dict) -> list[str]:
    """Adds the run's warnings (Envoy starved of its CPU, --wait-idle's waits) to bench.warnings
    and returns the report's list of them."""
    a = bench.args
    L: list[str] = []
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
    return L
