"""The benchmark's verdicts on issue 5's targets (bench/bench.py), on made-up measurements:
the report must say ✗ when a number misses its target, whichever measurement carries it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH_PY = Path(__file__).resolve().parents[2] / "bench" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_under_test"] = module
    spec.loader.exec_module(module)
    return module


def generation(ratio: float, ratio_rps: float = 1.0) -> dict:
    load = {"a": {"envoy_cpu": 0.5, "rps_per_cpu": 30000 * ratio}, "b": {"envoy_cpu": 0.5, "rps_per_cpu": 30000.0},
            "ratio": ratio, "ratio_rps": ratio_rps}
    return {"generation": 0, "loads": [load], "ratio": ratio, "ratio_rps": ratio_rps}


def test_head_to_head_summary_is_the_median_over_generations(bench):
    h = bench.h2h_summary([generation(r) for r in (0.90, 0.96, 0.97, 0.99, 1.20)])
    assert h["ratio"] == pytest.approx(0.97)
    assert h["n"] == 5 and h["loads"] == 5
    assert h["q1"] < h["ratio"] < h["q3"]
    assert bench.h2h_summary([]) is None


def verdicts(bench, h2h_ratio: float | None, alternating: float, distinct: float, rss: list[float], wasm_size: int):
    summaries = {"RS256": {
        "filter/repeated": {"rps": 100 * alternating}, "native_cache/repeated": {"rps": 100.0},
        "filter/distinct": {"rps": 100 * distinct}, "native_nocache/distinct": {"rps": 100.0},
    }}
    label = bench.h2h_label("filter", "native_cache")
    head_to_head = {} if h2h_ratio is None else {"RS256": {label: [generation(h2h_ratio)] * 3}}
    run = SimpleNamespace(head_to_head=head_to_head, args=SimpleNamespace(token_cache_size=1000),
                          rss100k={"filter": {"points": [(i * 20000, mib, None) for i, mib in enumerate(rss)]}})

    def h2h_target(alg):
        return bench.h2h_summary(run.head_to_head.get(alg, {}).get(label, []))

    lines = bench.target_verdicts(run, ["RS256"], summaries, h2h_target, wasm_size)
    return {key: next(line for line in lines if key in line) for key in ("repeated", "distinct", "RSS", ".wasm")}


def test_targets_met(bench):
    v = verdicts(bench, 0.963, 0.93, 0.9, [115.0, 117.6, 117.6, 117.7], 1_018_131)
    assert all(line.startswith("- ✓") for line in v.values()), v
    # The repeated token is judged head to head; the alternating ratio is shown, not judged.
    assert "0.963" in v["repeated"] and "head to head" in v["repeated"] and "0.93" in v["repeated"]


def test_each_target_missed_says_so(bench):
    v = verdicts(bench, 0.949, 1.10, 0.49, [115.0, 117.6, 119.0], 1_048_577)
    assert all(line.startswith("- ✗") for line in v.values()), v


def test_without_head_to_head_the_alternating_ratio_is_judged(bench):
    assert verdicts(bench, None, 0.94, 0.9, [115.0, 117.6, 117.6], 1)["repeated"].startswith("- ✗")
    assert verdicts(bench, None, 0.96, 0.9, [115.0, 117.6, 117.6], 1)["repeated"].startswith("- ✓")


def test_a_load_is_judged_on_every_count(bench):
    clean = {"non2xx": 0, "socket_errors": 0, "socket_detail": "", "requests": 100}
    ok = {"http.bench.downstream_rq_2xx": 100}
    assert bench.judge(clean, ok, 100) == []
    assert bench.judge(clean, ok, None) == []
    assert "non-2xx" in " ".join(bench.judge(clean | {"non2xx": 1}, ok, None))
    assert "Envoy counted 2" in " ".join(bench.judge(clean, ok | {"http.bench.downstream_rq_4xx": 2}, None))
    assert "only 99 of 100" in " ".join(bench.judge(clean, ok, 99))
    assert "no successful requests" in bench.judge(clean, {}, None)
    assert "h2load" in " ".join(bench.judge(clean | {"total": 10, "succeeded": 9}, ok, None))


def test_an_out_path_that_cannot_be_written_is_refused_before_the_run(bench, capsys):
    # The report is written at the end of a 25-minute run: a bad --out must fail at once.
    # `--configs` is invalid too, and checked after `--out`: without the check this fails on
    # the message (and at once) rather than starting a benchmark.
    with pytest.raises(SystemExit) as refused:
        bench.main(["--out", "/nonexistent-dir/report.md", "--configs", "no-such-configuration"])
    assert refused.value.code == 2
    assert "no directory /nonexistent-dir" in capsys.readouterr().err
