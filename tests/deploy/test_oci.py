"""scripts/package-oci.sh: the OCI image layout is well formed and carries the module unchanged.

It packages the real module (wasm/jwt_claims_filter.wasm) when scripts/build.sh has made it;
otherwise a minimal valid Wasm module made here, so the packaging is always tested.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "package-oci.sh"
BUILT_MODULE = ROOT / "wasm" / "jwt_claims_filter.wasm"
WASMPLUGIN = ROOT / "deploy" / "istio" / "wasmplugin.yaml"

# The smallest valid module: magic number and version 1 (Istio checks the magic number).
EMPTY_MODULE = b"\0asm\x01\0\0\0"

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(scope="module")
def module(tmp_path_factory) -> Path:
    if BUILT_MODULE.exists():
        return BUILT_MODULE
    path = tmp_path_factory.mktemp("module") / "module.wasm"
    # A custom section named "test" makes the dummy differ from any real build.
    path.write_bytes(EMPTY_MODULE + b"\x00\x05\x04test")
    return path


def package(module: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), "--wasm", str(module), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def layout(module, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("oci")
    result = package(module, out)
    assert result.returncode == 0, result.stderr
    return out, result.stdout.strip().splitlines()[-1]


def blob(layout_dir: Path, descriptor: dict) -> bytes:
    """The blob a descriptor points at, checked against the descriptor's digest and size."""
    algorithm, _, hex_digest = descriptor["digest"].partition(":")
    assert algorithm == "sha256"
    data = (layout_dir / "blobs" / "sha256" / hex_digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hex_digest, descriptor
    assert len(data) == descriptor["size"], descriptor
    return data


def read_layout(layout_dir: Path) -> tuple[dict, dict, dict, bytes]:
    index = json.loads((layout_dir / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["mediaType"] == MANIFEST_TYPE
    manifest = json.loads(blob(layout_dir, entry))
    config = json.loads(blob(layout_dir, manifest["config"]))
    (layer,) = manifest["layers"]
    return index, manifest, config, blob(layout_dir, layer)


def test_layout_files(layout):
    out, _ = layout
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((out / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    # The tag is the crate's version, as in the WasmPlugin's url.
    version = re.search(r'^version = "(.+)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": version}


def test_every_digest_and_size_matches_its_blob(layout):
    out, printed = layout
    index, manifest, config, _ = read_layout(out)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MANIFEST_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_TYPE]
    # Istio's "compat" Wasm image variant, as its spec asks for this layer media type.
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    # No blob beyond the three the index reaches.
    referenced = {d["digest"].split(":")[1] for d in (index["manifests"][0], manifest["config"], *manifest["layers"])}
    assert {p.name for p in (out / "blobs" / "sha256").iterdir()} == referenced
    # The printed digest is the manifest's: what Istio compares WasmPlugin.sha256 with.
    assert re.fullmatch(r"[0-9a-f]{64}", printed)
    assert index["manifests"][0]["digest"] == f"sha256:{printed}"


def test_layer_holds_exactly_the_module(layout, module):
    out, _ = layout
    _, _, config, layer = read_layout(out)
    # gzip header without a file name or timestamp (gzip -n), or the digest would vary by build.
    assert layer[:3] == b"\x1f\x8b\x08" and layer[3] & 0x08 == 0 and layer[4:8] == b"\0\0\0\0"
    tar_bytes = gzip.decompress(layer)
    # diff_ids are the digests of the uncompressed layers.
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"]}
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "plugin.wasm" and member.isfile()
        assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
        assert tar.extractfile(member).read() == module.read_bytes()


def test_layout_is_reproducible(layout, module, tmp_path):
    _, first = layout
    # Other mtime and path of the same bytes: the same digest.
    copy = tmp_path / "copy.wasm"
    shutil.copyfile(module, copy)
    os.utime(copy, (1_000_000_000, 1_000_000_000))
    result = package(copy, tmp_path / "again")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == first
    # Different bytes: a different digest.
    other = tmp_path / "other.wasm"
    other.write_bytes(module.read_bytes() + b"\x00\x02\x01x")
    result = package(other, tmp_path / "other")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] != first


def test_repackaging_replaces_the_previous_layout(module, tmp_path):
    out = tmp_path / "oci"
    (out / "blobs" / "sha256").mkdir(parents=True)
    (out / "blobs" / "sha256" / ("0" * 64)).write_bytes(b"stale")
    (out / "keep.txt").write_text("not part of a layout")
    result = package(module, out)
    assert result.returncode == 0, result.stderr
    assert not (out / "blobs" / "sha256" / ("0" * 64)).exists()
    assert (out / "keep.txt").exists()
    read_layout(out)


def test_update_manifest_writes_the_digest_as_a_quoted_string(module, tmp_path):
    manifest = tmp_path / "wasmplugin.yaml"
    shutil.copyfile(WASMPLUGIN, manifest)
    result = package(module, tmp_path / "oci", "--update-manifest", str(manifest))
    assert result.returncode == 0, result.stderr
    digest = result.stdout.strip().splitlines()[-1]
    text = manifest.read_text()
    assert re.findall(r"^\s*sha256:.*$", text, re.M) == [f'  sha256: "{digest}"']
    # Nothing else changed.
    original = WASMPLUGIN.read_text()
    assert re.sub(r"(?m)^\s*sha256:.*$", "", text) == re.sub(r"(?m)^\s*sha256:.*$", "", original)


@pytest.mark.parametrize(
    "content, message",
    [(None, "run scripts/build.sh first"), (b"not wasm", "not a WebAssembly module")],
    ids=["missing", "not-wasm"],
)
def test_refuses_a_missing_or_non_wasm_module(tmp_path, content, message):
    path = tmp_path / "module.wasm"
    if content is not None:
        path.write_bytes(content)
    result = package(path, tmp_path / "oci")
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "oci" / "index.json").exists()


def test_dockerfile_puts_the_module_where_the_layer_does():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines == ["FROM scratch", "COPY wasm/jwt_claims_filter.wasm ./plugin.wasm"]
