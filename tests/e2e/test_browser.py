"""The browser path: envoy-browser.yaml (Istio's "Accessing ingress services using a browser",
hosts "*") driven by a real headless Chromium (Debian's `chromium`, installed by
scripts/setup.sh).

A browser sends its own Host (127.0.0.1:<port>) and cannot set Authorization, so /headers is
reached with the token in the `access_token` query parameter, which the filter reads by
default. Each page load runs one Chromium process with a fresh profile; its net log gives the
HTTP status of the page, --dump-dom the page itself.

Chromium is kept off every network but the loopback: names resolve to nothing but 127.0.0.1
(--host-resolver-rules) and anything not on the loopback goes to a dead proxy.
"""
from __future__ import annotations

import html
import json
import os
import re
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from support import tokens
from support.envoy import ENVOY_YAML, ROOT, Envoy, seed_config

BROWSER_YAML = ROOT / "envoy-browser.yaml"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PAGE_TIMEOUT = 25  # seconds for one Chromium run; a load here takes about one


# --- Chromium --------------------------------------------------------------------------

class Page:
    """One page load: what --dump-dom printed and the statuses Chromium's net log saw."""

    def __init__(self, url: str, dom: str, responses: list[tuple[str, int]], stderr: str):
        self.url, self.dom, self.responses, self.stderr = url, dom, responses, stderr

    @property
    def status(self) -> int:
        """The HTTP status of the page itself (the main-frame request for self.url)."""
        statuses = [s for u, s in self.responses if u == self.url]
        assert statuses, f"Chromium's net log has no response for {self.url}: {self.responses}"
        return statuses[-1]

    def pre_json(self) -> dict:
        """A JSON document as Chromium shows it: the text of the page's <pre>."""
        m = re.search(r"<pre[^>]*>(.*?)</pre>", self.dom, re.S)
        assert m, f"no <pre> in the page Chromium rendered:\n{self.dom[:2000]}"
        return json.loads(html.unescape(m.group(1)))


def _responses(netlog: Path) -> list[tuple[str, int]]:
    """(url, status) of every HTTP response in a Chromium net log."""
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls: dict[int, str] = {}
    out: list[tuple[str, int]] = []
    for event in log["events"]:
        kind, source, params = names.get(event["type"]), event["source"]["id"], event.get("params") or {}
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            urls[source] = params["url"]
        elif kind == "HTTP_TRANSACTION_READ_RESPONSE_HEADERS":
            status_line = params["headers"][0]  # "HTTP/1.1 200 OK"
            out.append((urls.get(source, "?"), int(status_line.split()[1])))
    return out


def browse(url: str, *mode: str, tmp: Path) -> Page:
    """Loads `url` in a fresh headless Chromium; `mode` is --dump-dom or --screenshot=…"""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium, which "
                    "scripts/setup.sh installs (apt-get install chromium)", pytrace=False)
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp))
    netlog = profile / "netlog.json"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}",
           # Only the loopback: no name resolves, and whatever is not 127.0.0.1 (never
           # bypassed by Chromium's proxy rules) goes to a port where nothing listens.
           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
           "--proxy-server=http://127.0.0.1:9",
           f"--log-net-log={netlog}", *mode, url]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=PAGE_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"Chromium did not finish loading {url} in {PAGE_TIMEOUT}s\n{e.stderr or ''}")
    stderr = "\n".join(ln for ln in run.stderr.splitlines() if "dbus" not in ln)
    assert run.returncode == 0, f"chromium exited with {run.returncode}:\n{stderr[-3000:]}"
    assert netlog.exists(), f"Chromium wrote no net log:\n{stderr[-3000:]}"
    responses = _responses(netlog)
    # Chromium's own requests elsewhere (it asks Google services at start) fail at once; a
    # response from elsewhere would mean the confinement above does not hold.
    reached = [(u, s) for u, s in responses if urlsplit(u).hostname != "127.0.0.1"]
    assert not reached, f"Chromium got answers from outside the loopback: {reached}"
    return Page(url, run.stdout, responses, stderr)


# --- the gateway -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser_envoy(launch, seed_jwks) -> Envoy:
    """Envoy with envoy-browser.yaml: the seed filter configuration, any Host."""
    return launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port,
                  config_path=BROWSER_YAML)


@pytest.fixture
def tmp(tmp_path) -> Path:
    return tmp_path


def test_browser_variant_is_envoy_yaml_with_the_tasks_browser_routes():
    """envoy-browser.yaml keeps envoy.yaml's filter and clusters; the virtual host is the
    task's browser section: one host "*" routing /headers with no claim condition (so the
    filter has no condition to write), everything else 404."""
    seed, browser = (yaml.safe_load(p.read_text()) for p in (ENVOY_YAML, BROWSER_YAML))

    def hcm(cfg):
        return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]

    (browser_host,) = hcm(browser)["route_config"].pop("virtual_hosts")
    assert browser_host["domains"] == ["*"]
    assert [r["match"] for r in browser_host["routes"]] == [{"prefix": "/headers"}, {"prefix": "/"}]
    assert "headers" not in browser_host["routes"][0]["match"]
    seed_rc = hcm(seed)["route_config"]
    seed_rc.pop("virtual_hosts")
    seed_rc.pop("request_headers_to_remove", None)

    def plugin(cfg):
        (wasm,) = [f for f in hcm(cfg)["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
        value = wasm["typed_config"]["config"]["configuration"].pop("value")
        return json.loads(value)

    seed_plugin, browser_plugin = plugin(seed), plugin(browser)
    seed_plugin.pop("conditions", None)
    assert browser_plugin == seed_plugin
    # Everything else is the same file.
    assert browser == seed


def test_headers_page_shows_the_claim_header(browser_envoy, tmp):
    url = f"{browser_envoy.base_url}/headers?access_token={tokens.GROUPS_SCOPE_JWT}"
    page = browse(url, "--dump-dom", tmp=tmp)
    assert page.status == 200, page.responses
    headers = page.pre_json()["headers"]
    assert headers.get("X-Jwt-Claim.Groups") == "group1,group2", headers
    assert headers.get("Host") == f"127.0.0.1:{browser_envoy.listener_port}", headers
    assert "HeadlessChrome" in headers.get("User-Agent", ""), headers
    # The filter took the token from the query and did not hand it on.
    assert "Authorization" not in headers
    assert tokens.GROUPS_SCOPE_JWT.split(".")[2] not in page.dom


@pytest.mark.parametrize("path, status", [
    ("/status/200", 404),          # the browser section exposes /headers only
    ("/headers", 200),             # no claim condition there: no token needed
    ("/not-exposed", 404),         # not in the VirtualService
    ("/headers?access_token=some.invalid.token", 401),
], ids=["status-not-exposed", "headers-without-token", "unexposed", "invalid-token"])
def test_page_status(browser_envoy, tmp, path, status):
    page = browse(browser_envoy.base_url + path, "--dump-dom", tmp=tmp)
    assert page.status == status, page.responses
    if status == 401:
        # Chromium shows the filter's plain-text reason.
        assert "Jwt is not well formed" in page.dom, page.dom[:2000]


def test_screenshot_is_a_png(browser_envoy, tmp):
    shot = tmp / "headers.png"
    url = f"{browser_envoy.base_url}/headers?access_token={tokens.GROUPS_SCOPE_JWT}"
    page = browse(url, f"--screenshot={shot}", "--window-size=800,600", tmp=tmp)
    assert page.status == 200, page.responses
    assert shot.exists() and shot.stat().st_size > 1000, "no screenshot, or an empty one"
    width, height = _check_png(shot.read_bytes())
    assert (width, height) == (800, 600)


def _check_png(data: bytes) -> tuple[int, int]:
    """Checks the PNG signature and every chunk's CRC; returns the IHDR size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks, size = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks, chunks
    assert size and size[0] > 0 and size[1] > 0
    # The image data inflates to height rows of (1 filter byte + pixels): a real picture.
    raw = zlib.decompress(b"".join(
        data[p + 8:p + 8 + struct.unpack(">I", data[p:p + 4])[0]]
        for p in _chunk_offsets(data) if data[p + 4:p + 8] == b"IDAT"))
    assert len(raw) >= size[1] * (1 + size[0]), "IDAT holds less than the image size says"
    return size


def _chunk_offsets(data: bytes) -> list[int]:
    pos, out = 8, []
    while pos < len(data):
        out.append(pos)
        pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
    return out
