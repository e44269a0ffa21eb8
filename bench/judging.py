"""Judging: what invalidates a load, the medians and ratios over the rounds, and issue 5's
targets with their verdicts."""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from common import DISTINCT, PROTOCOL, REPEATED_ALGS
from configs import PASS_KINDS, SHORT

if TYPE_CHECKING:
    from workloads import Bench

TARGET_REPEATED = 0.95   # filter / native_cache, repeated token
# filter / native_nocache, distinct tokens, each protocol. RS256 and ES256 go to Envoy's
# BoringSSL through `verify_signature`; EdDSA and PS256 are checked inside the VM (the host
# function has neither Ed25519 nor PSS padding).
TARGET_DISTINCT = {"RS256": 1.0, "ES256": 1.0, "EdDSA": 1.0, "PS256": 0.5}
WASM_LIMIT = 1 << 20
# The filter's RSS may grow by this much from 20,000 to 100,000 distinct tokens: the cache is
# full after the first 20,000 (tokenCacheSize 1000), so anything more would be a leak.
RSS_GROWTH_LIMIT_MIB = 1.0


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


def h2h_label(a: str, b: str) -> str:
    return f"{SHORT[a]} / {SHORT[b]}" + (" (another process)" if a == b else "")


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


def ratio_cell(num: dict | None, den: dict | None, target: float | None, key: str = "rps") -> str:
    if not num or not den or not den.get(key) or num.get(key) is None:
        return "–"
    r = num[key] / den[key]
    if target is None:
        return f"{r:.2f}"
    return f"{r:.2f} {'✓' if r >= target else '✗'} (≥ {target})"
