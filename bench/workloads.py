"""The workloads (see bench/bench.py's docstring): the repeated token interleaved and head to
head, distinct tokens over HTTP/1.1 and HTTP/2, RSS to 100,000 tokens, and the whole run."""
from __future__ import annotations

import random
import statistics
import subprocess
import time

from common import DISTINCT, REPEATED_ALGS, RSS_CHUNK, RSS_TOTAL, WORKLOADS, fmt_ms, log
from configs import KINDS
from harness import Harness
from judging import h2h_label, judge
from loadgen import parse_wrk
from procs import Envoy, Procs, tail

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


class Bench(Harness):
    """The bench: Harness's measurements composed into the workloads, and the whole run."""

    # -- repeated token --------------------------------------------------------------------
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

    # -- distinct tokens, RSS --------------------------------------------------------------
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
