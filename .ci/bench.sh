#!/usr/bin/env bash
# CI step for issue 5: the benchmark must never rot. Builds iot-ws-bench and the server (release),
# starts a throwaway PostgreSQL cluster and the server on free loopback ports with a fresh key,
# runs every part of the bench with small numbers, and checks that its JSON line parses and that
# its counts are sane; then the same, smaller, over wss:// against a TLS-only server. Timings are
# printed, never asserted (2 shared cores: they are noise here).
# Zero lost or duplicated actuations in the churn run is asserted: that is correctness.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_BIN=/usr/lib/postgresql/15/bin
DEVICES=${BENCH_DEVICES:-200}

cargo build --release -p iot-ws-server -p iot-ws-bench
target=${CARGO_TARGET_DIR:-$PWD/target}/release

work=$(mktemp -d /tmp/iot-ws-bench-ci.XXXXXX)
chmod 755 "$work"
server_pid=
tls_pid=
census_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if [ -n "$census_pid" ]; then kill "$census_pid" 2>/dev/null || true; fi
  if [ -n "$tls_pid" ]; then kill "$tls_pid" 2>/dev/null || true; fi
  if [ -f "$work/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A PostgreSQL cluster of our own; initdb refuses root, so it runs as postgres. The port is below
# the ephemeral range (outgoing connections may take those) and retried if taken.
mkdir -p "$work/pg/data" "$work/pg/sock"
chown -R postgres:postgres "$work/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$work/pg/data" -U postgres --auth=trust --no-sync >/dev/null
pg_port=
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 12000))
  if runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -t 30 \
    -o "-p $port -k $work/pg/sock -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null; then
    pg_port=$port
    break
  fi
done
[ -n "$pg_port" ] || { echo ".ci/bench.sh: PostgreSQL did not start" >&2; cat "$work/pg/log" >&2; exit 1; }
db="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres connect_timeout=2"

"$target/iot-ws-server" keygen --dir "$work/keys" 2>/dev/null

# The server needs as many file descriptors as devices; port 0 picks a free one.
ulimit -n "$(ulimit -Hn)"
"$target/iot-ws-server" --listen 127.0.0.1:0 --public-key "$work/keys/public.pem" \
  --actuator-username bench --actuator-password bench --database-url "$db" >"$work/server.log" 2>&1 &
server_pid=$!
# The address a server logged it listens on (it was started with port 0).
listening() {
  local log=$1 addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^.*INFO  listening on //p' "$log")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo ".ci/bench.sh: the server did not listen" >&2; cat "$log" >&2; exit 1; }
  echo "$addr"
}
addr=$(listening "$work/server.log")

"$target/iot-ws-bench" all --server "ws://$addr" --server-pid "$server_pid" \
  --private-key "$work/keys/private.pem" --database-url "$db" --server-bin "$target/iot-ws-server" \
  --devices "$DEVICES" --idle-devices "$DEVICES" --storm-devices "$DEVICES" --startup-runs 3 \
  --actuations 5000 --paced-rate 1000 --paced-secs 1 --pings 200 --churn-secs 3 --churn-rate 500 \
  | tee "$work/bench.out"

# Exactly one JSON line, and counts that add up.
[ "$(grep -c '^{' "$work/bench.out")" = 1 ] || { echo ".ci/bench.sh: want exactly one JSON line" >&2; exit 1; }
grep '^{' "$work/bench.out" | DEVICES=$DEVICES node -e '
  const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const n = Number(process.env.DEVICES);
  const fail = [];
  const want = (ok, what) => { if (!ok) fail.push(what); };
  want(r.registrations.fresh.ok === n && r.registrations.fresh.failed === 0, "every fresh registration succeeds");
  want(r.registrations.reconnect.ok === n, "every reconnect succeeds");
  want(r.idle[0].devices === n && r.idle[0].rss_kib > 0, "idle RSS is read");
  const full = r.actuations.full_speed, paced = r.actuations.paced;
  want(full.received === full.sent && paced.received === paced.sent, "every actuation is delivered");
  want(r.churn.lost === 0 && r.churn.duplicated === 0, "churn: nothing lost or duplicated");
  want(r.churn.reconnects === n, "churn: every device reconnects");
  want(r.storm.devices === n && r.storm.all_false_ms >= 0 && r.storm.probes_failed === 0, "storm: bindings false, probes served");
  want(r.startup.listening_us > 0 && r.startup.idle_rss_kib > 0, "startup is measured");
  want(r.ping_rtt.n === 200, "pings answered");
  want(full.floor_cpu_us_per_write > 0 && full.ratio_to_floor > 0, "the loopback floor is measured");
  if (fail.length) { console.error(".ci/bench.sh: " + fail.join("; ")); process.exit(1); }
  console.log(".ci/bench.sh: JSON line parsed, counts sane");
'

# Restart storm (issue 14), small: the bench starts a server of its own on a free port against the
# same database, registers the devices, stops it with SIGTERM and starts it again; every device must
# reconnect and every binding come back true. Timings printed, never asserted.
restart_start=$SECONDS
timeout 60 "$target/iot-ws-bench" restart --server-bin "$target/iot-ws-server" --database-url "$db" \
  --private-key "$work/keys/private.pem" --storm-devices "$DEVICES" | tee "$work/restart.out"
[ "$(grep -c '^{' "$work/restart.out")" = 1 ] || { echo ".ci/bench.sh: restart: want one JSON line" >&2; exit 1; }
grep '^{' "$work/restart.out" | DEVICES=$DEVICES node -e '
  const r = JSON.parse(require("fs").readFileSync(0, "utf8")).restart;
  const n = Number(process.env.DEVICES);
  const fail = [];
  if (r.devices !== n || r.reconnected !== n || r.failed !== 0) fail.push("every device reconnects");
  if (r.true_after_stop !== 0) fail.push("a graceful stop leaves no binding true");
  if (!(r.all_true_ms > 0)) fail.push("every binding true again");
  if (fail.length) { console.error(".ci/bench.sh: restart: " + fail.join("; ")); process.exit(1); }
  console.log(".ci/bench.sh: restart JSON line parsed, every device back");
'
echo ".ci/bench.sh: the restart run took $((SECONDS - restart_start)) s"

# wss:// (issue 12): a second server, TLS-only with a throwaway CA's pair and no database, and a
# small run of every part over TLS (registrations, idle, actuations, churn). Counts asserted,
# timings printed.
TLS_DEVICES=50
tls_start=$SECONDS
bash bench/tls-pair.sh "$work/tls" >/dev/null
"$target/iot-ws-server" --listen 127.0.0.1:0 --public-key "$work/keys/public.pem" \
  --actuator-username bench --actuator-password bench \
  --tls-cert "$work/tls/cert.pem" --tls-key "$work/tls/key.pem" >"$work/tls-server.log" 2>&1 &
tls_pid=$!
tls_addr=$(listening "$work/tls-server.log")
timeout 60 "$target/iot-ws-bench" all --server "wss://$tls_addr" --ca "$work/tls/ca.pem" --server-pid "$tls_pid" \
  --private-key "$work/keys/private.pem" --devices "$TLS_DEVICES" --idle-devices "$TLS_DEVICES" \
  --actuations 1000 --paced-rate 200 --paced-secs 1 --pings 50 --churn-secs 1 --churn-rate 200 \
  | tee "$work/tls.out"
[ "$(grep -c '^{' "$work/tls.out")" = 1 ] || { echo ".ci/bench.sh: wss: want exactly one JSON line" >&2; exit 1; }
grep '^{' "$work/tls.out" | DEVICES=$TLS_DEVICES node -e '
  const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const n = Number(process.env.DEVICES);
  const fail = [];
  const want = (ok, what) => { if (!ok) fail.push(what); };
  want(r.registrations.fresh.ok === n && r.registrations.fresh.failed === 0, "every fresh registration succeeds");
  want(r.registrations.reconnect.ok === n && r.registrations.reconnect.failed === 0, "every reconnect succeeds");
  want(r.idle[0].devices === n && r.idle[0].rss_kib > 0, "idle RSS is read");
  const full = r.actuations.full_speed, paced = r.actuations.paced;
  want(full.received === full.sent && paced.received === paced.sent, "every actuation is delivered");
  want(r.churn.lost === 0 && r.churn.duplicated === 0 && r.churn.reconnects === n, "churn: every device back, nothing lost");
  want(r.ping_rtt.n === 50, "pings answered");
  if (fail.length) { console.error(".ci/bench.sh: wss: " + fail.join("; ")); process.exit(1); }
  console.log(".ci/bench.sh: wss: JSON line parsed, counts sane");
'
kill "$tls_pid"
wait "$tls_pid" 2>/dev/null || true
tls_pid=
echo ".ci/bench.sh: the wss:// run took $((SECONDS - tls_start)) s"

# Heap census (issue 14): a server built with --features heap-census counts its live heap by
# owner; the bench reads it before and after opening pending then registered connections. Its
# binary replaces the release one for a moment (same target dir: only the server crate is
# rebuilt), so it is copied aside and the release build restored at once. Asserted: the census
# is read and names the owners of a connection's bytes; the bytes are printed, never asserted.
census_start=$SECONDS
cargo build --release -p iot-ws-server --features heap-census
cp "$target/iot-ws-server" "$work/iot-ws-census"
cargo build --release -p iot-ws-server
"$work/iot-ws-census" --listen 127.0.0.1:0 --public-key "$work/keys/public.pem" \
  --actuator-username bench --actuator-password bench >"$work/census-server.log" 2>&1 &
census_pid=$!
census_addr=$(listening "$work/census-server.log")
timeout 60 "$target/iot-ws-bench" census --server "ws://$census_addr" --server-pid "$census_pid" \
  --private-key "$work/keys/private.pem" --census-pending 100 --census-devices "$DEVICES" | tee "$work/census.out"
kill "$census_pid"
wait "$census_pid" 2>/dev/null || true
census_pid=
[ "$(grep -c '^{' "$work/census.out")" = 1 ] || { echo ".ci/bench.sh: census: want one JSON line" >&2; exit 1; }
grep '^{' "$work/census.out" | DEVICES=$DEVICES node -e '
  const c = JSON.parse(require("fs").readFileSync(0, "utf8")).census;
  const fail = [];
  for (const [phase, n] of [["pending", 100], ["registered", Number(process.env.DEVICES)]]) {
    const p = c[phase];
    if (p.connections !== n || !(p.heap_bytes > 0)) fail.push(phase + ": census read");
    for (const owner of ["task", "websocket", "reactor_source"]) {
      if (!(p.owners[owner] && p.owners[owner].bytes > 0)) fail.push(phase + ": no bytes for " + owner);
    }
  }
  if (!(c.registered.owners.hub && c.registered.owners.hub.bytes > 0)) fail.push("registered: no bytes for hub");
  if (fail.length) { console.error(".ci/bench.sh: census: " + fail.join("; ")); process.exit(1); }
  console.log(".ci/bench.sh: census JSON line parsed, owners named");
'
echo ".ci/bench.sh: the census took $((SECONDS - census_start)) s"

# Attack mode (issue 9), last because it may leave the server hurt: every attack for 1 s. The
# probes' figures under attack are printed, never asserted; asserted: the tool ends in time, the
# quiet baseline is served, and every attack got connections.
attacks=10
timeout $(((attacks + 1) * 4 + 10)) "$target/iot-ws-bench" attack --server "ws://$addr" --server-pid "$server_pid" \
  --private-key "$work/keys/private.pem" --seconds 1 | tee "$work/attack.out"
[ "$(grep -c '^{' "$work/attack.out")" = 1 ] || { echo ".ci/bench.sh: attack: want one JSON line" >&2; exit 1; }
grep '^{' "$work/attack.out" | ATTACKS=$attacks node -e '
  const runs = JSON.parse(require("fs").readFileSync(0, "utf8")).attack.runs;
  const fail = [];
  if (runs.length !== Number(process.env.ATTACKS) + 1) fail.push("one run per attack, and the quiet one");
  const quiet = runs[0];
  if (quiet.attack !== "quiet" || quiet.probes_ok !== 2 || quiet.probes_failed !== 0) fail.push("quiet probes served");
  for (const r of runs.slice(1)) if (!(r.load.connections > 0)) fail.push(r.attack + " got no connection");
  if (fail.length) { console.error(".ci/bench.sh: attack: " + fail.join("; ")); process.exit(1); }
  console.log(".ci/bench.sh: attack JSON line parsed, baseline served");
'
