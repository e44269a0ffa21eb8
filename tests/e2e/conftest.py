"""Fixtures for the end-to-end suite: one httpbin and one seed JWKS server per session, and
Envoys per distinct filter configuration (session-, module- or function-scoped).

Run: .venv/bin/pytest tests/e2e -q   (needs wasm/jwt_claims_filter.wasm: scripts/build.sh)
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ → `support`

from support import tokens  # noqa: E402
from support.envoy import Envoy, seed_config, start_envoy, start_httpbin  # noqa: E402
from support.jwks_server import JwksServer  # noqa: E402


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def httpbin(workdir):
    hb = start_httpbin(workdir=workdir)
    yield hb
    hb.stop()


@pytest.fixture(scope="session")
def seed_jwks():
    """Serves the Istio sample jwks.json. Shared: tests must not change its mode or keys."""
    with JwksServer(keyset="istio") as srv:
        yield srv


@pytest.fixture(scope="session")
def launch(httpbin, workdir):
    """launch(filter_config, jwks_port=..., **start_envoy_kwargs) → a ready Envoy; every
    Envoy launched is stopped at the end of the session at the latest."""
    started: list[Envoy] = []

    def _launch(filter_config, *, jwks_port: int, **kw) -> Envoy:
        env = start_envoy(filter_config, jwks_port=jwks_port, httpbin_port=httpbin.port,
                          workdir=workdir, **kw)
        started.append(env)
        return env

    yield _launch
    for env in started:
        env.stop()


@pytest.fixture(scope="session")
def seed_envoy(launch, seed_jwks):
    """Envoy with the seed configuration of envoy.yaml, keys from the seed JWKS server."""
    env = launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port)
    yield env
    env.stop()


@pytest.fixture(scope="session")
def groups_token() -> str:
    return tokens.GROUPS_SCOPE_JWT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the log tail of every Envoy the test used."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Envoy):
                report.sections.append((f"envoy log tail ({name})", value.log_tail(40)))
