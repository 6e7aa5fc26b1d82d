//! One PostgreSQL connection that comes back by itself.
//!
//! The `postgres` crate never reconnects: after a database restart every call fails with
//! "connection closed". Each database thread of the server (bindings, forwarding out, inbox)
//! owns one of these, which reconnects with back-off and runs the thread's own setup on every
//! new connection.

use std::str::FromStr;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::config::ConfigError;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Parses the operator's connection string and fills in what every connection needs.
pub fn parse_config(url: &str) -> Result<postgres::Config, ConfigError> {
    let mut config = postgres::Config::from_str(url)
        .map_err(|_| ConfigError("--database-url is not a PostgreSQL connection string or URL".into()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(2));
    }
    config.keepalives(true).application_name("iot-ws-server");
    Ok(config)
}

/// Host, port and database, never the password.
pub fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default)"))
}

pub struct Reconnecting {
    config: postgres::Config,
    client: Option<Client>,
    retry_at: Instant,
    backoff: Duration,
    reported_down: bool,
    /// Whose connection this is, for the log.
    role: &'static str,
}

impl Reconnecting {
    pub fn new(config: postgres::Config, role: &'static str) -> Self {
        Reconnecting {
            config,
            client: None,
            retry_at: Instant::now(),
            backoff: FIRST_BACKOFF,
            reported_down: false,
            role,
        }
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
            match self.config.connect(NoTls).and_then(|mut c| setup(&mut c).map(|()| c)) {
                Ok(client) => {
                    if self.reported_down {
                        crate::ops::log::line(format!("database ({}): connected again", self.role));
                    }
                    self.reported_down = false;
                    self.backoff = FIRST_BACKOFF;
                    self.client = Some(client);
                }
                Err(e) => {
                    if !self.reported_down {
                        crate::ops::log::line(format!("database ({}): unavailable ({})", self.role, error_text(&e)));
                    }
                    self.reported_down = true;
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return None;
                }
            }
        }
        self.client.as_mut()
    }

    /// Reports a failed statement; a lost connection is dropped so that the next call reconnects.
    pub fn failed(&mut self, what: &str, e: &postgres::Error) {
        crate::ops::log::line(format!("database ({}): cannot {what}: {}", self.role, error_text(e)));
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
        }
    }
}

/// The SQLSTATE and message: the crate's own Display is just "db error".
pub fn error_text(e: &postgres::Error) -> String {
    match (e.code(), e.as_db_error()) {
        (Some(code), Some(db)) => format!("{}: {}", code.code(), db.message()),
        _ => e.to_string(),
    }
}

/// Run on every new connection, before any write: a statement never waits without bound, and
/// the bindings table exists.
pub fn setup(client: &mut postgres::Client) -> Result<(), postgres::Error> {
    client.batch_execute(crate::db::sql::SESSION_SETTINGS)?;
    client.batch_execute(crate::db::sql::ENSURE_TABLE)
}
