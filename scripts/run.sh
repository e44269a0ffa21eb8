#!/usr/bin/env bash
# Runs the seed scenario: httpbin, a JWKS server and Envoy with the filter, on 127.0.0.1.
#
#   httpbin (gunicorn)   127.0.0.1:8000
#   JWKS server          127.0.0.1:8091/jwks.json  (tests/fixtures/istio-samples/jwks.json)
#   Envoy (envoy.yaml)   127.0.0.1:8080, admin 127.0.0.1:9901
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

start jwks "$VENV/bin/python" "$ROOT/tests/support/jwks_server.py" \
  --port 8091 --jwks "$FIXTURES/jwks.json"
wait_until jwks "${PIDS[-1]}" 15 curl -fsS http://127.0.0.1:8091/jwks.json

start envoy "$VENV/bin/envoy" -c "$ROOT/envoy.yaml" --concurrency 2 --use-dynamic-base-id -l info
wait_until envoy "${PIDS[-1]}" 60 envoy_live

GROUPS_JWT="$(tr -d '\n' <"$FIXTURES/groups-scope.jwt")"
DEMO_JWT="$(tr -d '\n' <"$FIXTURES/demo.jwt")"
H='-H "Host: httpbin.example.com"'
W="-s -o /dev/null -w '%{http_code}\\n'"

try() { # try EXPECTED DESCRIPTION CURL-ARGS...: prints the command and checks it once
  local want="$1" what="$2"; shift 2
  local got
  got="$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: httpbin.example.com' "$@" || true)"
  local args="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=-]+$ ]]; then args+=" $a"; else args+=" '$a'"; fi
  done
  printf '\n# %s → %s\n' "$what" "$want"
  printf 'curl %s %s%s\n' "$W" "$H" "$args"
  [ "$got" = "$want" ] || printf '#   !! this returned %s just now\n' "$got"
}

printf '\nThe gateway is up: %s (Host: httpbin.example.com), admin %s\n' "$GATEWAY" "$ADMIN"
printf 'Logs in %s. The seed steps and what each returns:\n' "$RUN_DIR"
try 200 "an exposed path, no token" "$GATEWAY/status/200"
try 404 "/headers needs a token whose groups claim holds group1" "$GATEWAY/headers"
try 401 "an invalid token (WWW-Authenticate: Bearer ... error=\"invalid_token\")" \
  -H "Authorization: Bearer some.invalid.token" "$GATEWAY/headers"
try 200 "groups-scope.jwt (groups: group1, group2); add -v to see x-jwt-claim.groups in the body" \
  -H "Authorization: Bearer $GROUPS_JWT" "$GATEWAY/headers"
try 404 "demo.jwt: valid, but no groups claim" -H "Authorization: Bearer $DEMO_JWT" "$GATEWAY/headers"
try 404 "a forged claim header does not help" -H "x-jwt-claim.groups: group1" "$GATEWAY/headers"
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
