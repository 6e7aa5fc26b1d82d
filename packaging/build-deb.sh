#!/usr/bin/env bash
# Builds the Debian package of iot-ws-server around a binary that is already built (issue 11):
# nothing is compiled here, so CI packages the binaries its other steps made.
#
#   packaging/build-deb.sh TARGET BINARY OUTDIR
#     TARGET  the Rust target BINARY was built for, which gives the Debian architecture:
#             x86_64-unknown-linux-gnu or x86_64-unknown-linux-musl: amd64,
#             aarch64-unknown-linux-musl: arm64, armv7-unknown-linux-gnueabihf: armhf
#     BINARY  e.g. target/release/iot-ws-server or target/TARGET/gateway/iot-ws-server
#     OUTDIR  gets iot-ws-server_VERSION-REVISION_ARCH.deb; its path is printed on stdout
#
# The package: /usr/bin/iot-ws-server (stripped); the unit cross/iot-ws-server.service with
# ExecStart rewritten to /usr/bin, in /usr/lib/systemd/system; cross/iot-ws-server.env as
# /etc/iot-ws-server/env (mode 0600, a conffile: upgrades keep the operator's edits); a man page
# made from BINARY's --help (packaging/man.sh); the copyright with the linked crates' licences;
# the maintainer scripts in packaging/debian. No key, no user (the unit has DynamicUser=yes).
# BINARY is run for its version and help, under qemu-user if it is for another architecture.
#
# Environment: DEB_REVISION (default 1), DEB_MAINTAINER, SOURCE_DATE_EPOCH (default: the time of
# the last commit, or now outside git; it dates the man page and every file, so a rebuild gives
# the same package).
# Needs: dpkg-deb, file, cargo (the crate list); dpkg-shlibdeps (dpkg-dev) for a dynamic binary;
# the target's strip (binutils, or the cross gcc packages) for a binary not yet stripped.
set -euo pipefail
umask 022

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'packaging/build-deb: error: %s\n' "$*" >&2; exit 1; }
[ "$#" -eq 3 ] || die "usage: packaging/build-deb.sh TARGET BINARY OUTDIR"
target=$1
binary=$2
outdir=$3
[ -x "$binary" ] || die "$binary is not an executable file"

# Debian architecture, the strip that knows the binary's format, and `file`'s word for it (a
# binary for another architecture than TARGET says must not be packaged as TARGET).
case "$target" in
  x86_64-unknown-linux-gnu | x86_64-unknown-linux-musl) arch=amd64 strip=strip machine=x86-64 ;;
  aarch64-unknown-linux-musl) arch=arm64 strip=aarch64-linux-gnu-strip machine="ARM aarch64" ;;
  armv7-unknown-linux-gnueabihf) arch=armhf strip=arm-linux-gnueabihf-strip machine=ARM ;;
  *) die "unsupported target $target" ;;
esac
description=$(file -b "$binary")
[[ "$description" == *", $machine,"* ]] || die "$binary is not a $machine binary: $description"

# Foreign binaries run under qemu-user, called explicitly (no binfmt_misc needed).
runner=()
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  case "$arch" in
    arm64) runner=(qemu-aarch64-static) ;;
    armhf) runner=(qemu-arm-static) ;;
    amd64) runner=(qemu-x86_64-static) ;;
  esac
  command -v "${runner[0]}" >/dev/null || die "${runner[0]} is needed to run the $arch binary (apt-get install qemu-user-static)"
fi

version=$("${runner[@]}" "$binary" --version)
version=${version#iot-ws-server }
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([.+~a-z0-9-]*)$ ]] || die "unexpected --version output: $version"
# Cargo's 1.0.0-rc.1 sorts after 1.0.0 in Debian's order unless its - is a ~.
deb_version="${version/-/\~}-${DEB_REVISION:-1}"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/etc/iot-ws-server" \
  "$root/usr/share/man/man1" "$root/usr/share/doc/iot-ws-server"

install -m 0755 "$binary" "$root/usr/bin/iot-ws-server"
if [[ "$description" == *"not stripped"* ]]; then
  command -v "$strip" >/dev/null || die "$binary is not stripped and $strip is missing"
  "$strip" --strip-unneeded "$root/usr/bin/iot-ws-server"
fi

# One unit for both installs: the by-hand path is rewritten, and nothing else is changed.
sed -E 's#^ExecStart=/usr/local/bin/iot-ws-server( |$)#ExecStart=/usr/bin/iot-ws-server\1#' \
  cross/iot-ws-server.service >"$root/usr/lib/systemd/system/iot-ws-server.service"
grep -Eq '^ExecStart=/usr/bin/iot-ws-server( |$)' "$root/usr/lib/systemd/system/iot-ws-server.service" ||
  die "cross/iot-ws-server.service has no ExecStart=/usr/local/bin/iot-ws-server to rewrite"
if grep -v '^#' "$root/usr/lib/systemd/system/iot-ws-server.service" | grep -q /usr/local; then
  die "cross/iot-ws-server.service names /usr/local outside ExecStart: the package has no such path"
fi
chmod 0644 "$root/usr/lib/systemd/system/iot-ws-server.service"

install -m 0600 cross/iot-ws-server.env "$root/etc/iot-ws-server/env"
echo /etc/iot-ws-server/env >"$root/DEBIAN/conffiles"

bash packaging/man.sh "${runner[@]}" "$binary" | gzip -9n >"$root/usr/share/man/man1/iot-ws-server.1.gz"

# The crates linked in, one "name version: licence" line each, into the copyright's Comment.
cargo tree --locked -e normal,no-proc-macro -p iot-ws-server --target "$target" --prefix none \
  --format '{p}: {l}' | grep -v ' (/' | sed -e 's/ (\*)$//' -e 's/ v\([0-9]\)/ \1/' -e 's/^/ /' |
  sort -u >"$stage/crates"
[ -s "$stage/crates" ] || die "cargo tree listed no crates"
awk -v list="$stage/crates" '$0 == "@CRATES@" { while ((getline l < list) > 0) print l; next } { print }' \
  packaging/debian/copyright >"$root/usr/share/doc/iot-ws-server/copyright"

install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"

# A static binary needs nothing; a dynamic one (the host's release build) the libraries that
# dpkg-shlibdeps finds, which wants a debian/control to read.
depends=
if [[ "$description" == *"dynamically linked"* ]]; then
  command -v dpkg-shlibdeps >/dev/null || die "$binary is dynamically linked: dpkg-shlibdeps (dpkg-dev) is needed"
  mkdir -p "$stage/src/debian"
  printf 'Source: iot-ws-server\n\nPackage: iot-ws-server\nArchitecture: any\n' >"$stage/src/debian/control"
  depends=$(cd "$stage/src" && dpkg-shlibdeps -O -e"$root/usr/bin/iot-ws-server" 2>/dev/null)
  depends=${depends#shlibs:Depends=}
  [ -n "$depends" ] || die "dpkg-shlibdeps found no dependency for a dynamic binary"
fi

installed_kib=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
{
  echo "Package: iot-ws-server"
  echo "Version: $deb_version"
  echo "Architecture: $arch"
  echo "Maintainer: ${DEB_MAINTAINER:-iot-ws-server maintainers <maintainers@users.noreply.r-seed-5e19b087.example>}"
  echo "Installed-Size: $installed_kib"
  [ -z "$depends" ] || echo "Depends: $depends"
  echo "Section: net"
  echo "Priority: optional"
  cat <<'EOF'
Description: WebSocket actuation server for IoT devices
 A drop-in replacement for the IoT Analytics "IoT Websocket Server": devices
 register over WebSocket (subprotocol echo-protocol) with an RS256 token and
 receive the dashboard's actuations. Device bindings live in PostgreSQL or in
 memory. One binary and a hardened systemd unit (Type=notify, DynamicUser).
 .
 No key is shipped and the unit is not started: install the platform's public
 key as /etc/iot-ws-server/public.pem, set the actuator credentials in
 /etc/iot-ws-server/env, then run systemctl enable --now iot-ws-server.
EOF
} >"$root/DEBIAN/control"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$outdir"
deb="$outdir/iot-ws-server_${deb_version}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
