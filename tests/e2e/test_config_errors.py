"""An invalid filter configuration (issue 2): `on_configure` returns false and Envoy reports
it. With the filter in a static listener, Envoy 1.40 then refuses the whole config: it logs
"Unable to create Wasm plugin <name>" and exits with status 1 during start-up. The filter's
own log line names the offending field, and nothing panics or crashes."""
from __future__ import annotations

import pytest

from support.envoy import seed_config

PLUGIN = "jwt_claims_filter"
CRASH_MARKERS = ("panicked", "Caught Segmentation", "Caught Aborted", "wasm trap", "Backtrace", "unreachable")


def _bad_configs(uri):
    def rule(**kw):
        return seed_config(uri, rule=kw)

    return {
        # id: (config, text the filter's error must name)
        "unknown-top-level-field": (seed_config(uri, claimHeader=["x-jwt-claim.groups"]), "claimHeader"),
        "unknown-rule-field": (rule(jwksUrl="http://127.0.0.1:1/jwks.json"), "jwksUrl"),
        "wrong-type-top-level": (seed_config(uri, requireToken="yes"), "requireToken"),
        "wrong-type-rule": (rule(forwardOriginalToken="false"), "forwardOriginalToken"),
        "wrong-type-list": (seed_config(uri, claimHeaders="x-jwt-claim.groups"), "claimHeaders"),
        "bad-duration": (rule(timeout="5 seconds"), "timeout"),
        "both-jwks-and-uri": (rule(jwks='{"keys":[]}'), "jwks"),
        "not-json": ('{"jwtRules": [', None),
    }


CASES = list(_bad_configs("u"))


@pytest.mark.parametrize("case", CASES)
def test_invalid_config_is_refused(launch, seed_jwks, case):
    cfg, field = _bad_configs(seed_jwks.jwks_uri)[case]
    env = launch(cfg, jwks_port=seed_jwks.port, wait_ready=False)
    try:
        env.proc.wait(timeout=20)
    except Exception:
        pytest.fail(f"Envoy still running 20s after start with an invalid filter config:\n{env.log_tail()}")
    log = env.log
    assert env.proc.returncode == 1, f"exit status {env.proc.returncode} (negative: killed by a signal)\n{env.log_tail()}"
    assert f"Unable to create Wasm plugin {PLUGIN}" in log, env.log_tail()
    for marker in CRASH_MARKERS:
        assert marker not in log, f"{marker!r} in the log:\n{env.log_tail()}"
    filter_lines = [line for line in log.splitlines() if f"wasm log {PLUGIN}" in line]
    assert filter_lines, f"the filter logged nothing about its config:\n{env.log_tail()}"
    if field:
        assert any(field in line for line in filter_lines), \
            f"no filter log line names {field!r}:\n" + "\n".join(filter_lines)


def test_valid_config_starts(seed_envoy):
    """The counterpart: the seed config is accepted (so the refusals above are about the fields)."""
    assert seed_envoy.alive()
    assert "Unable to create Wasm plugin" not in seed_envoy.log
