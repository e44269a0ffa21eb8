"""The Istio compiler (scripts/istio-envoy.sh, tools/istio-envoy) for the tests: compile Istio
resources, and serve the Envoy bootstrap it writes, on free 127.0.0.1 ports.

    r = compile([DEPLOY], emit="istio")                 # CompletedProcess: stdout, stderr, returncode
    jwks = start_https_jwks(tmp)                       # the task's https jwksUri, served locally
    env = start_compiled([DEPLOY, jwks.destination_rule], workdir=tmp,
                         upstreams={"httpbin:8000": f"127.0.0.1:{hb.port}", **jwks.upstream})
    env.get("/headers", token=tokens.GROUPS_SCOPE_JWT)  # an Envoy of tests/support/envoy.py
    env.compiled.stderr                                 # the compiler's warnings
    env.stop(); jwks.stop()

The module Envoy loads is envoy.py's WASM (JWT_FILTER_WASM or wasm/jwt_claims_filter.wasm).
"""
from __future__ import annotations

import re
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from .envoy import ENVOY_BIN, ROOT, WASM, Envoy, HarnessError, free_port, launch_config
from .jwks_server import JwksServer
from .tls import TestCA, server_context
from .tokens import ISTIO_JWKS_PATH

ISTIO_ENVOY = ROOT / "scripts" / "istio-envoy.sh"
DEPLOY = ROOT / "deploy" / "istio"
# The task's jwksUri (deploy/istio/requestauthentication.yaml), split for the local server.
TASK_JWKS_HOST = "raw.githubusercontent.com"
TASK_JWKS_PATH = "/istio/istio/release-1.28/security/tools/jwt/samples/jwks.json"
# Istio's "Ingress Gateways" task, the page's source text (copied from ../shared/fixtures).
TASK_TEXT = ROOT / "tests" / "fixtures" / "istio-task" / "ingress-gateways.md"
# What the page's {{< github_file >}} stands for, as deploy/istio resolves it.
GITHUB_FILE = f"https://{TASK_JWKS_HOST}/istio/istio/release-1.28"


def task_yaml() -> list[str]:
    """The YAML of every `kubectl apply -f - <<EOF` in the task, in the page's order, each as
    the page prints it (indentation of the list item removed, {{< github_file >}} resolved):
    [0] the Gateway, [1] the first VirtualService, [2] the RequestAuthentication, [3] the
    claim VirtualService, [4] the browser section's Gateway and VirtualService (`---` between)."""
    text = TASK_TEXT.read_text()
    blocks = re.findall(r"^([ \t]*)\$ kubectl apply -f - <<EOF\n(.*?)^\1EOF$", text, re.M | re.S)
    return [textwrap.dedent(body).replace("{{< github_file >}}", GITHUB_FILE)
            for _, body in blocks]


def compile(inputs: Iterable[Path | str], *, emit: str = "envoy",
            binds: Mapping[int | str, str] | None = None,
            upstreams: Mapping[str, str] | None = None, admin: str | None = None,
            wasm: Path | str | None = None, extra: Iterable[str] = (),
            timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs scripts/istio-envoy.sh on `inputs` (files or folders) and returns its result
    without judging it: stdout is the output, stderr the refusal or warnings.
    `binds` maps a Gateway server port to a listen address ({80: "127.0.0.1:18080"}),
    `upstreams` a destination or JWKS host:port to an address ({"httpbin:8000": "127.0.0.1:8000"});
    options left None are the compiler's defaults. `extra` is appended before the inputs.
    The timeout covers the compiler's first build."""
    cmd = [str(ISTIO_ENVOY), "--emit", emit]
    for port, addr in (binds or {}).items():
        cmd += ["--bind", f"{port}={addr}"]
    for host, addr in (upstreams or {}).items():
        cmd += ["--upstream", f"{host}={addr}"]
    if admin is not None:
        cmd += ["--admin", admin]
    if wasm is not None:
        cmd += ["--wasm", str(wasm)]
    cmd += list(extra) + [str(i) for i in inputs]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def start_compiled(inputs: Iterable[Path | str], *, upstreams: Mapping[str, str], workdir: Path,
                   gateway_port: int = 80, wasm: Path = WASM, extra: Iterable[str] = (),
                   **launch) -> Envoy:
    """Compiles `inputs` with --emit envoy, the Gateway server port `gateway_port` bound to a
    free port (env.listener_port), admin on another and the module's absolute path, writes the
    bootstrap into `workdir` and starts Envoy on it, ready (tests/support/envoy.py's
    launch_config; `launch` passes its options on, e.g. concurrency). `env.compiled` is the
    compile's CompletedProcess. A refused compile raises HarnessError with its stderr."""
    if not Path(wasm).is_file():
        raise HarnessError(f"the filter is not built: {wasm} is missing (run scripts/build.sh)")
    if not ENVOY_BIN.exists():
        raise HarnessError(f"{ENVOY_BIN} is missing (run scripts/setup.sh)")
    inputs = list(inputs)
    listener_port, admin_port = free_port(), free_port()
    result = compile(inputs, emit="envoy", binds={gateway_port: f"127.0.0.1:{listener_port}"},
                     upstreams=upstreams, admin=f"127.0.0.1:{admin_port}",
                     wasm=Path(wasm).resolve(), extra=extra)
    if result.returncode != 0:
        raise HarnessError(f"istio-envoy refused {[str(i) for i in inputs]} (status "
                           f"{result.returncode}):\n{result.stderr}")
    try:
        cfg = yaml.safe_load(result.stdout)
    except yaml.YAMLError as e:
        raise HarnessError(f"istio-envoy wrote no YAML: {e}\n{result.stdout[:2000]}") from e
    if not isinstance(cfg, dict):
        raise HarnessError(f"istio-envoy wrote no bootstrap:\n{result.stdout[:2000]}")
    env = launch_config(cfg, listener_port=listener_port, admin_port=admin_port,
                        workdir=workdir, **launch)
    env.compiled = result  # type: ignore[attr-defined]
    return env


@dataclass
class HttpsJwks:
    """The Istio sample key set served over HTTPS as `host` would serve it, on 127.0.0.1."""

    server: JwksServer
    host: str
    ca_path: Path
    # A DestinationRule for `host` that trusts the test CA, to compile with the resources.
    destination_rule: Path

    @property
    def upstream(self) -> dict[str, str]:
        """The --upstream entry that sends `host`:443 here."""
        return {f"{self.host}:443": f"127.0.0.1:{self.server.port}"}

    def stop(self) -> None:
        self.server.stop()


def start_https_jwks(workdir: Path, *, host: str = TASK_JWKS_HOST,
                     path: str = TASK_JWKS_PATH) -> HttpsJwks:
    """Serves tests/fixtures/istio-samples/jwks.json at https://`host``path` (really on a
    127.0.0.1 port) with a certificate for `host` from a new test CA, and writes into
    `workdir` the DestinationRule (mode SIMPLE, caCertificates: the CA) that makes Envoy trust
    it. Nothing of the test CA is trusted by anything else."""
    workdir = Path(workdir)
    ca = TestCA("istio task test CA", stem=f"{host}-ca").write(workdir)
    cert = ca.issue(host).write(workdir)
    server = JwksServer(body=ISTIO_JWKS_PATH.read_bytes(), ssl_context=server_context(cert),
                        jwks_path=path).start()
    rule = {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": {"name": host.replace(".", "-"), "namespace": "istio-system"},
        "spec": {"host": host,
                 "trafficPolicy": {"tls": {"mode": "SIMPLE", "caCertificates": str(ca.cert_path)}}},
    }
    dr = workdir / f"{host}-destinationrule.yaml"
    dr.write_text(yaml.safe_dump(rule, sort_keys=False))
    return HttpsJwks(server, host, ca.cert_path, dr)
