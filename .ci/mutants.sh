#!/usr/bin/env bash
# Mutation testing: cargo-mutants plants one mistake at a time in the code (a condition turned
# to `true`, a `+` to a `-`, a function body to a default) and runs the tests; a mistake that
# every test lets through is a missed mutant, and this step fails on any.
#
# Guarded: the whole protocol core (iot-ws-core: messages, sessions, the router and its tables,
# held actuations, refusals, token claims, the device client, the HTTP head) and the server's pure
# parts with fast unit tests (configuration and its secret files, token verification and its
# cache, the clock, the TLS certificate and its reload, the server end of TLS over loopback, the
# TLS settings read out of a database URL, the channel binding hash, the sessions' live settings,
# the actuator password's reload, the keepalive, and the caps on open and pending connections).
#
# CI mutates only the lines changed since the commit in .ci/mutants-base, the last one whose
# whole mutation step passed (a full run of every file above took ~21 of CI's 43 minutes). A
# change to a test alone is not retried against old code this way: run the whole step with
# `--full` after weakening or rewriting tests, and move .ci/mutants-base forward after a full
# run passes.
# Configuration, and the few mutants excluded as equivalent with the reason for each:
# .cargo/mutants.toml.
#
# Expects cargo-mutants 27 (installed by .ci/setup.sh). Run one part alone:
#   bash .ci/mutants.sh core      bash .ci/mutants.sh server      bash .ci/mutants.sh all --full
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

OUT=${MUTANTS_OUT:-$PWD/target/mutants-report}

run() {
  local name=$1
  shift
  local t0=$SECONDS
  mkdir -p "$OUT/$name"
  # --no-shuffle: the same order every run, so two reports compare line by line.
  local status=0
  cargo mutants --no-shuffle -j 2 -o "$OUT/$name" "$@" >"$OUT/$name.log" 2>&1 || status=$?
  # Status 3 says some mutants made the tests hang until the timeout: a hang is a failed test
  # run, so those mistakes were caught (e.g. a loop whose exit condition is inverted). But
  # cargo-mutants gives 3 even when some were also missed: the missed list decides.
  local missed="$OUT/$name/mutants.out/missed.txt"
  if [ "$status" = 3 ] && [ -s "$missed" ]; then
    sed 's/^/MISSED /' "$missed" >&2
    echo "mutants.sh: $name: the tests let the mistakes above through (report: $OUT/$name/mutants.out)" >&2
    exit 1
  elif [ "$status" = 3 ]; then
    grep -E "^TIMEOUT" "$OUT/$name.log" | sed 's/^TIMEOUT/caught by timeout:/'
  elif [ "$status" != 0 ]; then
    grep -E "^(MISSED|TIMEOUT)" "$OUT/$name.log" >&2 || tail -30 "$OUT/$name.log" >&2
    echo "mutants.sh: $name: the tests let the mistakes above through (report: $OUT/$name/mutants.out)" >&2
    exit 1
  fi
  echo "$name: $(tail -1 "$OUT/$name.log") in $((SECONDS - t0)) s"
}

# The server's files whose rules have fast unit tests. The rest of the server (sockets, the hub
# task, PostgreSQL, forwarding) is driven by the end-to-end tests in tests/, too slow to rerun for
# each of hundreds of mutants. Left out too: the log's writer thread (ops/logging/writer.rs),
# whose mutants mostly hang its time-bound tests (20 s each); run by hand when it changes
# (`cargo mutants -p iot-ws-server -f server/src/ops/logging/writer.rs`).
SERVER_FILES=(server/src/config/mod.rs server/src/config/secret_file.rs server/src/auth/mod.rs
  server/src/auth/token_cache.rs server/src/clock.rs server/src/tls/mod.rs server/src/tls/server_stream.rs
  server/src/db/sslmode.rs server/src/db/channel_binding.rs server/src/connection/live_config.rs
  server/src/connection/keepalive.rs server/src/connection/limits.rs
  server/src/ops/actuator_reload.rs server/src/ops/logging/filter.rs server/src/ops/logging/format.rs
  server/src/ops/logging/text.rs server/src/ops/logging/timestamp.rs)

# The world's property tests (core/tests/world_properties.rs, seconds each) are left out of the
# runs for each mutant: the files they drive are mutated, but the router's and the session's own
# unit and property tests catch every mutant there, in a fraction of the time.
SKIP_SLOW=(-- -- --skip world --skip readmes_guarantees --skip router_fuzz_seeds)

core=(-p iot-ws-core -f 'core/src/*.rs')
server=(-p iot-ws-server)
for f in "${SERVER_FILES[@]}"; do server+=(-f "$f"); done

if [ "${2:-}" != --full ]; then
  base=$(cat .ci/mutants-base)
  mkdir -p "$OUT"
  git diff "$base" -- core/src server/src >"$OUT/changed.diff"
  if ! grep -q '^+++ ' "$OUT/changed.diff"; then
    echo "mutants: no code changed since $base (.ci/mutants-base)"
    exit 0
  fi
  diff=(--in-diff "$OUT/changed.diff")
else
  diff=()
fi

case "${1:-all}" in
  core) run core "${core[@]}" "${diff[@]}" "${SKIP_SLOW[@]}" ;;
  server) run server "${server[@]}" "${diff[@]}" ;;
  # One run for both: one baseline build instead of two.
  all) run all "${core[@]}" "${server[@]}" "${diff[@]}" "${SKIP_SLOW[@]}" ;;
  *) echo "usage: $0 [core|server|all]" >&2; exit 2 ;;
esac
