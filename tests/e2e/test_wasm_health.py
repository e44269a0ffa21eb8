"""After the rest of the suite the seed Envoy is alive and its wasm VM never failed."""
from __future__ import annotations

import re


def test_seed_envoy_healthy(seed_envoy, groups_token):
    assert seed_envoy.alive()
    assert seed_envoy.get("/headers", token=groups_token).status_code == 200
    log = seed_envoy.log
    for bad in ("panicked", "Function: proxy_on_", "wasm trap", "Segmentation fault", "Caught Aborted"):
        assert bad not in log, f"{bad!r} in Envoy log:\n" + "\n".join(
            line for line in log.splitlines() if bad in line)[:2000]
    failed = {k: v for k, v in seed_envoy.stats().items()
              if re.search(r"wasm.*(fail|crash)", k) and v > 0}
    assert failed == {}, failed
