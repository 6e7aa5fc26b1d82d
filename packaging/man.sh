#!/usr/bin/env bash
# Writes the iot-ws-server(1) man page (troff) on stdout, made from the binary's own --help and
# each command's --help, so that it can never list a flag the binary lacks or miss one it has.
# The sections that --help cannot give (files, signals, exit status) are the package's layout
# and are written here; packaging/build-deb.sh puts those files where this page says.
#
#   packaging/man.sh [RUNNER...] BINARY
#     RUNNER  how to run a foreign binary, e.g. qemu-arm-static (nothing for a native one)
#
# Environment: SOURCE_DATE_EPOCH, the page's date (default: now).
set -euo pipefail

[ "$#" -ge 1 ] || { echo "usage: packaging/man.sh [RUNNER...] BINARY" >&2; exit 64; }
bin=("$@")

# --help is plain text laid out in columns: kept as it is (no fill, no adjust). troff escapes:
# a backslash is \e, every - is \- (else groff may print a hyphen that does not paste into a
# shell), and a line starting with . or ' is a request unless \& comes first.
verbatim() {
  echo '.nf'
  sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^[.']/\\\\\&&/"
  echo '.fi'
}

help=$("${bin[@]}" --help)
version=$("${bin[@]}" --version)
version=${version#iot-ws-server }
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)
# The first line of --help is "iot-ws-server: WHAT IT IS"; the rest is usage and options.
summary=${help%%$'\n'*}
summary=${summary#iot-ws-server: }

cat <<EOF
.TH IOT\\-WS\\-SERVER 1 "$date" "iot\\-ws\\-server $version" "User Commands"
.\\" Left-aligned and never hyphenated: the page names commands to paste.
.nh
.ad l
.SH NAME
iot\\-ws\\-server \\- $(printf '%s\n' "$summary" | sed 's/-/\\-/g')
.SH SYNOPSIS AND OPTIONS
This is the output of
.BR "iot\\-ws\\-server \\-\\-help" .
.PP
EOF
tail -n +2 <<<"$help" | sed '1{/^$/d}' | verbatim

echo '.SH COMMANDS'
echo 'Each command'"'"'s own'
echo '.BR \-\-help .'
for command in keygen token checktoken device actuate; do
  echo '.PP'
  "${bin[@]}" "$command" --help | verbatim
done

cat <<'EOF'
.SH ENVIRONMENT
Every option can be given instead as the environment variable listed next to it above; a flag
wins over its variable. The systemd unit reads them from
.IR /etc/iot\-ws\-server/env .
.SH FILES
.TP
.I /etc/iot\-ws\-server/env
The unit's settings (systemd
.BR EnvironmentFile= :
KEY=value lines, no shell syntax), mode 0600 as it may hold the actuator password or the
database URL. As shipped it names the public key below and leaves the actuator credentials out,
so actuations are refused until they are set.
.TP
.I /etc/iot\-ws\-server/public.pem
The RS256 public key that device tokens are checked against (IOT_WS_PUBLIC_KEY). The package
ships none: until one is installed there (mode 0644), the server exits with status 2 and the
one line "cannot read public key".
.TP
.I /usr/lib/systemd/system/iot\-ws\-server.service
The unit: Type=notify, DynamicUser=yes (no user to create), hardened, restarted whatever the
exit status. The package neither enables nor starts it: after the key and the settings,
.BR "systemctl enable \-\-now iot\-ws\-server" .
.SH SIGNALS
SIGTERM (systemctl stop) closes every device connection with 1001 and exits 0. SIGHUP
(systemctl reload) reads the public key(s) and the TLS pair again; what does not load leaves the
old in use, and the log says why. A changed
.I /etc/iot\-ws\-server/env
takes a restart.
.SH EXIT STATUS
0 after a clean stop or a passing
.BR \-\-check ;
2 for an invalid setting, with one line on standard error that names the flag or the variable.
The commands give their own above.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR systemd.exec (5);
the project's README.md.
EOF
