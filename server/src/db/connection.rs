//! One PostgreSQL connection that comes back by itself, and the [`Database`] it connects to.
//!
//! The `postgres` crate never reconnects: after a database restart every call fails with
//! "connection closed". Each database thread of the server (bindings, forwarding out, inbox)
//! owns one of these, which reconnects with back-off and runs the thread's own setup on every
//! new connection. A connection that fails (TLS refused included) is logged once with its
//! reason, then retried.
//!
//! Each keeps its role's [`DbState`] (`/ready`, `iot_ws_database_up`): up once connected and
//! after each step that worked, down with the logged reason when connecting or a statement fails,
//! unless PostgreSQL refused only the values of one statement (a bad row is not a bad database).

use std::str::FromStr;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::db::sslmode::SslMode;
use crate::db::tls_connect::MakeRustlsConnect;
use crate::ops::metrics::{DbState, Metrics};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a database thread stays idle before it checks its connection with its own kind of
/// statement (a write of no rows): how stale `/ready` and `iot_ws_database_up` may be.
pub const PROBE: Duration = Duration::from_secs(5);

/// Where the database is and how to reach it: tokio-postgres's settings and the TLS that
/// `sslmode` asks for.
#[derive(Clone)]
pub struct Database {
    config: postgres::Config,
    mode: SslMode,
    tls: MakeRustlsConnect,
}

impl Database {
    /// One new connection.
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }

    /// Host, port, database and TLS mode, never the password.
    pub fn describe(&self) -> String {
        let config = &self.config;
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let dbname = config.get_dbname().unwrap_or("(default)");
        format!("{host}:{port}/{dbname} (sslmode {})", self.mode.name())
    }
}

/// Parses the operator's connection string and fills in what every connection needs. `origin`
/// is where the string came from (`--database-url`, `DATABASE_URL`, `VCAP_SERVICES mypostgres`):
/// every error names it, and never the string, which may hold a password. The error is a
/// configuration error's text (the caller makes it one: `config` depends on `db`, not back).
pub fn parse_config(url: &str, origin: &str) -> Result<Database, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{origin}: {e}");
    let (rest, mode) = crate::db::sslmode::split(url).map_err(|e| bad(&e))?;
    let mut config = postgres::Config::from_str(&rest)
        .map_err(|e| bad(&format_args!("not a PostgreSQL connection string or URL ({})", error_text(&e))))?;
    config.ssl_mode(mode.negotiation());
    if config.get_ssl_negotiation() == postgres::config::SslNegotiation::Direct
        && mode.negotiation() != postgres::config::SslMode::Require
    {
        // libpq's rule too: a direct TLS handshake leaves no clear text to fall back to.
        return Err(bad(&"sslnegotiation=direct needs sslmode require, verify-ca or verify-full"));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(2));
    }
    // Our end notices a dead database as PostgreSQL's end notices us (db/sql.rs
    // SESSION_SETTINGS): a statement or a LISTEN never waits on a silent peer for hours.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(4)
        .tcp_user_timeout(Duration::from_secs(30))
        .application_name("iot-ws-server");
    let tls = crate::db::tls::connector(&mode).map_err(|e| bad(&e))?;
    Ok(Database { config, mode, tls })
}

pub struct Reconnecting {
    db: Database,
    client: Option<Client>,
    retry_at: Instant,
    backoff: Duration,
    /// The failure last logged, while nothing has worked since: the same failure again (each
    /// reconnection attempt of an outage, the idle check every 5 s on a read-only database) is
    /// not logged again.
    reported_failure: Option<String>,
    /// Whose connection this is, for the log.
    role: &'static str,
    state: std::sync::Arc<DbState>,
}

impl Reconnecting {
    pub fn new(db: Database, role: &'static str, metrics: &Metrics) -> Self {
        let state = metrics.database(role);
        Reconnecting {
            db,
            client: None,
            retry_at: Instant::now(),
            backoff: FIRST_BACKOFF,
            reported_failure: None,
            role,
            state,
        }
    }

    /// Says the last step on the database worked.
    pub fn worked(&mut self) {
        if self.reported_failure.take().is_some() {
            log::info!("database ({}): works again", self.role);
        }
        self.state.set(Ok(()));
    }

    /// Says the connection cannot serve its role, and why.
    pub fn down(&self, why: String) {
        self.state.set(Err(why));
    }

    /// Starts from a connection made elsewhere (already set up).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Whether a connection is up, without trying to make one.
    pub fn is_up(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// The connection if it is up; never connects.
    pub fn current(&mut self) -> Option<&mut Client> {
        self.client.as_mut().filter(|c| !c.is_closed())
    }

    /// Gives the connection up (the next [`client`](Reconnecting::client) call makes a new one).
    pub fn drop_client(&mut self) {
        self.client = None;
    }

    /// How long until the next connection attempt is due.
    pub fn retry_in(&self) -> Duration {
        self.retry_at.saturating_duration_since(Instant::now())
    }

    /// A usable connection, connecting (with back-off) if there is none; `setup` runs on each
    /// new connection before it is used.
    pub fn client(&mut self, setup: impl FnOnce(&mut Client) -> Result<(), postgres::Error>) -> Option<&mut Client> {
        if !self.is_up() {
            self.client = None;
            if Instant::now() < self.retry_at {
                return None;
            }
            match self.db.connect().and_then(|mut c| setup(&mut c).map(|()| c)) {
                Ok(client) => {
                    if self.reported_failure.take().is_some() {
                        log::info!("database ({}): connected again", self.role);
                    }
                    self.backoff = FIRST_BACKOFF;
                    self.client = Some(client);
                    self.worked();
                }
                Err(e) => {
                    self.report(format!("database ({}): unavailable ({})", self.role, error_text(&e)));
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return None;
                }
            }
        }
        self.client.as_mut()
    }

    /// Says why the connection cannot serve its role: in the log unless that was the last thing
    /// said there, and in its state (`/ready`, the gauge).
    fn report(&mut self, why: String) {
        if self.reported_failure.as_ref() != Some(&why) {
            log::warn!("{why}");
            self.reported_failure = Some(why.clone());
        }
        self.down(why);
    }

    /// Reports a failed statement; a lost connection is dropped so that the next call reconnects.
    /// The log gets the failure once, until a step works again ("works again").
    pub fn failed(&mut self, what: &str, e: &postgres::Error) {
        let why = format!("database ({}): cannot {what}: {}", self.role, error_text(e));
        if about_the_data(e) {
            // Those rows only: the database still works.
            log::warn!("{why}");
        } else {
            self.report(why);
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
        }
    }
}

/// The SQLSTATE and message of a database error (the crate's own Display is just "db error");
/// for any other, the error and its causes: the crate's Display leaves them out, and they are
/// the reason ("error performing TLS handshake: invalid peer certificate: UnknownIssuer",
/// "error connecting to server: Connection refused").
pub fn error_text(e: &postgres::Error) -> String {
    if let (Some(code), Some(db)) = (e.code(), e.as_db_error()) {
        return format!("{}: {}", code.code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        // Some errors repeat their cause in their own text.
        let part = c.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = c.source();
    }
    text
}

/// Whether PostgreSQL refused a statement because of the values in it (a type, a constraint, a
/// limit, a trigger), rather than because the database or the connection is unwell: then other
/// rows can still be written.
pub fn about_the_data(e: &postgres::Error) -> bool {
    e.code().is_some_and(|code| data_sqlstate(code.code()))
}

/// SQLSTATE classes 22 data exception, 23 integrity constraint violation, 54 program limit
/// exceeded (a row too large for an index), P0 PL/pgSQL raise, 2F/38/39 routine (trigger)
/// exceptions.
fn data_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "23" | "54" | "P0" | "2F" | "38" | "39"))
}

/// Run on every new connection, before any write: a statement never waits without bound, and
/// the bindings table exists.
pub fn setup(client: &mut postgres::Client) -> Result<(), postgres::Error> {
    client.batch_execute(crate::db::sql::SESSION_SETTINGS)?;
    client.batch_execute(crate::db::sql::ENSURE_TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_told_from_the_others_by_sqlstate_class() {
        let cases = [
            ("22021", true, "invalid byte sequence (a NUL in text)"),
            ("22001", true, "value too long"),
            ("23514", true, "check constraint"),
            ("23505", true, "unique violation"),
            ("54000", true, "index row too large"),
            ("P0001", true, "RAISE EXCEPTION in a trigger"),
            ("39P01", true, "trigger protocol violated"),
            ("40001", false, "serialization failure"),
            ("40P01", false, "deadlock"),
            ("57014", false, "statement timeout"),
            ("57P01", false, "admin shutdown"),
            ("25006", false, "read-only transaction (a standby)"),
            ("42P01", false, "undefined table"),
            ("42501", false, "permission denied"),
            ("53100", false, "disk full"),
            ("08006", false, "connection failure"),
            ("", false, "no code"),
        ];
        for (code, data, what) in cases {
            assert_eq!(data_sqlstate(code), data, "{code} {what}");
        }
    }
}
