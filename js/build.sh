#!/usr/bin/env bash
# Builds the JavaScript package from the core: one WASM build through wasm-opt -Oz, both
# wasm-bindgen flavours (`web` for browsers and bundlers, `nodejs` for Node.js), then `npm pack`. Prints the sizes and, last, the tarball's path.
#
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli at the version in Cargo.lock,
# binaryen (wasm-opt), npm. Environment: PACK_DIR (default js/) for the tarball.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# The same target directory as .ci/core.sh: WASM builds there do not disturb the native ones.
WASM_TARGET_DIR=$PWD/target/wasm
PACK_DIR=${PACK_DIR:-$PWD/js}

CARGO_TARGET_DIR=$WASM_TARGET_DIR cargo rustc --quiet -p iot-ws-core --release --features wasm \
  --target wasm32-unknown-unknown --crate-type cdylib
raw=$WASM_TARGET_DIR/wasm32-unknown-unknown/release/iot_ws_core.wasm

# wasm-opt runs on rustc's output, before wasm-bindgen: Debian 12's binaryen (108) turns the
# externref table that wasm-bindgen adds into a funcref one, and the module then fails to load.
opt_dir=$(mktemp -d)
trap 'rm -rf "$opt_dir"' EXIT
# The features rustc enables by default for wasm32; older binaryen does not read them itself.
wasm-opt -Oz --enable-bulk-memory --enable-mutable-globals --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-reference-types --enable-multivalue "$raw" -o "$opt_dir/iot_ws_core.wasm"

rm -rf js/dist
wasm-bindgen --target web --no-typescript --out-dir js/dist/web "$opt_dir/iot_ws_core.wasm"
wasm-bindgen --target nodejs --no-typescript --out-dir js/dist/node "$opt_dir/iot_ws_core.wasm"
# The package is ESM ("type": "module"); the nodejs flavour's glue is CommonJS.
echo '{ "type": "commonjs" }' >js/dist/node/package.json

wasm=js/dist/web/iot_ws_core_bg.wasm
echo "js: WASM $(stat -c %s "$raw") bytes from rustc, $(stat -c %s "$wasm") after wasm-opt -Oz and" \
  "wasm-bindgen, $(gzip -9c "$wasm" | wc -c) gzipped; JavaScript (web flavour)" \
  "$(cat js/src/connect.js js/src/web.js js/dist/web/iot_ws_core.js | gzip -9c | wc -c) bytes gzipped" >&2

mkdir -p "$PACK_DIR"
tarball=$(cd js && npm pack --silent --pack-destination "$PACK_DIR")
echo "js: $(stat -c %s "$PACK_DIR/$tarball") bytes packed" >&2
echo "$PACK_DIR/$tarball"
