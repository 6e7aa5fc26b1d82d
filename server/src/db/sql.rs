//! Every SQL statement the server runs, in one place: the bindings table (created when missing
//! and used as it is when the platform made it), the instances' locks, and the forwarding queue.

/// Settings of every connection: no statement waits on a lock for more than 5 s, and
/// PostgreSQL's own end of the connection notices a client that died without closing it (a power
/// cut, a cable pulled) within 30 s, not the kernel's default of over 2 h: a probe after 10 s of
/// silence, then every 5 s, 4 unanswered ones end it; data it sent unacknowledged for 30 s ends
/// it too. The session, and with it the instance's lock (see [`LOCK_INSTANCE`]), goes then. Any
/// user may set these for its own session; they override the connection string's `options`.
pub const SESSION_SETTINGS: &str = "SET statement_timeout=5000;SET tcp_keepalives_idle=10;\
SET tcp_keepalives_interval=5;SET tcp_keepalives_count=4;SET tcp_user_timeout=30000";

/// Creates schema, enum type and table unless they exist. The advisory lock keeps instances that
/// start together from racing on the creation.
pub const ENSURE_TABLE: &str = r#"
DO $$
BEGIN
  PERFORM pg_advisory_xact_lock(727465);
  IF to_regnamespace('dashboard') IS NULL THEN
    CREATE SCHEMA dashboard;
  END IF;
  IF to_regclass('dashboard."connectionBindings"') IS NULL THEN
    IF to_regtype('dashboard."enum_connectionBindings_type"') IS NULL THEN
      CREATE TYPE dashboard."enum_connectionBindings_type" AS ENUM ('mqtt', 'ws');
    END IF;
    CREATE TABLE dashboard."connectionBindings" (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      "deviceId" varchar(255) NOT NULL,
      "lastConnectedAt" timestamptz NOT NULL,
      server varchar(255) NOT NULL,
      "connectingStatus" boolean NOT NULL,
      type dashboard."enum_connectionBindings_type" NOT NULL,
      created timestamptz NOT NULL DEFAULT now(),
      updated timestamptz NOT NULL DEFAULT now(),
      UNIQUE ("deviceId", type)
    );
  END IF;
  -- Ours, not the platform's: actuations on their way from one instance to another.
  IF to_regclass('dashboard."iotWsForwarded"') IS NULL THEN
    CREATE TABLE dashboard."iotWsForwarded" (
      id bigserial PRIMARY KEY,
      target varchar(255) NOT NULL,
      "deviceId" varchar(255) NOT NULL,
      body text NOT NULL,
      hops smallint NOT NULL,
      created timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX "iotWsForwarded_target" ON dashboard."iotWsForwarded" (target, id);
  END IF;
END
$$;
"#;

/// How many characters the bindings table's `server` column holds (the platform's: 20), or
/// NULL when it is unbounded.
pub const SERVER_COLUMN_LENGTH: &str = r#"
SELECT character_maximum_length::int FROM information_schema.columns
WHERE table_schema = 'dashboard' AND table_name = 'connectionBindings' AND column_name = 'server'
"#;

/// Every running instance holds this advisory lock, keyed by its external address, on its
/// inbox connection for as long as it lives. Taking it tells whether another live instance
/// already uses the address; finding it held tells a forwarding instance that the target is
/// alive. PostgreSQL releases it when the holder's connection ends, crash included.
pub const LOCK_INSTANCE: &str = "SELECT pg_try_advisory_lock(727466, hashtext($1))";

/// SQL true when the instance named by the text expression is alive (holds its lock).
macro_rules! instance_alive {
    ($server:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted",
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            " AND l.classid = 727466::oid AND l.objid = hashtext(",
            $server,
            ")::oid AND l.objsubid = 2)"
        )
    };
}

/// Where each device is bound and whether that instance is alive: `$1` device ids.
pub const LOOKUP_BINDINGS: &str = concat!(
    r#"SELECT b."deviceId", b.server, b."connectingStatus" AND "#,
    instance_alive!("b.server"),
    r#" FROM dashboard."connectionBindings" b WHERE b.type = 'ws' AND b."deviceId" = ANY($1::text[])"#
);

/// The NOTIFY channel of the instance named by the text expression: derived from the address,
/// so it is a plain identifier whatever the address holds.
macro_rules! inbox_channel {
    ($server:literal) => {
        concat!("'iot_ws_' || left(md5(", $server, "), 24)")
    };
}

/// This instance's own channel, to LISTEN on: `$1` its external address.
pub const INBOX_CHANNEL: &str = concat!("SELECT ", inbox_channel!("$1::text"));

/// Queues forwarded actuations in the order given: `$1` targets, `$2` device ids, `$3` bodies,
/// `$4` hop counts.
pub const ENQUEUE_FORWARDED: &str = r#"
INSERT INTO dashboard."iotWsForwarded" (target, "deviceId", body, hops)
SELECT f.target, f.device, f.body, f.hops
FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[]) WITH ORDINALITY AS f(target, device, body, hops, n)
ORDER BY f.n
"#;

/// Wakes the instances named in `$1` (delivered when the transaction commits).
pub const WAKE_INSTANCES: &str = concat!(
    "SELECT pg_notify(",
    inbox_channel!("t"),
    ", '') FROM (SELECT DISTINCT unnest($1::text[]) AS t) AS targets"
);

/// Serialises registrations of the devices `$1` across instances until the transaction ends.
/// The locks are per bucket of device ids, not per device, so that a batch of thousands takes at
/// most 256 of PostgreSQL's lock slots (6,400 for the whole server by default); they are taken
/// in key order, so two batches never wait for each other in a circle (the volatile lock call
/// is evaluated after the sort).
pub const LOCK_DEVICES: &str = r#"
SELECT pg_advisory_xact_lock(727467, k.bucket)
FROM (SELECT DISTINCT hashtext(d) & 255 AS bucket FROM unnest($1::text[]) AS d) AS k
ORDER BY k.bucket
"#;

/// Tells each instance in `$1` that the device at the same place in `$2` registered elsewhere.
pub const TELL_MOVED: &str = concat!(
    "SELECT pg_notify(",
    inbox_channel!("m.server"),
    ", 'moved:' || m.device) FROM unnest($1::text[], $2::text[]) AS m(server, device)"
);

/// Of the devices `$1`, those whose row no longer names `$2`.
pub const MOVED_AWAY: &str = r#"
SELECT "deviceId" FROM dashboard."connectionBindings"
WHERE type = 'ws' AND "deviceId" = ANY($1::text[]) AND server <> $2
"#;

/// Takes the oldest actuations queued for `$1`, at most `$2`.
pub const TAKE_FORWARDED: &str = r#"
DELETE FROM dashboard."iotWsForwarded" WHERE id IN (
  SELECT id FROM dashboard."iotWsForwarded" WHERE target = $1 ORDER BY id LIMIT $2)
RETURNING id, "deviceId", body, hops
"#;

/// Re-targets actuations queued for an instance that died to where their device is now bound
/// (if that instance is alive) and wakes it.
pub const RESCUE_FORWARDED: &str = concat!(
    r#"WITH moved AS (
  UPDATE dashboard."iotWsForwarded" AS f SET target = b.server
  FROM dashboard."connectionBindings" AS b
  WHERE b.type = 'ws' AND b."deviceId" = f."deviceId" AND b."connectingStatus" AND b.server <> f.target
    AND f.created < now() - interval '1 second' AND NOT "#,
    instance_alive!("f.target"),
    " AND ",
    instance_alive!("b.server"),
    r#"
  RETURNING f.target)
SELECT pg_notify("#,
    inbox_channel!("t"),
    r#", '') FROM (SELECT DISTINCT target AS t FROM moved) AS targets"#
);

/// Drops actuations queued for a dead instance for longer than `$1` seconds whose device has
/// not come back anywhere: they are lost, and counted.
pub const DROP_STRANDED: &str = concat!(
    r#"DELETE FROM dashboard."iotWsForwarded" AS f
WHERE f.created < now() - make_interval(secs => $1) AND NOT "#,
    instance_alive!("f.target")
);

/// The SQL name of the `type` column's type: the platform's enum may be named differently.
pub const BINDING_TYPE: &str = r#"
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'dashboard."connectionBindings"'::regclass AND attname = 'type'
"#;

/// Takes the devices' rows over for this instance ($1 ids, $2 this instance), returning each
/// row's `lastConnectedAt` and the instance it named before, if another. `binding_type` is the
/// table's type column's type, as the platform created it.
pub fn upsert_connected(binding_type: &str) -> String {
    format!(
        r#"WITH previous AS (
             SELECT "deviceId" AS device, server FROM dashboard."connectionBindings"
             WHERE type = 'ws' AND "deviceId" = ANY($1::text[]) AND server <> $2),
           upserted AS (
             INSERT INTO dashboard."connectionBindings"
               (id, "deviceId", "lastConnectedAt", server, "connectingStatus", type, created, updated)
             SELECT gen_random_uuid(), d, now(), $2, true, CAST('ws' AS {binding_type}), now(), now()
             FROM unnest($1::text[]) AS d
             ON CONFLICT ("deviceId", type) DO UPDATE SET
               server = EXCLUDED.server, "connectingStatus" = true,
               "lastConnectedAt" = EXCLUDED."lastConnectedAt", updated = EXCLUDED.updated
             RETURNING "deviceId", "lastConnectedAt")
           SELECT u."deviceId", u."lastConnectedAt", p.server
           FROM upserted AS u LEFT JOIN previous AS p ON p.device = u."deviceId""#
    )
}

/// Clears the rows this instance ($3) wrote for these devices ($1) at these registrations ($2):
/// a row another instance or a later registration wrote since is left alone.
pub const MARK_DISCONNECTED: &str = r#"
UPDATE dashboard."connectionBindings" AS b SET "connectingStatus" = false, updated = now()
FROM unnest($1::text[], $2::timestamptz[]) AS g(device, at)
WHERE b.type = 'ws' AND b.server = $3 AND b."deviceId" = g.device
  AND b."lastConnectedAt" = g.at"#;

/// Clears this instance's ($2) rows for devices not connected to it ($1: those that are). An
/// anti-join, not `NOT (id = ANY(...))`: that scans the whole array for every row, 2.9 s instead
/// of 41 ms with 19,500 devices connected.
pub const CLEAR_STALE: &str = r#"
UPDATE dashboard."connectionBindings" AS b SET "connectingStatus" = false, updated = now()
WHERE b.type = 'ws' AND b.server = $2 AND b."connectingStatus"
  AND NOT EXISTS (SELECT 1 FROM unnest($1::text[]) AS c(device) WHERE c.device = b."deviceId")"#;

/// Sets this instance's ($3) rows true again for the devices connected to it ($1, registered at
/// $2), where the database lost the write.
pub const RESTORE_CURRENT: &str = r#"
UPDATE dashboard."connectionBindings" AS b SET "connectingStatus" = true, updated = now()
FROM unnest($1::text[], $2::timestamptz[]) AS g(device, at)
WHERE b.type = 'ws' AND b.server = $3 AND b."deviceId" = g.device
  AND b."lastConnectedAt" = g.at AND NOT b."connectingStatus""#;

/// Listens on an instance's channel, as named by [`INBOX_CHANNEL`].
pub fn listen(channel: &str) -> String {
    format!("LISTEN {channel}")
}
