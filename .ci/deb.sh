#!/usr/bin/env bash
# CI step for issue 11 (packaging): the Debian packages, built from the binaries the earlier
# steps made (release: .ci/bench.sh; ARM gateway: .ci/cross.sh), installed into throwaway roots
# with dpkg (no container, no chroot: --force-script-chrootless runs the maintainer scripts with
# DPKG_ROOT set, which they honour) and checked there:
#   amd64: files, owners and modes, the conffile, the installed binary's --version and --check
#   (the shipped /etc/iot-ws-server/env with a test key: ok; without a key: exit 2 and one line),
#   `systemd-analyze verify` of the installed unit inside the root, the man page against
#   --help, and a purge that keeps the operator's key;
#   arm64, armhf (if cross/build.sh's binaries exist): installed the same way, run under qemu.
# Packages are left in $DEB_OUT (default target/deb) for a release to pick up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
out=${DEB_OUT:-$target_dir/deb}

# shellcheck source=.ci/checks.sh
source .ci/checks.sh
same() { [ "$1" = "$2" ] || { printf '    expected: %s\n    got:      %s\n' "$2" "$1"; return 1; }; }

# The same command as .ci/bench.sh, so that in CI it finds everything built: building the
# server alone could unify features differently and relink it (a minute of LTO).
cargo build --release -p iot-ws-server -p iot-ws-bench

work=$(mktemp -d /tmp/iot-ws-deb-ci.XXXXXX)
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/private.pem" 2>/dev/null
openssl pkey -in "$work/private.pem" -pubout -out "$work/public.pem" 2>/dev/null

# A root with an empty dpkg database, and the host's units (targets it is ordered after) and
# /bin/kill (the unit's ExecReload) for systemd-analyze verify --root.
new_root() {
  local root=$1
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/lib/systemd" "$root/bin"
  touch "$root/var/lib/dpkg/status"
  cp -a /lib/systemd/system "$root/lib/systemd/"
  cp /bin/kill "$root/bin/kill"
}
# dpkg on a root; the amd64 package's libc6 and libgcc-s1 are the host's, not in the root.
root_dpkg() { local root=$1; shift; dpkg --root="$root" --force-script-chrootless --force-depends "$@"; }

# The environment systemd would give the server from the installed env file (KEY=value lines),
# with its paths under /etc/iot-ws-server moved into the root.
unit_env() {
  local root=$1
  grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$root/etc/iot-ws-server/env" | sed "s|=/etc/iot-ws-server/|=$root/etc/iot-ws-server/|"
}
# run_installed ROOT RUNNER... -- ARGS...: the installed binary with exactly the unit's environment.
run_installed() {
  local root=$1 vars
  shift
  local runner=()
  while [ "$1" != -- ]; do runner+=("$1"); shift; done
  shift
  mapfile -t vars < <(unit_env "$root")
  env -i PATH=/usr/bin:/bin "${vars[@]}" "${runner[@]}" "$root/usr/bin/iot-ws-server" "$@"
}

# check_package ARCH DEB RUNNER...: installs DEB in a new root, $work/root-ARCH, and checks what
# every architecture's package shares.
check_package() {
  local arch=$1 deb=$2
  shift 2
  local runner=("$@") root="$work/root-$arch"
  new_root "$root"
  [ "$arch" = "$(dpkg --print-architecture)" ] || dpkg --root="$root" --add-architecture "$arch"
  check "$arch: dpkg-deb --info reads it, Package and Architecture right" \
    same "$(dpkg-deb --field "$deb" Package Architecture | paste -sd' ')" "Package: iot-ws-server Architecture: $arch"
  check "$arch: the contents are the binary, the unit, env, the man page and copyright" same \
    "$(dpkg-deb --contents "$deb" | awk '$1 !~ /^d/ { print $1, $2, $6 }' | sort -k3)" \
    "-rw------- root/root ./etc/iot-ws-server/env
-rwxr-xr-x root/root ./usr/bin/iot-ws-server
-rw-r--r-- root/root ./usr/lib/systemd/system/iot-ws-server.service
-rw-r--r-- root/root ./usr/share/doc/iot-ws-server/copyright
-rw-r--r-- root/root ./usr/share/man/man1/iot-ws-server.1.gz"
  check "$arch: dpkg -i into a throwaway root" root_dpkg "$root" -i "$deb"
  check "$arch: installed ok" same "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' iot-ws-server)" \
    "install ok installed"
  check "$arch: /etc/iot-ws-server/env is its conffile" \
    same "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}' iot-ws-server | awk 'NF { print $1, (NF == 2 ? "current" : $3) }')" \
    "/etc/iot-ws-server/env current"
  check "$arch: env is 0600 root:root, the binary 0755" \
    same "$(stat -c '%a %U:%G' "$root/etc/iot-ws-server/env" "$root/usr/bin/iot-ws-server" | paste -sd' ')" \
    "600 root:root 755 root:root"
  check "$arch: no key is shipped" test ! -e "$root/etc/iot-ws-server/public.pem"
  check "$arch: the unit runs /usr/bin/iot-ws-server, the unit of cross/ otherwise" same \
    "$(diff cross/iot-ws-server.service "$root/usr/lib/systemd/system/iot-ws-server.service" | grep '^[<>]')" \
    "< ExecStart=/usr/local/bin/iot-ws-server
> ExecStart=/usr/bin/iot-ws-server"
  # (An enable link points to /usr/lib/...: outside the root it dangles, so look for any link.)
  check "$arch: the unit is not enabled" same "$(find "$root/etc" -name 'iot-ws-server.service*')" ""
  check "$arch: the man page's version is the binary's" \
    same "$(zcat "$root/usr/share/man/man1/iot-ws-server.1.gz" | sed -n 's/^\.TH .* "iot\\-ws\\-server \([^"]*\)".*/\1/p')" \
    "$(run_installed "$root" "${runner[@]}" -- --version | sed 's/^iot-ws-server //')"

  # The shipped settings with a key put where they say it goes; then without it.
  local status=0 err
  err=$(run_installed "$root" "${runner[@]}" -- --check 2>&1) || status=$?
  check "$arch: without a key, --check exits 2" same "$status" 2
  check "$arch: ... and one line that names the missing key" \
    same "$(wc -l <<<"$err") $(grep -c "public key $root/etc/iot-ws-server/public.pem: No such file" <<<"$err")" "1 1"
  install -m 0644 "$work/public.pem" "$root/etc/iot-ws-server/public.pem"
  check "$arch: with the key, the shipped settings pass --check" \
    same "$(run_installed "$root" "${runner[@]}" -- --check 2>&1)" "configuration ok"
}

step() { printf '\n== .ci/deb.sh: %s\n' "$*"; }

step "amd64 package from the release build"
start=$SECONDS
amd64=$(bash packaging/build-deb.sh x86_64-unknown-linux-gnu "$target_dir/release/iot-ws-server" "$out")
echo "built $amd64 ($(stat -c %s "$amd64") bytes) in $((SECONDS - start)) s"
check_package amd64 "$amd64"
root=$work/root-amd64
check "amd64: Depends names libc6 (the release build is dynamic)" \
  grep -q '^libc6 (>= ' <<<"$(dpkg-deb --field "$amd64" Depends | tr ',' '\n')"
check "amd64: the binary is stripped" grep -q ', stripped' <<<"$(file -b "$root/usr/bin/iot-ws-server")"
check "amd64: the installed binary says its version" \
  grep -qx 'iot-ws-server [0-9][^ ]*' <<<"$(run_installed "$root" -- --version)"

verify_out=$(systemd-analyze verify --root="$root" iot-ws-server.service 2>&1) && verify_status=0 || verify_status=$?
check "systemd-analyze verify --root of the installed unit: status 0" same "$verify_status" 0
check "... and not one warning" same "$verify_out" ""

# Each flag that --help names is in the page as man renders it (so the troff escaping held).
page=$(MANWIDTH=250 man --warnings -l "$root/usr/share/man/man1/iot-ws-server.1.gz" 2>"$work/man-warnings")
check "the man page renders without a warning" same "$(cat "$work/man-warnings")" ""
missing=$(comm -23 <(run_installed "$root" -- --help | grep -oE -- '--[a-z][a-z-]*' | sort -u) \
  <(grep -oE -- '--[a-z][a-z-]*' <<<"$page" | sort -u))
check "the man page has every flag of --help" same "$missing" ""
check "the man page says where the key goes" grep -q '^ *public.pem\|/etc/iot-ws-server/public.pem' <<<"$page"

# Purge: the conffile goes, the operator's key stays (and with it the directory).
check "dpkg --purge" root_dpkg "$root" --purge iot-ws-server
# Every file left outside dpkg's and systemd's state and what new_root put there.
check "after the purge: only the key is left" same "$(cd "$root" && find . \( -path ./var/lib -o -path ./lib/systemd \
  -o -path ./bin \) -prune -o -type f -print)" "./etc/iot-ws-server/public.pem"

# The gateway packages, when .ci/cross.sh (cross/build.sh) made their binaries.
for pair in aarch64-unknown-linux-musl:arm64:qemu-aarch64-static armv7-unknown-linux-gnueabihf:armhf:qemu-arm-static; do
  IFS=: read -r triple arch qemu <<<"$pair"
  bin=$target_dir/$triple/gateway/iot-ws-server
  step "$arch package from $bin"
  if [ ! -x "$bin" ]; then
    echo "skipped: no $bin (cross/build.sh makes it)"
    continue
  fi
  start=$SECONDS
  deb=$(bash packaging/build-deb.sh "$triple" "$bin" "$out")
  echo "built $deb ($(stat -c %s "$deb") bytes) in $((SECONDS - start)) s"
  check_package "$arch" "$deb" "$qemu"
  check "$arch: static, so no Depends" same "$(dpkg-deb --field "$deb" Depends)" ""
done

echo "deb: $passed passed, $failed failed; packages in $out"
[ "$failed" -eq 0 ]
