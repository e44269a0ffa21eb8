"""Process harness for the end-to-end tests: httpbin (gunicorn) and a real Envoy loading the
built filter, each on free 127.0.0.1 ports, stopped on teardown.

    hb = start_httpbin()
    env = start_envoy(seed_config(jwks.jwks_uri), jwks_port=jwks.port, httpbin_port=hb.port)
    r = env.get("/headers", token=tokens.GROUPS_SCOPE_JWT)
    env.stop(); hb.stop()

start_envoy() derives its config from the repository's envoy.yaml (or another file of the same
shape given as `config_path`, e.g. envoy-browser.yaml), replacing only ports, the wasm path and
the filter's JSON configuration, so the tests exercise the routes users run.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
ENVOY_BIN = Path(os.environ.get("ENVOY_BIN", VENV_BIN / "envoy"))
ENVOY_YAML = ROOT / "envoy.yaml"
WASM = Path(os.environ.get("JWT_FILTER_WASM", ROOT / "wasm" / "jwt_claims_filter.wasm"))
GATEWAY_HOST = "httpbin.example.com"
ISTIO_ISSUER = "testing@secure.istio.io"


class HarnessError(RuntimeError):
    """A process the tests need did not start; the message carries its log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log file)"


def _stop_group(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM the process group started with start_new_session, then SIGKILL if needed."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _wait_tcp(port: int, proc: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --- httpbin ---------------------------------------------------------------------------

class Httpbin:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log_path = proc, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop_group(self.proc)


def start_httpbin(port: int | None = None, workdir: Path | None = None, timeout: float = 30) -> Httpbin:
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="httpbin-"))
    log = workdir / f"httpbin-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            # --keep-alive: gunicorn closes an idle connection after 2 s by default, and an
            # Envoy that reuses it at that moment answers 503 "connection termination".
            [str(VENV_BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "2", "--threads", "8",
             "-k", "gthread", "--keep-alive", "300", "httpbin:app"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    hb = Httpbin(proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(hb.url + "/status/200", timeout=1).status_code == 200:
                return hb
        except requests.RequestException:
            time.sleep(0.1)
    hb.stop()
    raise HarnessError(f"httpbin did not start on :{port}\n--- {log} ---\n{_tail(log)}")


# --- filter configurations -------------------------------------------------------------

def seed_rule(jwks_uri: str, **overrides: Any) -> dict:
    """The seed's jwtRules entry (as in envoy.yaml) pointing at `jwks_uri`."""
    rule = {"issuer": ISTIO_ISSUER, "jwksUri": jwks_uri, "jwksCluster": "jwks",
            "timeout": "5s", "jwksCacheDuration": "300s"}
    rule.update(overrides)
    return {k: v for k, v in rule.items() if v is not None}


# envoy.yaml's claim condition: its /headers route tests x-jwt-cond-1 for "true".
SEED_CONDITIONS = [{"header": "x-jwt-cond-1", "claim": ["groups"], "exact": "group1"}]


def seed_config(jwks_uri: str, rule: dict | None = None, **top: Any) -> dict:
    """The seed filter configuration: one rule for the Istio sample issuer, claim header
    x-jwt-claim.groups, envoy.yaml's condition. `rule` overrides rule fields (None removes
    one); `top` sets top-level fields."""
    cfg = {"jwtRules": [seed_rule(jwks_uri, **(rule or {}))],
           "claimHeaders": ["x-jwt-claim.groups"], "conditions": copy.deepcopy(SEED_CONDITIONS)}
    cfg.update(top)
    return cfg


# --- Envoy -----------------------------------------------------------------------------

def _wasm_filter(cfg: dict, source: Path = ENVOY_YAML) -> dict:
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for hf in f.get("typed_config", {}).get("http_filters", []):
                    if hf["name"] == "envoy.filters.http.wasm":
                        return hf["typed_config"]["config"]
    raise HarnessError(f"{source} has no envoy.filters.http.wasm filter")


def _set_cluster_port(cfg: dict, name: str, port: int, source: Path = ENVOY_YAML) -> None:
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] == name:
            for group in cluster["load_assignment"]["endpoints"]:
                for ep in group["lb_endpoints"]:
                    ep["endpoint"]["address"]["socket_address"]["port_value"] = port
            return
    raise HarnessError(f"{source} has no cluster {name!r}")


def render_config(filter_config: dict | str, *, listener_port: int, admin_port: int,
                  httpbin_port: int, jwks_port: int, wasm: Path = WASM,
                  extra_clusters: dict[str, int] | None = None,
                  config_path: Path | None = None) -> dict:
    """envoy.yaml (or `config_path`, a file of the same shape) with the test's ports, the
    wasm's absolute path and `filter_config` (a dict is JSON-encoded, with the file's own
    `conditions` unless it sets some; a str is used verbatim, e.g. for invalid JSON).
    `extra_clusters` adds clusters {name: port on 127.0.0.1}, shaped like the jwks one."""
    source = Path(config_path) if config_path is not None else ENVOY_YAML
    cfg = copy.deepcopy(yaml.safe_load(source.read_text()))
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listener_port
    _set_cluster_port(cfg, "httpbin", httpbin_port, source)
    _set_cluster_port(cfg, "jwks", jwks_port, source)
    wasm_cfg = _wasm_filter(cfg, source)
    wasm_cfg["vm_config"]["code"]["local"]["filename"] = str(Path(wasm).resolve())
    for name, port in (extra_clusters or {}).items():
        jwks = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "jwks")
        extra = copy.deepcopy(jwks)
        extra["name"] = extra["load_assignment"]["cluster_name"] = name
        cfg["static_resources"]["clusters"].append(extra)
        _set_cluster_port(cfg, name, port, source)
    if isinstance(filter_config, dict) and "conditions" not in filter_config:
        # The file's routes test the condition headers its own configuration defines
        # (envoy.yaml: x-jwt-cond-1 for groups/group1); a test configuration that sets no
        # conditions keeps them, so that the routes mean what they mean for users.
        own = json.loads(wasm_cfg["configuration"]["value"]).get("conditions")
        if own is not None:
            filter_config = {**filter_config, "conditions": own}
    value = filter_config if isinstance(filter_config, str) else json.dumps(filter_config)
    wasm_cfg["configuration"]["value"] = value
    return cfg


class Envoy:
    """A running Envoy. `get()` sends requests to the gateway with Host httpbin.example.com."""

    def __init__(self, proc, cfg_path: Path, log_path: Path, out_path: Path,
                 listener_port: int, admin_port: int, filter_config):
        self.proc = proc
        self.cfg_path, self.log_path, self.out_path = cfg_path, log_path, out_path
        self.listener_port, self.admin_port = listener_port, admin_port
        self.filter_config = filter_config
        self.session = requests.Session()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log(self) -> str:
        """Envoy's log so far (the --log-path file plus anything it printed)."""
        parts = []
        for p in (self.out_path, self.log_path):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def log_tail(self, lines: int = 80) -> str:
        """The last `lines` log lines, without the start-up inventory of extensions."""
        keep = [ln for ln in self.log.splitlines()
                if not any(m in ln for m in ("server.cc:467]", "server.cc:547]", "server.cc:466]"))]
        return "\n".join(keep[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str, token: str | None = None, headers: dict | None = None,
            host: str = GATEWAY_HOST, timeout: float = 15, **kw) -> requests.Response:
        h = {"Host": host}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        return self.session.get(self.base_url + path, headers=h, timeout=timeout,
                                allow_redirects=False, **kw)

    def stats_text(self) -> str:
        return requests.get(self.admin_url + "/stats/prometheus", timeout=5).text

    def stats(self) -> dict[str, float]:
        """/stats/prometheus as {'name{labels}': value} (comments dropped)."""
        out: dict[str, float] = {}
        for line in self.stats_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self) -> None:
        self.session.close()
        _stop_group(self.proc)


_started = 0  # Envoys started by this process


def start_envoy(filter_config: dict | str, *, jwks_port: int, httpbin_port: int,
                concurrency: int = 2, workdir: Path | None = None, log_level: str = "info",
                component_log_level: str | None = "wasm:debug", wasm: Path = WASM,
                extra_clusters: dict[str, int] | None = None,
                rewrite: Callable[[dict], None] | None = None,
                wait_ready: bool = True, timeout: float = 60,
                config_path: Path | None = None, extra_args: list[str] | None = None) -> Envoy:
    """Starts Envoy with `filter_config` and waits until admin /ready says LIVE and the
    listener accepts connections. Raises HarnessError with the log tail if it does not.
    `rewrite` may change the rendered configuration in place before Envoy reads it (e.g. to
    swap the wasm filter for Envoy's own jwt_authn, see test_differential.py).
    With wait_ready=False it returns at once (for tests of start-up failures).
    `config_path` replaces envoy.yaml as the file the configuration is derived from.
    `extra_args` are appended to Envoy's command line (e.g. `--drain-time-s 1`)."""
    if not Path(wasm).is_file():
        raise HarnessError(f"the filter is not built: {wasm} is missing (run scripts/build.sh)")
    if not ENVOY_BIN.exists():
        raise HarnessError(f"{ENVOY_BIN} is missing (run scripts/setup.sh)")
    listener_port, admin_port = free_port(), free_port()
    cfg = render_config(filter_config, listener_port=listener_port, admin_port=admin_port,
                        httpbin_port=httpbin_port, jwks_port=jwks_port, wasm=wasm,
                        extra_clusters=extra_clusters, config_path=config_path)
    if rewrite is not None:
        rewrite(cfg)
    return launch_config(cfg, listener_port=listener_port, admin_port=admin_port,
                         filter_config=filter_config, concurrency=concurrency, workdir=workdir,
                         log_level=log_level, component_log_level=component_log_level,
                         wait_ready=wait_ready, timeout=timeout, extra_args=extra_args)


def launch_config(cfg: dict, *, listener_port: int, admin_port: int, filter_config=None,
                  concurrency: int = 2, workdir: Path | None = None, log_level: str = "info",
                  component_log_level: str | None = "wasm:debug", wait_ready: bool = True,
                  timeout: float = 60, extra_args: list[str] | None = None) -> Envoy:
    """Starts Envoy with the complete bootstrap `cfg`, whose gateway listens on
    `listener_port` and admin on `admin_port`, and waits as start_envoy() does (which renders
    `cfg` from envoy.yaml; tests/support/istio.py has it from the compiler)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="envoy-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Named by a per-session count as well as the port: a port freed by an Envoy that has
    # stopped can be handed out again, and Envoy appends to an existing --log-path file, so a
    # later Envoy's log would start with the earlier one's lines.
    global _started
    _started += 1
    name = f"envoy-{_started}-{listener_port}"
    cfg_path = workdir / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log_path = workdir / f"{name}.log"
    out_path = workdir / f"{name}.out"
    cmd = [str(ENVOY_BIN), "-c", str(cfg_path), "--concurrency", str(concurrency),
           "--use-dynamic-base-id", "-l", log_level, "--log-path", str(log_path)]
    if component_log_level:
        cmd += ["--component-log-level", component_log_level]
    cmd += list(extra_args or [])
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    env = Envoy(proc, cfg_path, log_path, out_path, listener_port, admin_port, filter_config)
    if not wait_ready:
        return env
    try:
        _wait_ready(env, timeout)
    except HarnessError:
        env.stop()
        raise
    return env


def _wait_ready(env: Envoy, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = "no answer"
    while time.monotonic() < deadline:
        if not env.alive():
            raise HarnessError(f"Envoy exited with status {env.proc.returncode} during start-up "
                               f"(config {env.cfg_path})\n--- log tail ---\n{env.log_tail()}")
        try:
            r = requests.get(env.admin_url + "/ready", timeout=1)
            state = f"{r.status_code} {r.text.strip()}"
            if r.status_code == 200 and r.text.strip() == "LIVE":
                break
        except requests.RequestException as e:
            state = type(e).__name__
        time.sleep(0.05)
    else:
        raise HarnessError(f"Envoy not ready after {timeout}s (admin /ready: {state})"
                           f"\n--- log tail ---\n{env.log_tail()}")
    # A bare TCP connect: an HTTP request here would warm the key cache before the test.
    if not _wait_tcp(env.listener_port, env.proc, deadline):
        raise HarnessError(f"Envoy listener :{env.listener_port} does not accept connections"
                           f"\n--- log tail ---\n{env.log_tail()}")
