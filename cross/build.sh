#!/usr/bin/env bash
# Builds static iot-ws-server binaries for the ARM gateways (issue 4).
#
#   cross/build.sh [TRIPLE...]     default: aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf
#
# On a fresh Debian 12 machine (as root) it first installs what is missing: the Debian cross
# linkers with their C libraries, qemu-user-static, file and openssl (for cross/smoke.sh), and the rustup
# targets. Linker settings live in .cargo/config.toml.
# Output: target/<triple>/$PROFILE/iot-ws-server (under $CARGO_TARGET_DIR if set)
#
# Environment: PROFILE (default gateway: opt-level z, LTO, strip; see Cargo.toml),
#              CROSS_SKIP_INSTALL=1 to only check for the tools, never install.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE=${PROFILE:-gateway}
DEFAULT_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${DEFAULT_TARGETS[@]}"); fi

log() { printf 'cross/build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Debian packages each target needs; the libc6-dev-*-cross ones must be named explicitly when
# recommends are off, or linking fails on crt1.o.
packages_for() {
  case "$1" in
    aarch64-unknown-linux-musl) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static ;;
    armv7-unknown-linux-gnueabihf) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static ;;
    x86_64-unknown-linux-musl) echo gcc libc6-dev ;;
    *) die "unsupported target $1 (supported: ${DEFAULT_TARGETS[*]} x86_64-unknown-linux-musl)" ;;
  esac
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_packages() {
  local wanted=(file openssl) missing=() pkg target
  for target in "${targets[@]}"; do
    read -r -a pkgs <<<"$(packages_for "$target")"
    wanted+=("${pkgs[@]}")
  done
  for pkg in "${wanted[@]}"; do
    installed "$pkg" || [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "${CROSS_SKIP_INSTALL:-0}" = 1 ] || [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]} (as root: apt-get install -y --no-install-recommends ${missing[*]})"
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_rust_targets() {
  local have target missing=()
  have=$(rustup target list --installed)
  for target in "${targets[@]}"; do
    grep -qx "$target" <<<"$have" || missing+=("$target")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "${CROSS_SKIP_INSTALL:-0}" = 1 ] && die "missing rustup targets: ${missing[*]}"
  log "rustup target add ${missing[*]}"
  rustup target add "${missing[@]}"
}

for target in "${targets[@]}"; do packages_for "$target" >/dev/null; done
install_packages
install_rust_targets

# A RUSTFLAGS in the environment replaces the targets' rustflags of .cargo/config.toml: keep the
# binaries static anyway (it does not reach build scripts, which run on the host).
if [ -n "${RUSTFLAGS:-}" ]; then export RUSTFLAGS="$RUSTFLAGS -C target-feature=+crt-static"; fi

for target in "${targets[@]}"; do
  log "building iot-ws-server for $target (profile $PROFILE)"
  start=$SECONDS
  # Without the `keys` feature (keygen, token, --demo): a gateway verifies tokens, the platform
  # mints them; RSA key generation and JWT signing are 124 KB of the armv7 binary.
  cargo build --profile "$PROFILE" -p iot-ws-server --target "$target" --no-default-features
  bin="${CARGO_TARGET_DIR:-target}/$target/$PROFILE/iot-ws-server"
  [ -x "$bin" ] || die "cargo reported success but $bin is missing"
  log "$target: $(stat -c %s "$bin") bytes in $((SECONDS - start)) s -> $bin"
done
