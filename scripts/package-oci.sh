#!/usr/bin/env bash
# Packages the built module as an OCI image layout, without any Docker daemon, so Istio can pull
# it from a registry through WasmPlugin `url: oci://…`. It prints the manifest digest for the
# WasmPlugin's `sha256`.
#
#   scripts/package-oci.sh [--wasm PATH] [--out DIR] [--tag TAG] [--update-manifest [YAML]]
#
#   --wasm PATH        the module (env WASM_MODULE; default wasm/jwt_claims_filter.wasm, which
#                      scripts/build.sh writes)
#   --out DIR          the image layout (env OCI_DIR; default wasm/oci)
#   --tag TAG          the tag recorded in index.json (default: the version in Cargo.toml)
#   --update-manifest  also write the digest into the WasmPlugin's `sha256`
#                      (default deploy/istio/wasmplugin.yaml)
#
# The image is Istio's "compat" Wasm image variant: one standard OCI layer
# (application/vnd.oci.image.layer.v1.tar+gzip) holding `plugin.wasm`, and the manifest
# annotation module.wasm.image/variant=compat. Its content is what a `docker build` of the
# Dockerfile holds (one layer, /plugin.wasm), every OCI tool can copy it, and Istio's image
# fetcher accepts it. Istio's other variant (application/vnd.module.wasm.content.layer.v1+wasm)
# needs exactly two layers in Istio's fetcher, and generic tools show it as an opaque artifact.
#
# Istio compares WasmPlugin `sha256` for oci:// URLs with the digest of the image manifest (not
# of the .wasm file, which is what it checks for http(s):// URLs). The layout is
# reproducible: the same module bytes give the same digest (fixed tar metadata, gzip -n).
#
# Publish it without changing the manifest, so the digest stays valid:
#   skopeo copy --preserve-digests oci:wasm/oci:0.1.0 docker://ghcr.io/example/jwt-claims-filter:0.1.0
set -euo pipefail
. "$(dirname "$0")/lib.sh"

wasm="${WASM_MODULE:-$ROOT/wasm/jwt_claims_filter.wasm}"
out="${OCI_DIR:-$ROOT/wasm/oci}"
tag=""
update_manifest=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wasm) wasm="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --update-manifest)
      update_manifest="$ROOT/deploy/istio/wasmplugin.yaml"
      if [ $# -gt 1 ] && [ "${2#--}" = "$2" ]; then update_manifest="$2"; shift; fi
      shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done
[ -n "$tag" ] || tag="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1)"

if [ ! -f "$wasm" ]; then
  log "no module at $wasm: run scripts/build.sh first, or pass --wasm PATH"
  exit 1
fi
# Istio refuses a fetched module that does not start with the Wasm magic number.
if [ "$(head -c 4 "$wasm" | od -An -tx1 | tr -d ' \n')" != "0061736d" ]; then
  log "$wasm is not a WebAssembly module (no \\0asm header)"
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
blobs="$work/layout/blobs/sha256"
mkdir -p "$work/rootfs" "$blobs"
cp "$wasm" "$work/rootfs/plugin.wasm"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }
# put_blob FILE: stores FILE under its digest and prints "<hex> <size>".
put_blob() {
  local hex; hex="$(sha256_of "$1")"
  cp "$1" "$blobs/$hex"
  echo "$hex $(size_of "$1")"
}

# The layer: a tar whose only entry is plugin.wasm, with every piece of metadata fixed so the
# bytes depend on the module alone.
tar --format=ustar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=0644 \
  -C "$work/rootfs" -cf "$work/layer.tar" plugin.wasm
diff_id="$(sha256_of "$work/layer.tar")"
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
read -r layer_hex layer_size < <(put_blob "$work/layer.tar.gz")

# The image config. architecture/os name the WASI target the way Go does (GOARCH=wasm,
# GOOS=wasip1); rootfs.diff_ids holds the digest of the uncompressed layer, as the spec asks.
printf '{"architecture":"wasm","os":"wasip1","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$diff_id" > "$work/config.json"
read -r config_hex config_size < <(put_blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}],"annotations":{"module.wasm.image/variant":"compat"}}' \
  "$config_hex" "$config_size" "$layer_hex" "$layer_size" > "$work/manifest.json"
read -r manifest_hex manifest_size < <(put_blob "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest_hex" "$manifest_size" "$tag" > "$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"

# Replace only what a layout consists of, never the whole directory the caller named.
mkdir -p "$out"
rm -rf "$out/blobs" "$out/index.json" "$out/oci-layout"
cp -R "$work/layout/." "$out/"

if [ -n "$update_manifest" ]; then
  if [ "$(grep -cE '^[[:space:]]*sha256:' "$update_manifest")" != 1 ]; then
    log "$update_manifest must have exactly one sha256: line"
    exit 1
  fi
  sed -i -E "s/^([[:space:]]*sha256:).*/\1 \"$manifest_hex\"/" "$update_manifest"
  log "wrote sha256 $manifest_hex into $update_manifest"
fi

log "OCI image layout in $out (tag $tag), module $wasm"
log "WasmPlugin sha256 (the manifest digest Istio checks for oci:// URLs):"
echo "$manifest_hex"
