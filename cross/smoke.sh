#!/usr/bin/env bash
# Smoke test of the ARM gateway binaries built by cross/build.sh (issue 4).
#
#   cross/smoke.sh [TRIPLE...]     default: aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf
#
# For each target, under qemu-user (called explicitly: no binfmt_misc here):
#   - the key pair and a device token come from the host's build (`cargo run -- keygen`, `token`):
#     the gateway builds have no `keys` feature, and the ARM binary's `keygen` must say so (exit 2);
#   - it runs as a real server on loopback, in-memory registry, actuator credentials set;
#   - tests/node/smoke.js (WebSocket-Node, as the agents and the dashboard) checks register (200),
#     actuation delivery (1024, also a fragmented body) and ping (202 PONG);
#   - SIGTERM stops it within STOP_SECS, with status 0;
#   - the same round trip over wss://: a throwaway CA and pair (bench/tls-pair.sh, openssl), the
#     server started with --tls-cert/--tls-key, smoke.js trusting that CA (--ca);
#   - `file` says statically linked, and the binary is at most 2.5 MiB (TLS is always in).
# Environment: PROFILE (default gateway), STOP_SECS (default 10), CARGO_TARGET_DIR (as for the build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

PROFILE=${PROFILE:-gateway}
STOP_SECS=${STOP_SECS:-10}
MAX_BYTES=$((5 * 1024 * 1024 / 2))
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf); fi

log() { printf 'cross/smoke: %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

qemu_for() {
  case "$1" in
    aarch64-*) echo qemu-aarch64-static ;;
    armv7-*) echo qemu-arm-static ;;
    *) die "no qemu-user runner known for $1" ;;
  esac
}

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v node >/dev/null || die "node is not installed (apt-get install nodejs)"
if [ ! -d tests/node/node_modules/websocket ]; then
  log "installing tests/node dependencies (npm ci)"
  (cd tests/node && npm ci --no-audit --no-fund >/dev/null)
fi

# A free loopback port below the ephemeral range (32768+), where outgoing connections take ports.
pick_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# Starts the server on a free port, with any further arguments; sets server_pid and port.
# Retries if the port got taken.
start_server() {
  local qemu=$1 bin=$2 dir=$3 attempt
  shift 3
  for attempt in 1 2 3; do
    port=$(pick_port)
    : >"$dir/server.log"
    env -u DATABASE_URL -u VCAP_SERVICES -u VCAP_APPLICATION -u PORT \
      IOT_WS_ACTUATOR_USERNAME=smoke-actuator IOT_WS_ACTUATOR_PASSWORD=smoke-secret \
      "$qemu" "$bin" --listen "127.0.0.1:$port" --public-key "$dir/keys/public.pem" "$@" \
      >"$dir/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do
      grep -q "listening on" "$dir/server.log" && return 0
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    log "server did not start on port $port (attempt $attempt):"
    sed 's/^/    /' "$dir/server.log" >&2
  done
  die "the server never printed 'listening on'"
}

stop_server() {
  local dir=$1 status=0
  kill -TERM "$server_pid"
  for _ in $(seq 1 $((STOP_SECS * 10))); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    sed 's/^/    /' "$dir/server.log" >&2
    die "server still running ${STOP_SECS} s after SIGTERM"
  fi
  wait "$server_pid" || status=$?
  server_pid=
  [ "$status" -eq 0 ] || { sed 's/^/    /' "$dir/server.log" >&2; die "server exited with status $status after SIGTERM"; }
}

# tests/node/smoke.js against URL (further arguments go to it); shows the server's log on failure.
smoke() {
  local target=$1 dir=$2 url=$3
  shift 3
  if ! node tests/node/smoke.js --url "$url" --device-id "$device" --token "$token" \
    --username smoke-actuator --password smoke-secret --timeout-secs 15 "$@"; then
    sed 's/^/    /' "$dir/server.log" >&2
    die "$target: smoke.js failed against $url"
  fi
}

summary=()
for target in "${targets[@]}"; do
  qemu=$(qemu_for "$target")
  command -v "$qemu" >/dev/null || die "$qemu not found (cross/build.sh installs qemu-user-static)"
  bin="${CARGO_TARGET_DIR:-$root/target}/$target/$PROFILE/iot-ws-server"
  [ -x "$bin" ] || die "$bin is missing: run cross/build.sh $target first"
  dir="$work/$target"
  mkdir -p "$dir"
  start=$SECONDS

  kind=$(file -b "$bin")
  case "$kind" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$target: not a static binary: $kind" ;;
  esac
  size=$(stat -c %s "$bin")
  [ "$size" -le "$MAX_BYTES" ] || die "$target: $size bytes, above the 2.5 MiB ($MAX_BYTES) limit"

  log "$target: keygen refused under $qemu; keys and token from the host's build"
  status=0
  "$qemu" "$bin" keygen --dir "$dir/keys" 2>"$dir/keygen.err" || status=$?
  if [ "$status" != 2 ] || ! grep -q "not in this build" "$dir/keygen.err"; then
    die "$target: keygen without the keys feature: status $status, $(cat "$dir/keygen.err")"
  fi
  host=(cargo run --quiet -p iot-ws-server --)
  "${host[@]}" keygen --dir "$dir/keys" >/dev/null || die "$target: the host's keygen failed"
  device="smoke-device-$target"
  token=$("${host[@]}" token --private-key "$dir/keys/private.pem" --device-id "$device" --ttl 600)

  start_server "$qemu" "$bin" "$dir"
  log "$target: server up on 127.0.0.1:$port; running tests/node/smoke.js"
  smoke "$target" "$dir" "ws://127.0.0.1:$port"
  stop_server "$dir"

  bash bench/tls-pair.sh "$dir/tls" >/dev/null || die "$target: bench/tls-pair.sh failed"
  start_server "$qemu" "$bin" "$dir" --tls-cert "$dir/tls/cert.pem" --tls-key "$dir/tls/key.pem"
  log "$target: wss:// server up on 127.0.0.1:$port; running tests/node/smoke.js over TLS"
  smoke "$target" "$dir" "wss://localhost:$port" --ca "$dir/tls/ca.pem"
  stop_server "$dir"
  summary+=("$(printf '%-32s %9d bytes (%s KiB)  static  ws:// and wss:// smoke %3d s' \
    "$target" "$size" "$((size / 1024))" "$((SECONDS - start))")")
done

log "passed:"
printf '  %s\n' "${summary[@]}" >&2
