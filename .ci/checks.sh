# shellcheck shell=bash
# Counted checks for the CI scripts that report many (deploy-test.sh, deb.sh): each prints
# `ok` or `FAIL` and a description; the script ends with the counts and fails if any failed.
passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
not_ok() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else not_ok "$what"; fi
}
