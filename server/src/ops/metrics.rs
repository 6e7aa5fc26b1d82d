//! Counters for `GET /metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::connection::limits::Limits;

/// One process's counters; cheap to bump from any task.
#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    pub registered_devices: AtomicI64,
    pub registrations_ok: AtomicU64,
    pub registrations_invalid_token: AtomicU64,
    pub registrations_store_failed: AtomicU64,
    pub actuations_delivered: AtomicU64,
    pub actuations_held: AtomicU64,
    pub actuations_not_connected: AtomicU64,
    pub actuations_refused: AtomicU64,
    pub actuations_dropped_after_hold: AtomicU64,
    /// Handed to another instance through PostgreSQL.
    pub actuations_forwarded: AtomicU64,
    /// Received from another instance (then delivered, held or dropped like any other).
    pub actuations_received: AtomicU64,
    /// Forwarded to an instance that died before taking them, and whose device did not
    /// show up anywhere else in time.
    pub actuations_lost_in_transit: AtomicU64,
    pub messages_rejected: AtomicU64,
    /// Not held because the device's queue or all held actuations together were full.
    pub actuations_hold_full: AtomicU64,
    /// Connections closed because their unsent output passed `--send-queue-bytes`.
    pub closed_send_queue_full: AtomicU64,
    /// Connections closed because their socket took no output for 30 s.
    pub closed_write_stalled: AtomicU64,
    /// TLS handshakes that failed (clear text to the TLS port, a client that refused our
    /// certificate, a broken peer).
    pub tls_handshakes_failed: AtomicU64,
    /// Certificate reloads (SIGHUP) by outcome.
    pub tls_reloads_ok: AtomicU64,
    pub tls_reloads_failed: AtomicU64,
    /// Accepts that failed (out of file descriptors, most likely), on any listener.
    pub accept_errors: AtomicU64,
    /// The connection caps and counts, once the server has them.
    limits: OnceLock<Arc<Limits>>,
    /// Each database connection's state, by role; empty without a database.
    databases: Mutex<Vec<Arc<DbState>>>,
}

/// Whether one database connection works, as `/ready` and `iot_ws_database_up` show it: `Ok` when
/// its last step (connecting, a statement, the idle probe) worked, else why not, as logged (a
/// cause, never the URL or the password).
pub struct DbState {
    role: &'static str,
    state: Mutex<Result<(), String>>,
}

impl DbState {
    pub fn set(&self, state: Result<(), String>) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    fn get(&self) -> Result<(), String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn set_limits(&self, limits: Arc<Limits>) {
        let _ = self.limits.set(limits);
    }

    /// The state of the database connection of `role`, down until it connects.
    pub fn database(&self, role: &'static str) -> Arc<DbState> {
        let db = Arc::new(DbState { role, state: Mutex::new(Err(format!("database ({role}): connecting"))) });
        self.databases.lock().unwrap_or_else(PoisonError::into_inner).push(db.clone());
        db
    }

    /// `/ready`: whether the bindings store can record registrations (always, in memory), or why
    /// not.
    pub fn ready(&self) -> Result<(), String> {
        let dbs = self.databases.lock().unwrap_or_else(PoisonError::into_inner);
        dbs.iter().find(|d| d.role == "bindings").map_or(Ok(()), |d| d.get())
    }

    /// The whole exposition, as served.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |n: &AtomicU64| n.load(Relaxed);
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge(&mut out, "iot_ws_connections", "Open WebSocket connections.", self.connections.load(Relaxed));
        gauge(
            &mut out,
            "iot_ws_registered_devices",
            "Devices registered on this instance.",
            self.registered_devices.load(Relaxed),
        );
        let counter = |out: &mut String, name: &str, help: &str, label: &str, rows: &[(&str, &AtomicU64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value, n) in rows {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", n.load(Relaxed));
            }
        };
        counter(
            &mut out,
            "iot_ws_registrations_total",
            "Device registrations by outcome.",
            "outcome",
            &[
                ("ok", &self.registrations_ok),
                ("invalid_token", &self.registrations_invalid_token),
                ("store_failed", &self.registrations_store_failed),
            ],
        );
        counter(
            &mut out,
            "iot_ws_actuations_total",
            "Actuations taken in here (sent or received), by final outcome: one each.",
            "outcome",
            &[
                ("delivered", &self.actuations_delivered),
                ("not_connected", &self.actuations_not_connected),
                ("refused", &self.actuations_refused),
                ("dropped_after_hold", &self.actuations_dropped_after_hold),
                ("hold_full", &self.actuations_hold_full),
                ("forwarded", &self.actuations_forwarded),
            ],
        );
        // Not outcomes: a held actuation ends later as delivered, dropped_after_hold or
        // forwarded; a received one is counted again by its outcome here; a lost one was
        // counted as forwarded by the instance that sent it.
        let total = |out: &mut String, name: &str, help: &str, n: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}");
        };
        total(
            &mut out,
            "iot_ws_actuations_held_total",
            "Actuations held for an away device.",
            load(&self.actuations_held),
        );
        total(
            &mut out,
            "iot_ws_actuations_received_total",
            "Actuations received from other instances.",
            load(&self.actuations_received),
        );
        total(
            &mut out,
            "iot_ws_actuations_lost_in_transit_total",
            "Forwarded actuations dropped: their instance died and their device came nowhere.",
            load(&self.actuations_lost_in_transit),
        );
        total(&mut out, "iot_ws_accept_errors_total", "Failed accepts (e.g. out of fds).", load(&self.accept_errors));
        let _ = writeln!(
            out,
            "# HELP iot_ws_messages_rejected_total Messages answered 401 Wrong message format.\n# TYPE iot_ws_messages_rejected_total counter\niot_ws_messages_rejected_total {}",
            self.messages_rejected.load(Relaxed)
        );
        if let Some(limits) = self.limits.get() {
            let open = |n: usize| n as i64;
            gauge(&mut out, "iot_ws_open_connections", "Open client connections, in any phase.", open(limits.open()));
            gauge(
                &mut out,
                "iot_ws_pending_connections",
                "Connections neither registered nor senders of an accepted actuation yet.",
                open(limits.pending()),
            );
            counter(
                &mut out,
                "iot_ws_connections_refused_total",
                "Connections refused at accept with 503, by the cap they met.",
                "reason",
                &[
                    ("limit", &limits.refused_limit),
                    ("pending", &limits.refused_pending),
                    ("pending_per_address", &limits.refused_pending_per_address),
                ],
            );
        }
        let mut closed =
            vec![("send_queue_full", &self.closed_send_queue_full), ("write_stalled", &self.closed_write_stalled)];
        if let Some(limits) = self.limits.get() {
            closed.push(("pending_evicted", &limits.evicted));
        }
        counter(
            &mut out,
            "iot_ws_connections_closed_total",
            "Connections closed by the server: for not taking their output, or to give a pending slot to a fairer claim.",
            "reason",
            &closed,
        );
        let _ = writeln!(
            out,
            "# HELP iot_ws_tls_handshake_failures_total TLS handshakes that failed (wss:// only).\n# TYPE iot_ws_tls_handshake_failures_total counter\niot_ws_tls_handshake_failures_total {}",
            self.tls_handshakes_failed.load(Relaxed)
        );
        counter(
            &mut out,
            "iot_ws_tls_reloads_total",
            "Certificate reloads on SIGHUP (wss:// only); a failed one keeps the pair in use.",
            "outcome",
            &[("ok", &self.tls_reloads_ok), ("failed", &self.tls_reloads_failed)],
        );
        let dbs = self.databases.lock().unwrap_or_else(PoisonError::into_inner);
        if !dbs.is_empty() {
            let _ = writeln!(
                out,
                "# HELP iot_ws_database_up Whether each database connection works (/ready: bindings).\n\
                 # TYPE iot_ws_database_up gauge"
            );
        }
        for db in dbs.iter() {
            let _ = writeln!(out, "iot_ws_database_up{{role=\"{}\"}} {}", db.role, u8::from(db.get().is_ok()));
        }
        drop(dbs);
        let _ = writeln!(
            out,
            "# HELP iot_ws_log_lines_dropped_total Log lines dropped because nothing was reading the log.
# TYPE iot_ws_log_lines_dropped_total counter
iot_ws_log_lines_dropped_total {}",
            crate::ops::logging::dropped()
        );
        let _ = writeln!(
            out,
            "# HELP iot_ws_build_info The version running.\n# TYPE iot_ws_build_info gauge\niot_ws_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(process) = crate::ops::process::Process::read() {
            process.render(&mut out);
        }
        crate::ops::census::render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_the_bindings_connection_and_each_role_has_a_gauge() {
        let metrics = Metrics::default();
        assert_eq!(metrics.ready(), Ok(()), "no database: the in-memory registry is always ready");
        assert!(!metrics.render().contains("iot_ws_database_up"));
        let inbox = metrics.database("inbox");
        let bindings = metrics.database("bindings");
        assert_eq!(metrics.ready(), Err("database (bindings): connecting".into()));
        bindings.set(Ok(()));
        inbox.set(Err("database (inbox): down".into()));
        assert_eq!(metrics.ready(), Ok(()), "only the bindings decide");
        let text = metrics.render();
        assert!(text.contains("# TYPE iot_ws_database_up gauge\niot_ws_database_up{role=\"inbox\"} 0\n"), "{text}");
        assert!(text.contains("\niot_ws_database_up{role=\"bindings\"} 1\n"), "{text}");
        bindings.set(Err("database (bindings): cannot record connected devices: 25006: read-only".into()));
        assert_eq!(
            metrics.ready(),
            Err("database (bindings): cannot record connected devices: 25006: read-only".into())
        );
    }
}
