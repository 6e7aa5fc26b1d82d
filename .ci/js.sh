#!/usr/bin/env bash
# The JavaScript package (js/): built and packed by js/build.sh, installed from its tarball with
# the ws package into a temporary project, and tested there (js/test/) against the release
# server in Node.js and in headless Chromium; its TypeScript declarations are compiled with tsc.
#
# Expects installed (by .ci/setup.sh): node >= 20 and npm, wasm-bindgen-cli at the version in
# Cargo.lock, binaryen (wasm-opt), chromium and chromium-driver, the wasm32-unknown-unknown
# rustup target. npm packages come from the registry, into the temporary project only.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
t_start=$SECONDS

missing=()
for tool in node npm wasm-bindgen wasm-opt chromium chromedriver; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "js.sh: missing ${missing[*]} (bash .ci/setup.sh installs them)" >&2
  exit 1
fi

# The tests run the shipped build of the server.
cargo build --release --quiet -p iot-ws-server
server_bin=$PWD/target/release/iot-ws-server

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(PACK_DIR=$work bash js/build.sh)

project=$work/project
mkdir "$project"
cat >"$project/package.json" <<JSON
{
  "name": "iot-ws-client-tests",
  "private": true,
  "type": "module",
  "dependencies": { "iot-ws-client": "file:$tarball", "ws": "8.18.3", "typescript": "5.9.3" }
}
JSON
(cd "$project" && npm install --no-audit --no-fund --loglevel=error)
cp js/test/*.js js/test/types.ts js/test/tsconfig.json "$project/"

# The declarations, as a TypeScript user compiles against them.
(cd "$project" && npx --no-install tsc -p tsconfig.json)
echo "js.sh: the TypeScript declarations compile (tsc --strict)"

(cd "$project" && IOT_WS_SERVER_BIN=$server_bin node --test --test-concurrency=1 node.test.js demo.test.js chromium.test.js)
echo "js.sh: all ok in $((SECONDS - t_start)) s"
