# The Wasm module as a container image for Istio's WasmPlugin (url: oci://…): one layer holding
# /plugin.wasm, the file name Istio's image fetcher looks for. Nothing else: no base image, no
# shell, no entrypoint; the image is never run, only pulled and unpacked by istio-agent.
#
#   scripts/build.sh
#   docker build -t ghcr.io/example/jwt-claims-filter:0.1.0 .
#
# scripts/package-oci.sh builds the same layout without a Docker daemon (and reproducibly, so
# its digest can go into the WasmPlugin's sha256); a `docker build` image has another digest.
FROM scratch
COPY wasm/jwt_claims_filter.wasm ./plugin.wasm
