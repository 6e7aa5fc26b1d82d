#!/usr/bin/env bash
# The protocol core's own checks: native tests (unit, proptest, fuzz regressions), no_std and
# WASM builds, the WASM tests in Node.js and in headless Chromium, and a bounded run of each fuzz
# target. The JavaScript package, and its size, are .ci/js.sh's.
#
# Expects installed (by .ci/setup.sh):
#   - rustup stable with targets wasm32-unknown-unknown and thumbv7em-none-eabihf
#   - rustup nightly (for cargo-fuzz's sanitizers)
#   - wasm-bindgen-cli at the wasm-bindgen version in Cargo.lock (wasm-bindgen-test-runner)
#   - cargo-fuzz
#   - node (the WASM tests' default runtime)
#   - apt: chromium chromium-driver (/usr/bin/chromedriver)
# A missing rustup target, the nightly toolchain, wasm-bindgen-cli or cargo-fuzz is installed
# here; a missing apt package is an error (this script does not run apt).
#
# Environment: FUZZ_SECONDS (default 30) per fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
# WASM builds get their own target directory: switching targets and features in the shared one
# would rebuild the server's dependencies.
WASM_TARGET_DIR=$PWD/target/wasm

step() {
  local name=$1
  shift
  echo "--- core: $name"
  local t0=$SECONDS
  "$@"
  echo "--- core: $name: ok in $((SECONDS - t0)) s"
}

need_tools() {
  local installed
  installed=$(rustup target list --installed)
  for t in wasm32-unknown-unknown thumbv7em-none-eabihf; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  local wb
  wb=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
  if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q "$wb"; then
    cargo install wasm-bindgen-cli --version "$wb"
  fi
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
  local missing=()
  for tool in node chromium chromedriver; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "core.sh: missing ${missing[*]} (apt-get install chromium chromium-driver; node from nodejs)" >&2
    exit 1
  fi
}

native_tests() {
  cargo test -p iot-ws-core --features fuzzing
}

no_std_builds() {
  # thumbv7em has no std at all: this is what proves the core (and the fuzz bodies) no_std.
  cargo build -p iot-ws-core --target thumbv7em-none-eabihf
  cargo build -p iot-ws-core --target thumbv7em-none-eabihf --features fuzzing
  CARGO_TARGET_DIR=$WASM_TARGET_DIR cargo build -p iot-ws-core --target wasm32-unknown-unknown
}

wasm_tests() {
  local mode=$1
  local vars=(CARGO_TARGET_DIR="$WASM_TARGET_DIR" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner)
  if [ "$mode" = chromium ]; then
    # The runner adds --headless and --no-sandbox; core/webdriver.json adds the quiet flags.
    vars+=(WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER="$(command -v chromedriver)")
  fi
  # --tests: the doctests are the host's business, and ran natively.
  env "${vars[@]}" cargo test -p iot-ws-core --features wasm --target wasm32-unknown-unknown --tests
}

fuzz() {
  (cd fuzz && cargo +nightly fuzz build)
  local target work
  for target in parse_message session client http_head router; do
    # New inputs go to a scratch corpus; the committed seeds are only read.
    work=$(mktemp -d)
    if ! (cd fuzz && cargo +nightly fuzz run "$target" "$work" "corpus/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$work.log" 2>&1); then
      grep -E "panicked|ERROR|Test unit written" "$work.log" >&2 || tail -40 "$work.log" >&2
      echo "core.sh: fuzz target $target crashed; the input is in fuzz/artifacts/$target/" >&2
      exit 1
    fi
    echo "$target: $(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$work.log" | grep -oE '[0-9]+$') runs, no crash"
    rm -rf "$work" "$work.log"
  done
}

t_start=$SECONDS
step "tools" need_tools
step "native tests (unit, proptest, fuzz regressions)" native_tests
step "no_std builds (thumbv7em, wasm32)" no_std_builds
step "WASM tests in Node.js" wasm_tests node
step "WASM tests in headless Chromium" wasm_tests chromium
step "fuzz (${FUZZ_SECONDS} s per target)" fuzz
echo "--- core: all ok in $((SECONDS - t_start)) s"
