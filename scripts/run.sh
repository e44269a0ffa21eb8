#!/usr/bin/env bash
# Runs the seed scenario: httpbin, a JWKS server and Envoy with the filter, on 127.0.0.1.
#
#   httpbin (gunicorn)   127.0.0.1:8000
#   JWKS server          127.0.0.1:8091/jwks.json  (tests/fixtures/istio-samples/jwks.json)
#   Envoy (envoy.yaml)   127.0.0.1:8080, admin 127.0.0.1:9901
#
#   scripts/run.sh [--istio DIR [--upstream HOST:PORT=ADDR:PORT]...]
#
# --istio DIR serves Istio resources instead of envoy.yaml: DIR (e.g. deploy/istio, or
# deploy/istio/browser) is compiled by scripts/istio-envoy.sh --emit envoy, its Gateway's
# server port bound to 127.0.0.1:8080, the VirtualService's `httpbin:8000` sent to the httpbin
# above, and the RequestAuthentication's jwksUri (one; the task's is
# https://raw.githubusercontent.com/...) to the JWKS server on 127.0.0.1:8091, which then serves
# the sample key set at that URI's path. The URI's scheme is kept, as the compiler keeps it: for
# an https jwksUri the JWKS server speaks HTTPS with a certificate for the URI's host from a
# CA made for this run (in target/run/tls, trusted by nothing else), and a DestinationRule for
# that host with caCertificates: that CA (target/run/jwks-destinationrule.yaml) is compiled
# with DIR, so Envoy verifies the server as it would verify GitHub, and nothing leaves the
# machine. Further --upstream options go to the compiler as they are (more destinations, or
# another jwksUri); the bootstrap Envoy runs is target/run/envoy-istio.yaml.
#
# Installs what is missing (setup.sh), builds the filter (build.sh), starts the three, prints
# the seed's curl commands with working tokens, and stays in the foreground. Ctrl-C or
# SIGTERM stops everything it started; so does any of the three dying.
# RUN_SKIP_BUILD=1 skips setup.sh and build.sh (for a quick restart after a build).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

FIXTURES="$ROOT/tests/fixtures/istio-samples"
RUN_DIR="$ROOT/target/run"
GATEWAY=http://127.0.0.1:8080
ADMIN=http://127.0.0.1:9901

ISTIO_DIR=""
EXTRA_UPSTREAMS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --istio) [ $# -ge 2 ] || { log "--istio needs a folder or file"; exit 2; }; ISTIO_DIR="$2"; shift 2 ;;
    --upstream) [ $# -ge 2 ] || { log "--upstream needs HOST:PORT=ADDR:PORT"; exit 2; }
                EXTRA_UPSTREAMS+=(--upstream "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument $1 (see --help)"; exit 2 ;;
  esac
done
if [ ${#EXTRA_UPSTREAMS[@]} -gt 0 ] && [ -z "$ISTIO_DIR" ]; then
  log "--upstream only goes with --istio"; exit 2
fi
if [ -n "$ISTIO_DIR" ]; then
  [ -e "$ISTIO_DIR" ] || { log "$ISTIO_DIR does not exist"; exit 2; }
  ISTIO_DIR="$(cd "$(dirname "$ISTIO_DIR")" && pwd)/$(basename "$ISTIO_DIR")"
fi

if [ "${RUN_SKIP_BUILD:-}" != 1 ]; then
  "$ROOT/scripts/setup.sh"
  "$ROOT/scripts/build.sh"
fi
[ -f "$WASM_OUT" ] || { log "$WASM_OUT is missing: scripts/build.sh did not produce it"; exit 1; }

for port in 8000 8091 8080 9901; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    log "127.0.0.1:$port is already in use; stop whatever listens there first"
    exit 1
  fi
done

mkdir -p "$RUN_DIR"

# --istio helpers (Python from the venv; tests/support has the JWKS server and the test CA).
# PLAN_PY DIR: "port N" per Gateway server port, "jwks URI" for the RequestAuthentication's
# jwksUri, "hosts *" for a Gateway taking any host (the task's browser section); refuses what
# one listener and one local JWKS server cannot stand for.
PLAN_PY='
import sys, pathlib, yaml
root = pathlib.Path(sys.argv[1])
files = sorted(p for p in root.glob("*") if p.suffix in (".yaml", ".yml")) if root.is_dir() else [root]
ports, uris, any_host = set(), set(), False
for f in files:
    for doc in yaml.safe_load_all(f.read_text()):
        kind, spec = (doc or {}).get("kind"), (doc or {}).get("spec") or {}
        if kind == "Gateway":
            ports |= {s["port"]["number"] for s in spec.get("servers", [])}
            any_host = any_host or any("*" in s.get("hosts", []) for s in spec.get("servers", []))
        if kind == "RequestAuthentication":
            uris |= {r["jwksUri"] for r in spec.get("jwtRules", []) if "jwksUri" in r}
if len(ports) > 1:
    sys.exit(f"run.sh: {root} has Gateway ports {sorted(ports)}; 127.0.0.1:8080 serves one")
if len(uris) > 1:
    sys.exit(f"run.sh: {root} has jwksUris {sorted(uris)}; the local JWKS server stands for one")
for p in sorted(ports): print("port", p)
for u in sorted(uris): print("jwks", u)
if any_host: print("hosts", "*")
'
# SPLIT_PY URI: "scheme host port path".
SPLIT_PY='
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.scheme, u.hostname, u.port or {"https": 443, "http": 80}[u.scheme], u.path or "/")
'
# JWKS_PY URI RUN_DIR: the sample key set on 127.0.0.1:8091 at the URI path; for https, with a
# certificate for the URI host from a new CA (RUN_DIR/tls/ca.pem) and a DestinationRule
# trusting that CA (RUN_DIR/jwks-destinationrule.yaml).
JWKS_PY='
import signal, sys, threading, pathlib, yaml
from urllib.parse import urlsplit
sys.path.insert(0, "'"$ROOT"'/tests")
from support.jwks_server import JwksServer
from support.tls import TestCA, server_context
uri, run = urlsplit(sys.argv[1]), pathlib.Path(sys.argv[2])
ctx = None
if uri.scheme == "https":
    ca = TestCA("run.sh JWKS CA", stem="ca").write(run / "tls")
    ctx = server_context(ca.issue(uri.hostname).write(run / "tls"))
    rule = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
            "metadata": {"name": "run-sh-jwks", "namespace": "istio-system"},
            "spec": {"host": uri.hostname,
                     "trafficPolicy": {"tls": {"mode": "SIMPLE", "caCertificates": str(ca.cert_path)}}}}
    (run / "jwks-destinationrule.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))
body = pathlib.Path("'"$FIXTURES"'/jwks.json").read_bytes()
srv = JwksServer(port=8091, body=body, ssl_context=ctx, jwks_path=uri.path or "/").start()
print("serving", uri.geturl(), "on 127.0.0.1:8091", flush=True)
stop = threading.Event()
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
stop.wait()
srv.stop()
'
# Job control: every background job gets its own process group, so stopping one takes its
# children with it (gunicorn's workers), and a terminal's Ctrl-C reaches only this script,
# whose trap then stops them in order.
set -m
PIDS=()
NAMES=()

start() { # start NAME CMD...: runs CMD in the background, output in $RUN_DIR/NAME.log
  local name="$1"; shift
  "$@" >"$RUN_DIR/$name.log" 2>&1 </dev/null &
  PIDS+=("$!"); NAMES+=("$name")
  log "started $name (pid $!), log: $RUN_DIR/$name.log"
}

stopping=""
stop_all() {
  [ -n "$stopping" ] && return; stopping=1
  local i pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[$i]}"
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[$i]}"
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "${NAMES[$i]} ignored SIGTERM; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  log "stopped ${NAMES[*]}"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

wait_until() { # wait_until NAME PID SECONDS CMD...: until CMD succeeds, or NAME dies
  local name="$1" pid="$2" secs="$3"; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up; the end of $RUN_DIR/$name.log:"
      tail -n 30 "$RUN_DIR/$name.log" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name not up after ${secs}s; the end of $RUN_DIR/$name.log:"
      tail -n 30 "$RUN_DIR/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  log "$name is up"
}
envoy_live() { [ "$(curl -fsS "$ADMIN/ready")" = LIVE ] && curl -sS -o /dev/null "$GATEWAY/"; }

# --keep-alive 300: gunicorn's default (2 s) closes idle connections that Envoy may reuse.
start httpbin "$VENV/bin/gunicorn" -b 127.0.0.1:8000 -w 2 --threads 8 -k gthread --keep-alive 300 httpbin:app
wait_until httpbin "${PIDS[-1]}" 30 curl -fsS http://127.0.0.1:8000/status/200

if [ -z "$ISTIO_DIR" ]; then
  start jwks "$VENV/bin/python" "$ROOT/tests/support/jwks_server.py" \
    --port 8091 --jwks "$FIXTURES/jwks.json"
  wait_until jwks "${PIDS[-1]}" 15 curl -fsS http://127.0.0.1:8091/jwks.json
  ENVOY_CONFIG="$ROOT/envoy.yaml"
else
  # What DIR needs: its Gateway server ports and its jwksUri, one line each.
  plan="$("$VENV/bin/python" -c "$PLAN_PY" "$ISTIO_DIR")" || exit 2
  binds=() jwks_uri="" any_host=""
  while read -r what value; do
    case "$what" in
      port) binds+=(--bind "$value=127.0.0.1:8080") ;;
      jwks) jwks_uri="$value" ;;
      hosts) any_host=1 ;;
    esac
  done <<<"$plan"
  [ ${#binds[@]} -gt 0 ] || { log "$ISTIO_DIR has no Gateway server to bind to 127.0.0.1:8080"; exit 2; }
  inputs=("$ISTIO_DIR") upstreams=(--upstream httpbin:8000=127.0.0.1:8000)
  if [ -n "$jwks_uri" ]; then
    start jwks "$VENV/bin/python" -c "$JWKS_PY" "$jwks_uri" "$RUN_DIR"
    read -r scheme host port path <<<"$("$VENV/bin/python" -c "$SPLIT_PY" "$jwks_uri")"
    if [ "$scheme" = https ]; then
      wait_until jwks "${PIDS[-1]}" 15 curl -fsS --cacert "$RUN_DIR/tls/ca.pem" \
        --resolve "$host:8091:127.0.0.1" "https://$host:8091$path"
      inputs+=("$RUN_DIR/jwks-destinationrule.yaml")
    else
      wait_until jwks "${PIDS[-1]}" 15 curl -fsS "http://127.0.0.1:8091$path"
    fi
    upstreams+=(--upstream "$host:$port=127.0.0.1:8091")
  fi
  ENVOY_CONFIG="$RUN_DIR/envoy-istio.yaml"
  log "compiling $ISTIO_DIR: istio-envoy.sh ${binds[*]} ${upstreams[*]} ${EXTRA_UPSTREAMS[*]}"
  "$ROOT/scripts/istio-envoy.sh" --emit envoy "${binds[@]}" --admin 127.0.0.1:9901 \
    --wasm "$WASM_OUT" "${upstreams[@]}" "${EXTRA_UPSTREAMS[@]}" "${inputs[@]}" >"$ENVOY_CONFIG" ||
    { log "istio-envoy.sh refused $ISTIO_DIR (above)"; exit 2; }
fi

start envoy "$VENV/bin/envoy" -c "$ENVOY_CONFIG" --concurrency 2 --use-dynamic-base-id -l info
wait_until envoy "${PIDS[-1]}" 60 envoy_live

GROUPS_JWT="$(tr -d '\n' <"$FIXTURES/groups-scope.jwt")"
DEMO_JWT="$(tr -d '\n' <"$FIXTURES/demo.jwt")"
H='-H "Host: httpbin.example.com"'
HOST_ARGS=(-H 'Host: httpbin.example.com')
W="-s -o /dev/null -w '%{http_code}\\n'"

try() { # try EXPECTED DESCRIPTION CURL-ARGS...: prints the command and checks it once
  local want="$1" what="$2"; shift 2
  local got
  got="$(curl -s -o /dev/null -w '%{http_code}' "${HOST_ARGS[@]}" "$@" || true)"
  local args="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=-]+$ ]]; then args+=" $a"; else args+=" '$a'"; fi
  done
  printf '\n# %s → %s\n' "$what" "$want"
  printf 'curl %s%s%s\n' "$W" "${H:+ $H}" "$args"
  [ "$got" = "$want" ] || printf '#   !! this returned %s just now\n' "$got"
}

if [ -n "${any_host:-}" ]; then
  printf '\nThe gateway is up: %s (any Host), admin %s, serving %s\n' "$GATEWAY" "$ADMIN" "$ISTIO_DIR"
  printf 'Logs in %s. The browser section of the task and what each returns:\n' "$RUN_DIR"
  # curl's own Host (127.0.0.1:8080), as a browser sends it.
  HOST_ARGS=() H=""
  try 200 "/headers, any Host (open $GATEWAY/headers in a browser)" "$GATEWAY/headers"
  try 404 "the browser section routes /headers only" "$GATEWAY/status/200"
  try 401 "the RequestAuthentication still refuses an invalid token" \
    "$GATEWAY/headers?access_token=some.invalid.token"
  try 200 "a valid token in the query: the page shows x-jwt-claim.groups" \
    "$GATEWAY/headers?access_token=$GROUPS_JWT"
else
  printf '\nThe gateway is up: %s (Host: httpbin.example.com), admin %s, serving %s\n' \
    "$GATEWAY" "$ADMIN" "${ISTIO_DIR:-envoy.yaml}"
  printf 'Logs in %s. The seed steps and what each returns:\n' "$RUN_DIR"
  try 200 "an exposed path, no token" "$GATEWAY/status/200"
  try 404 "/headers needs a token whose groups claim holds group1" "$GATEWAY/headers"
  try 401 "an invalid token (WWW-Authenticate: Bearer ... error=\"invalid_token\")" \
    -H "Authorization: Bearer some.invalid.token" "$GATEWAY/headers"
  try 200 "groups-scope.jwt (groups: group1, group2); add -v to see x-jwt-claim.groups in the body" \
    -H "Authorization: Bearer $GROUPS_JWT" "$GATEWAY/headers"
  try 404 "demo.jwt: valid, but no groups claim" -H "Authorization: Bearer $DEMO_JWT" "$GATEWAY/headers"
  try 404 "a forged claim header does not help" -H "x-jwt-claim.groups: group1" "$GATEWAY/headers"
fi
printf '\nCtrl-C stops httpbin, the JWKS server and Envoy.\n'

# Stay until a signal arrives or one of the three exits.
set +e
wait -n
rc=$?
[ -n "$stopping" ] && exit "$rc"
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    log "${NAMES[$i]} exited (status $rc); the end of $RUN_DIR/${NAMES[$i]}.log:"
    tail -n 20 "$RUN_DIR/${NAMES[$i]}.log" >&2
  fi
done
exit 1
