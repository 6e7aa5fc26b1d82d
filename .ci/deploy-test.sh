#!/usr/bin/env bash
# CI step for issue 4: the deployment scripts.
#   1. bash -n and shellcheck on the shell scripts of cross/, cf-deploy.sh, .ci/ (issue 4's) and
#      packaging/ (issue 11's Debian package, with its maintainer scripts);
#   2. cf-deploy.sh against a fake `cf` on PATH that logs its arguments: the exact commands issued,
#      what was staged for the push, the manifest's services and buildpack, and the refusals
#      (not logged in, no space, a binary that is not x86-64, a private key as public key).
# The binary is a stand-in (IOT_WS_BINARY), so nothing is built; the real static x86_64 build is
# cf-deploy.sh's own `cargo build --release --target x86_64-unknown-linux-musl`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

scripts=(cf-deploy.sh cross/build.sh cross/smoke.sh .ci/cross.sh .ci/deploy-test.sh
  packaging/build-deb.sh packaging/man.sh packaging/debian/postinst packaging/debian/prerm
  packaging/debian/postrm .ci/deb.sh .ci/checks.sh)

# shellcheck source=.ci/checks.sh
source .ci/checks.sh

if ! command -v shellcheck >/dev/null; then
  [ "$(id -u)" -eq 0 ] || { echo "shellcheck missing: apt-get install shellcheck" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi

for script in "${scripts[@]}"; do
  check "bash -n $script" bash -n "$script"
  check "shellcheck $script" shellcheck -x "$script"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The fake cf: logs each call's arguments, prints `cf target` output per FAKE_CF_MODE, and on push
# records the files (mode, path, sha256) of the directory given with -p.
mkdir -p "$work/bin"
cat >"$work/bin/cf" <<'FAKE'
#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >>"$FAKE_CF_LOG"
case "${1:-}" in
  target)
    case "$FAKE_CF_MODE" in
      v8) printf 'API endpoint:   https://api.cf.example.test\nAPI version:    3.180.0\nuser:           operator@example.test\norg:            iot-org\nspace:          dev\n' ;;
      v6) printf 'API endpoint:   https://api.cf.example.test (API version: 2.150.0)\nUser:           operator@example.test\nOrg:            iot-org\nSpace:          staging\n' ;;
      no-space) printf 'API endpoint:   https://api.cf.example.test\nAPI version:    3.180.0\nuser:           operator@example.test\norg:            iot-org\nNo space targeted, use '"'"'cf target -s SPACE'"'"'\n' ;;
      logged-out) printf 'FAILED\nNot logged in. Use '"'"'cf login'"'"' or '"'"'cf login --sso'"'"' to log in.\n'; exit 1 ;;
    esac
    ;;
  push)
    dir=
    while [ "$#" -gt 0 ]; do
      if [ "$1" = -p ]; then dir=$2; fi
      shift
    done
    (cd "$dir" && find . -type f -printf '%m %P ' -exec sha256sum {} \; | awk '{print $1, $2, $3}' | sort) >"$FAKE_CF_LOG.staged"
    echo "Pushing app..."
    ;;
  *) echo "fake cf: unexpected command" >&2; exit 64 ;;
esac
FAKE
chmod +x "$work/bin/cf"

# Inputs: a static x86-64 stand-in binary, a dynamic one, a throw-away key pair.
printf 'int main(void) { return 0; }\n' | gcc -static -x c - -o "$work/static-bin"
cp "$(type -P true)" "$work/dynamic-bin"
printf '#!/bin/sh\nexit 0\n' >"$work/script-bin"
chmod +x "$work/script-bin"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/private.pem" 2>/dev/null
openssl rsa -in "$work/private.pem" -pubout -out "$work/public.pem" 2>/dev/null

# deploy NAME MODE BINARY [VAR=VALUE...]: runs cf-deploy.sh; status in $work/NAME.status.
deploy() {
  local name=$1 mode=$2 binary=$3
  shift 3
  rm -f "$work/$name.log" "$work/$name.log.staged"
  local status=0
  env PATH="$work/bin:$PATH" FAKE_CF_MODE="$mode" FAKE_CF_LOG="$work/$name.log" \
    IOT_WS_BINARY="$binary" CF_PUBLIC_KEY="$work/public.pem" CF_PUSH_DIR="$work/$name-stage" "$@" \
    bash "$root/cf-deploy.sh" >"$work/$name.out" 2>&1 || status=$?
  touch "$work/$name.log"
  echo "$status" >"$work/$name.status"
}
status_of() { cat "$work/$1.status"; }
same() { [ "$1" = "$2" ] || { printf '    expected: %s\n    got:      %s\n' "$2" "$1"; return 1; }; }
output_has() { grep -qF -- "$2" "$work/$1.out" || { echo "    output of $1 lacks: $2"; sed 's/^/    | /' "$work/$1.out"; return 1; }; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
not_grep() { ! grep -q -- "$1" "$2"; }

# 1. Logged in (cf 7+ output): `cf target`, then one push of "<space>-websocket" with the manifest.
deploy happy v8 "$work/static-bin"
check "cf-deploy.sh exits 0 when logged in" same "$(status_of happy)" 0
check "it issues exactly: cf target; cf push dev-websocket -f manifest.yml -p STAGE" \
  same "$(cat "$work/happy.log")" "$(printf 'target\npush dev-websocket -f %s -p %s' "$root/manifest.yml" "$work/happy-stage")"
check "the push directory holds exactly the binary (0755) and keys/public.pem (0644)" \
  same "$(cat "$work/happy.log.staged" 2>/dev/null)" \
  "$(printf '644 keys/public.pem %s\n755 iot-ws-server %s' "$(sha "$work/public.pem")" "$(sha "$work/static-bin")")"
check "a static binary raises no warning" not_grep warning "$work/happy.out"

# 2. cf 6 output ("Org:", "Space:"), app name override, a dynamic binary: pushed with a warning.
deploy v6 v6 "$work/dynamic-bin" CF_APP_NAME=iot-ws-canary
check "cf 6 output: exits 0" same "$(status_of v6)" 0
check "cf 6 output: pushes the CF_APP_NAME app" \
  same "$(cat "$work/v6.log")" "$(printf 'target\npush iot-ws-canary -f %s -p %s' "$root/manifest.yml" "$work/v6-stage")"
check "a dynamic binary is pushed with a warning" output_has v6 "warning: $work/dynamic-bin is dynamically linked"
deploy v6name v6 "$work/static-bin"
check "cf 6 output: the space (staging) names the app" same "$(sed -n 2p "$work/v6name.log")" \
  "push staging-websocket -f $root/manifest.yml -p $work/v6name-stage"

# 3. Refusals: nothing is pushed.
refused() { # refused NAME MESSAGE
  same "$(status_of "$1")" 1 && same "$(grep -c '^push' "$work/$1.log" || true)" 0 && output_has "$1" "$2"
}
deploy logged-out logged-out "$work/static-bin"
check "not logged in: fails, says cf login, pushes nothing" refused logged-out "log in first (cf login"
deploy no-space no-space "$work/static-bin"
check "no space targeted: fails, says cf target -s, pushes nothing" refused no-space "no space is targeted: cf target -o ORG -s SPACE"
deploy not-elf v8 "$work/script-bin"
check "a binary that is not x86-64 ELF is refused" refused not-elf "is not an x86-64 ELF executable"
deploy private-key v8 "$work/static-bin" CF_PUBLIC_KEY="$work/private.pem"
check "a private key given as the public key is refused" refused private-key "holds a private key"
deploy no-key v8 "$work/static-bin" CF_PUBLIC_KEY="$work/missing.pem"
check "a missing public key is refused with a pointer to keys/README.md" refused no-key "keys/README.md"

# 4. The manifest: binary buildpack, the command, both services, the /health check.
services=$(awk '/^  services:/ { on = 1; next } on && /^  - / { print $2; next } on { on = 0 }' manifest.yml | paste -sd' ')
check "manifest.yml binds mypostgres and websocket-ups" same "$services" "mypostgres websocket-ups"
check "manifest.yml uses binary_buildpack" grep -qE '^  - binary_buildpack$' manifest.yml
check "manifest.yml runs ./iot-ws-server" grep -qE '^  command: \./iot-ws-server$' manifest.yml
check "manifest.yml checks health over http on /health" grep -qE '^  health-check-http-endpoint: /health$' manifest.yml

echo "deploy-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
