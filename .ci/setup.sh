#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine (as root), skipping what is
# already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)

apt_packages=(
  postgresql-15                      # the tests start their own clusters from its binaries
  chromium chromium-driver           # WASM tests in a headless browser
  binaryen                           # wasm-opt, for the WASM size figure
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
  qemu-user-static file              # ARM smoke tests
  openssl                            # throwaway TLS CAs and pairs (bench/tls-pair.sh): wss:// smoke and bench
  shellcheck                         # deploy script checks
  dpkg-dev man-db systemd procps     # .ci/deb.sh: dpkg-shlibdeps, the man page check, systemd-analyze, /bin/kill
  nodejs npm                         # WebSocket-Node clients (used only if node is missing)
)
missing=()
for p in "${apt_packages[@]}"; do
  case "$p" in
    nodejs|npm) command -v node >/dev/null && command -v npm >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
installed_targets=$(rustup target list --installed)
for t in wasm32-unknown-unknown thumbv7em-none-eabihf aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done
rustup +nightly target list --installed | grep -qx wasm32-unknown-unknown || rustup +nightly target add wasm32-unknown-unknown

if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
# The mutation step's tool (~4.5 min to build); its major version fixes the mutants it makes.
cargo mutants --version 2>/dev/null | grep -q '^cargo-mutants 27\.' || cargo install --locked cargo-mutants --version '~27.1'

if [ ! -d tests/node/node_modules ]; then
  (cd tests/node && npm ci --no-audit --no-fund)
fi
echo "setup: done"
