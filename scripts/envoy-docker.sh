#!/usr/bin/env bash
# Runs the seed gateway (envoy.yaml + the built module) in the official Envoy image, the way a
# user tries the filter with "Envoy in Docker". When no Docker engine answers, it says so and
# runs the local Envoy (.venv/bin/envoy) instead, with the same configuration file and the same
# Envoy flags. Either way it also starts httpbin and a JWKS server serving the Istio sample
# jwks.json on this machine; the container shares the host network, so envoy.yaml's 127.0.0.1
# addresses mean the same thing on both paths. Ctrl-C or SIGTERM stops everything it started.
#
#   scripts/envoy-docker.sh [--port 8080] [--admin-port 9901] [--concurrency 2]
#                           [--log-level info] [--httpbin-port 8000] [--jwks-port 8091]
#                           [--wasm wasm/jwt_claims_filter.wasm]
#                           [--image envoyproxy/envoy:v1.40-latest] [--local]
#
#   --local  skip the Docker check and run the local Envoy.
# Environment: ENVOY_IMAGE (the image), DOCKER_HOST & co. (which engine `docker` asks).
#
# The configuration is envoy.yaml with the ports above and the module's absolute path. The
# container mounts the configuration and the module at the same absolute paths as on the host,
# so both paths run the very same file. The container uses the host's network (--network host),
# which needs a Linux Docker engine (Docker Desktop only with its host networking enabled).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

port=8080 admin_port=9901 concurrency=2 log_level=info httpbin_port=8000 jwks_port=8091
wasm="$ROOT/wasm/jwt_claims_filter.wasm"
image="${ENVOY_IMAGE:-envoyproxy/envoy:v1.40-latest}"
force_local=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --admin-port) admin_port="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --log-level) log_level="$2"; shift 2 ;;
    --httpbin-port) httpbin_port="$2"; shift 2 ;;
    --jwks-port) jwks_port="$2"; shift 2 ;;
    --wasm) wasm="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --local) force_local=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done
for n in "$port" "$admin_port" "$concurrency" "$httpbin_port" "$jwks_port"; do
  case "$n" in ''|*[!0-9]*) log "not a number: '$n'"; exit 2 ;; esac
done

# What the local processes need: the venv (httpbin, gunicorn, Envoy) and the module.
if [ ! -x "$VENV/bin/gunicorn" ] || [ ! -x "$VENV/bin/envoy" ]; then "$ROOT/scripts/setup.sh"; fi
if [ ! -f "$wasm" ]; then
  if [ "$wasm" = "$WASM_OUT" ] && [ -x "$ROOT/scripts/build.sh" ]; then
    "$ROOT/scripts/build.sh"
  else
    log "no module at $wasm (scripts/build.sh writes $WASM_OUT)"; exit 1
  fi
fi
wasm="$(cd "$(dirname "$wasm")" && pwd)/$(basename "$wasm")"

# Something already listening would answer in place of what this script starts.
for p in "$port" "$admin_port" "$httpbin_port" "$jwks_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    log "127.0.0.1:$p is already in use; stop whatever listens there or pick other ports"
    exit 1
  fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/envoy-docker.XXXXXX")"
chmod 755 "$work"
pids=()
container=""
cleanup() {
  trap - EXIT HUP INT PIPE TERM
  if [ -n "$container" ]; then docker stop -t 5 "$container" >/dev/null 2>&1 || true; fi
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

# envoy.yaml with this run's ports and the module's absolute path.
config="$work/envoy.yaml"
"$VENV/bin/python" - "$ROOT/envoy.yaml" "$config" "$port" "$admin_port" "$httpbin_port" \
  "$jwks_port" "$wasm" <<'PY'
import json, sys
from urllib.parse import urlsplit, urlunsplit
import yaml

src, dst, port, admin_port, httpbin_port, jwks_port, wasm = sys.argv[1:]
cfg = yaml.safe_load(open(src))
cfg["admin"]["address"]["socket_address"]["port_value"] = int(admin_port)
for listener in cfg["static_resources"]["listeners"]:
    listener["address"]["socket_address"]["port_value"] = int(port)
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            for hf in f.get("typed_config", {}).get("http_filters", []):
                if hf["name"] != "envoy.filters.http.wasm":
                    continue
                wasm_cfg = hf["typed_config"]["config"]
                wasm_cfg["vm_config"]["code"]["local"]["filename"] = wasm
                plugin = json.loads(wasm_cfg["configuration"]["value"])
                for rule in plugin.get("jwtRules", []):
                    uri = urlsplit(rule.get("jwksUri", ""))
                    if uri.hostname == "127.0.0.1":
                        rule["jwksUri"] = urlunsplit(uri._replace(netloc=f"127.0.0.1:{jwks_port}"))
                wasm_cfg["configuration"]["value"] = json.dumps(plugin, indent=2)
ports = {"httpbin": int(httpbin_port), "jwks": int(jwks_port)}
for cluster in cfg["static_resources"]["clusters"]:
    if cluster["name"] in ports:
        for group in cluster["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                ep["endpoint"]["address"]["socket_address"]["port_value"] = ports[cluster["name"]]
with open(dst, "w") as out:
    yaml.safe_dump(cfg, out, sort_keys=False)
PY
chmod 644 "$config"

wait_port() {  # wait_port PORT PID NAME: until PORT accepts connections, or PID dies.
  local _
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { log "$3 exited during start-up"; return 1; }
    sleep 0.1
  done
  log "$3 does not listen on 127.0.0.1:$1"; return 1
}

# The upstream and the IdP stand-in: httpbin (gunicorn) and a static JWKS server.
"$VENV/bin/gunicorn" -b "127.0.0.1:$httpbin_port" -w 2 -k gthread --threads 8 \
  --log-level warning httpbin:app &
pids+=($!)
wait_port "$httpbin_port" "${pids[-1]}" httpbin
mkdir "$work/jwks"
cp "$ROOT/tests/fixtures/istio-samples/jwks.json" "$work/jwks/jwks.json"
"$VENV/bin/python" -m http.server "$jwks_port" --bind 127.0.0.1 --directory "$work/jwks" \
  >"$work/jwks.log" 2>&1 &
pids+=($!)
wait_port "$jwks_port" "${pids[-1]}" "JWKS server"

# The same Envoy flags on both paths; only the way Envoy is started differs.
envoy_args=(-c "$config" --concurrency "$concurrency" --log-level "$log_level" --use-dynamic-base-id)

if [ -z "$force_local" ] && command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
  container="jwt-claims-filter-envoy-$$"
  log "Docker engine answers: running $image"
  log "envoy ${envoy_args[*]}"
  docker run --rm --name "$container" --network host \
    -v "$config:$config:ro" -v "$wasm:$wasm:ro" \
    "$image" "${envoy_args[@]}" &
else
  if [ -n "$force_local" ]; then
    log "--local: running the local Envoy ($VENV/bin/envoy)"
  else
    log "no Docker engine answers (docker info failed): running the local Envoy ($VENV/bin/envoy) with the same configuration"
  fi
  log "envoy ${envoy_args[*]}"
  "$VENV/bin/envoy" "${envoy_args[@]}" &
fi
pids+=($!)
envoy_pid="${pids[-1]}"

# Ready when the admin interface says LIVE (module loaded, listener up).
for _ in $(seq 1 600); do
  kill -0 "$envoy_pid" 2>/dev/null || { log "Envoy exited during start-up"; exit 1; }
  if [ "$(curl -s --max-time 1 "http://127.0.0.1:$admin_port/ready" 2>/dev/null)" = "LIVE" ]; then break; fi
  sleep 0.1
done
[ "$(curl -s --max-time 1 "http://127.0.0.1:$admin_port/ready" 2>/dev/null)" = "LIVE" ] ||
  { log "Envoy is not ready after 60 s"; exit 1; }

samples="$ROOT/tests/fixtures/istio-samples"
cat <<EOF
Envoy is ready: gateway http://127.0.0.1:$port, admin http://127.0.0.1:$admin_port (Ctrl-C stops all)
  curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: httpbin.example.com' http://127.0.0.1:$port/status/200
  curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: httpbin.example.com' http://127.0.0.1:$port/headers
  curl -s -H 'Host: httpbin.example.com' -H "Authorization: Bearer \$(cat $samples/groups-scope.jwt)" http://127.0.0.1:$port/headers
EOF

wait "$envoy_pid" || true
log "Envoy exited"
