#!/usr/bin/env bash
# Deploys iot-ws-server to Cloud Foundry, into the space `cf target` currently points at, as the app
# "<space>-websocket" (the name the original Node server was pushed under).
#
#   ./cf-deploy.sh
#
# It builds the static x86_64 binary (x86_64-unknown-linux-musl, release profile), stages it with
# keys/public.pem in a push directory and runs `cf push` with manifest.yml: binary_buildpack,
# services mypostgres and websocket-ups, health check on /health (liveness; /ready would have CF
# restart the app during a database outage). The server reads PORT,
# VCAP_SERVICES and VCAP_APPLICATION itself.
#
# Environment:
#   IOT_WS_BINARY=PATH   push this binary instead of building one (must be an x86-64 ELF)
#   CF_APP_NAME=NAME     app name (default: <space>-websocket)
#   CF_PUBLIC_KEY=PATH   public key to push (default: keys/public.pem; see keys/README.md)
#   CF_PUSH_DIR=DIR      staging directory, emptied first (default: target/cf-push)
#   CF_MANIFEST=PATH     manifest (default: manifest.yml next to this script)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
root=$PWD

TARGET=x86_64-unknown-linux-musl
manifest=${CF_MANIFEST:-$root/manifest.yml}
stage=${CF_PUSH_DIR:-$root/target/cf-push}
public_key=${CF_PUBLIC_KEY:-$root/keys/public.pem}

log() { printf 'cf-deploy: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v cf >/dev/null || die "the cf CLI is not on PATH"
[ -f "$manifest" ] || die "manifest $manifest not found"

# The target space: `cf target` fails when not logged in, and names no space when none is targeted.
# Field names are "org:"/"space:" (cf 7+) or "Org:"/"Space:" (cf 6).
target_field() {
  awk -F':' -v want="$1" 'tolower($1) == want { sub(/^[^:]*:[ \t]*/, ""); sub(/[ \t]+$/, ""); print; exit }'
}
if ! target_out=$(cf target 2>&1); then
  printf '%s\n' "$target_out" >&2
  die "cf target failed: log in first (cf login -a API_ENDPOINT), then target a space (cf target -o ORG -s SPACE)"
fi
org=$(target_field org <<<"$target_out")
space=$(target_field space <<<"$target_out")
case "$space" in
  "" | *"No space targeted"*)
    printf '%s\n' "$target_out" >&2
    die "no space is targeted: cf target -o ORG -s SPACE"
    ;;
esac
app=${CF_APP_NAME:-$space-websocket}
log "deploying $app to org ${org:-?}, space $space"

# The binary: static, x86-64 (the binary buildpack runs it as is on the stack).
if [ -n "${IOT_WS_BINARY:-}" ]; then
  binary=$IOT_WS_BINARY
  if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then die "IOT_WS_BINARY=$binary is not an executable file"; fi
else
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    log "rustup target add $TARGET"
    rustup target add "$TARGET"
  fi
  log "cargo build --release -p iot-ws-server --target $TARGET"
  cargo build --release -p iot-ws-server --target "$TARGET"
  binary=$root/target/$TARGET/release/iot-ws-server
fi
if command -v file >/dev/null; then
  kind=$(file -b "$binary")
  case "$kind" in
    *ELF*x86-64*) ;;
    *) die "$binary is not an x86-64 ELF executable ($kind)" ;;
  esac
  case "$kind" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) log "warning: $binary is dynamically linked; it may not start on the Cloud Foundry stack" ;;
  esac
fi

# The public key: a public one, never a private one.
[ -f "$public_key" ] || die "$public_key not found: make a key pair first (keys/README.md)"
if grep -q 'PRIVATE KEY' "$public_key"; then die "$public_key holds a private key; push only the public key"; fi
if ! grep -qE -- '-----BEGIN (RSA )?PUBLIC KEY-----' "$public_key"; then die "$public_key is not a PEM public key"; fi

# Stage exactly what the app needs: the server finds keys/public.pem relative to its directory.
rm -rf "$stage"
mkdir -p "$stage/keys"
install -m 0755 "$binary" "$stage/iot-ws-server"
install -m 0644 "$public_key" "$stage/keys/public.pem"
log "staged $(du -sh "$stage" | cut -f1) in $stage"

log "cf push $app -f $manifest -p $stage"
cf push "$app" -f "$manifest" -p "$stage"
