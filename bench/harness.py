"""One Envoy measured: the run's state (results, problems), its tokens and JWKS server, the
start-up check of an Envoy, one load on it with RSS, CPU and counters around it, judged."""
from __future__ import annotations

import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path

import loadgen
import tokens as tk
from common import RSS_TOTAL, log
from configs import PASS_KINDS
from judging import allowed_counter, judge
from loadgen import DISTINCT_TIMEOUT_S, parse_distinct_h1, parse_h2load, parse_wrk
from procs import Envoy, Procs, cpu_busy, http_get, start_jwks_server, tail


class Harness:
    """The run's state and the measurement of one Envoy; workloads.Bench builds the workloads
    on it."""

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
        self.jwks_port = start_jwks_server(self.run_dir, self.tokens)

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
        return loadgen.wrk_argv(env.url, token, seconds, self.args.connections)

    def wrk(self, env: Envoy, token: str, seconds: float) -> dict:
        return parse_wrk(Procs.run("wrk", self.wrk_argv(env, token, seconds), self.load_cpu, timeout=seconds + 30))

    def distinct(self, env: Envoy, toks: list[str], what: str, tag: str, workload: str = "distinct-h2") -> dict:
        """Measures `toks`, each sent once: over HTTP/2 with h2load on one connection with
        --connections streams, over HTTP/1.1 with wrk on --connections connections (see
        bench/bench.py's docstring)."""
        if workload == "distinct-h1":
            return self.distinct_h1(env, toks, what, tag)
        uris = self.run_dir / f"uris-{env.name}-{tag}.txt"
        lat = self.run_dir / f"h2load-{env.name}-{tag}.log"
        base = env.url + "/status/200?access_token="
        uris.write_text("".join(base + t + "\n" for t in toks))
        argv = loadgen.h2load_distinct_argv(uris, len(toks), self.args.connections, lat)
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
        argv = loadgen.wrk_distinct_argv(env.url, paths, self.args.connections)
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

    def fail(self, alg: str, workload: str, kind: str, rnd: int | None, msg: str) -> None:
        where = f"{workload} {alg} {kind}" + ("" if rnd is None else f" round {rnd + 1}")
        log(f"  {where} FAILED: {msg}")
        self.problems.append(f"{where}: {msg.splitlines()[0]}")
        self.results[alg][workload][kind].append({"error": msg.splitlines()[0]})
