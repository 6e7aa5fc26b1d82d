#!/usr/bin/env bash
# CI step for issue 4: the ARM gateway binaries, built and smoke-tested under qemu.
#   1. tests/node: npm ci (if needed) and the self-tests of the WebSocket-Node bridge and smoke client;
#   2. cross/build.sh: installs what is missing, builds both static ARM binaries (gateway profile);
#   3. cross/smoke.sh: runs each under qemu-user as a real server and checks it with smoke.js,
#      over ws:// and over wss:// (a throwaway CA, bench/tls-pair.sh).
# Runs as root on a fresh Debian 12 clone; about 3 minutes cold on 2 cores.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== .ci/cross.sh: %s\n' "$*"; }

command -v node >/dev/null || { echo ".ci/cross.sh: node is required (Debian: apt-get install nodejs npm)" >&2; exit 1; }

step "tests/node (WebSocket-Node bridge and smoke client)"
if [ ! -d tests/node/node_modules/websocket ]; then
  (cd tests/node && npm ci --no-audit --no-fund)
fi
(cd tests/node && node --test)

step "cross/build.sh"
start=$SECONDS
bash cross/build.sh
echo ".ci/cross.sh: cross builds took $((SECONDS - start)) s"

step "cross/smoke.sh"
start=$SECONDS
bash cross/smoke.sh
echo ".ci/cross.sh: qemu smoke tests took $((SECONDS - start)) s"

step "systemd-analyze verify cross/iot-ws-server.service"
if command -v systemd-analyze >/dev/null; then
  # The unit names the installed path; verify checks that ExecStart is executable, so point it
  # at the host's build for the check.
  unit_dir=$(mktemp -d)
  cargo build --quiet -p iot-ws-server
  sed "s|^ExecStart=.*|ExecStart=$PWD/target/debug/iot-ws-server|" cross/iot-ws-server.service \
    >"$unit_dir/iot-ws-server.service"
  systemd-analyze verify "$unit_dir/iot-ws-server.service"
  rm -r "$unit_dir"
else
  echo ".ci/cross.sh: no systemd-analyze on this machine; the unit is not verified"
fi
