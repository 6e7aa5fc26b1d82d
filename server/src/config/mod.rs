//! Settings: flag > environment > Cloud Foundry `VCAP_SERVICES` > default.
//!
//! Every mistake here is fatal before anything is bound: one clear line, exit status 2.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use iot_ws_core::Credentials;

use crate::ops::logging;
use serde_json::Value;

mod secret_file;
mod usage;

pub use secret_file::{read_secret_file, SecretFileError};

/// A setting that cannot be used; `main` prints it on one line and exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Everything `serve` needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `/metrics` is served instead of on `listen` (plain HTTP), when set.
    pub metrics_listen: Option<SocketAddr>,
    pub public_key: PathBuf,
    /// A libpq-style connection string; `None` means the in-memory registry.
    pub database_url: Option<DatabaseUrl>,
    pub actuator: Option<Credentials>,
    /// The file the actuator's password was read from, when it was: SIGHUP reads it again.
    pub actuator_password_file: Option<PathBuf>,
    /// Stored as `server` in the bindings, exactly as given; `None`: this host's name and the
    /// port actually bound (see [`Config::external_address`]).
    pub external_address: Option<String>,
    pub max_message_bytes: usize,
    pub register_timeout_secs: u64,
    pub hold_secs: u64,
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_pending_per_address: usize,
    pub send_queue_bytes: usize,
    pub hold_max_bytes: usize,
    /// The listener's certificate chain and key (PEM): wss:// only when set.
    pub tls: Option<TlsFiles>,
    /// How long a starting instance waits for its address's lock on the database (held by a
    /// dead instance whose session PostgreSQL has not dropped yet) before it gives up.
    pub instance_lock_wait_secs: u64,
    /// What is logged, and how.
    pub log: logging::Settings,
    pub demo: bool,
}

/// Where the listener's certificate chain and its key are read from, at start and on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A command of the binary; the server itself is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Keygen,
    Token,
    CheckToken,
    Device,
    Actuate,
}

impl Command {
    /// The command a first word names; `None` for anything else (the server's flags).
    fn named(word: &str) -> Option<Command> {
        Some(match word {
            "keygen" => Command::Keygen,
            "token" => Command::Token,
            "checktoken" => Command::CheckToken,
            "device" => Command::Device,
            "actuate" => Command::Actuate,
            _ => return None,
        })
    }

    /// What `--help` prints for it.
    pub fn usage(self) -> &'static str {
        match self {
            Command::Serve => usage::SERVER,
            Command::Keygen => usage::KEYGEN,
            Command::Token => usage::TOKEN,
            Command::CheckToken => usage::CHECKTOKEN,
            Command::Device => usage::DEVICE,
            Command::Actuate => usage::ACTUATE,
        }
    }
}

/// What a command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation<'a> {
    /// Print this command's usage on stdout, exit 0.
    Help(Command),
    /// Print the version on stdout, exit 0.
    Version,
    /// Run the command with the rest of the arguments.
    Run(Command, &'a [String]),
}

/// Reads the command word, then `--help`/`-h` and `--version`/`-V` anywhere after it (before
/// any other check, so that they work whatever else is wrong on the line); `help [COMMAND]` and
/// `version` are words of their own.
pub fn invocation(args: &[String]) -> Invocation<'_> {
    let (command, rest) = match args.first().map(String::as_str) {
        Some("help") => {
            return Invocation::Help(args.get(1).and_then(|w| Command::named(w)).unwrap_or(Command::Serve));
        }
        Some("version") => return Invocation::Version,
        Some(word) => match Command::named(word) {
            Some(command) => (command, &args[1..]),
            None => (Command::Serve, args),
        },
        None => (Command::Serve, args),
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        Invocation::Help(command)
    } else if rest.iter().any(|a| a == "--version" || a == "-V") {
        Invocation::Version
    } else {
        Invocation::Run(command, rest)
    }
}

/// Command-line flags as `--name value` pairs, looked up by name, and positional arguments.
pub struct Flags {
    values: HashMap<String, String>,
    switches: Vec<String>,
    positionals: Vec<String>,
}

impl Flags {
    /// Splits `args` into `--name value` pairs, the bare switches named in `switches`, and
    /// positional arguments (which only a command that takes them asks for).
    pub fn parse(args: &[String], switches: &[&str]) -> Result<Flags, ConfigError> {
        let mut flags = Flags { values: HashMap::new(), switches: Vec::new(), positionals: Vec::new() };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                flags.positionals.push(arg.clone());
                continue;
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            if switches.contains(&name) && inline.is_none() {
                flags.switches.push(name.to_string());
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it.next().cloned().ok_or_else(|| bad(format!("--{name} needs a value")))?,
            };
            if flags.values.insert(name.to_string(), value).is_some() {
                return Err(bad(format!("--{name} given twice")));
            }
        }
        Ok(flags)
    }

    /// The next positional argument, in the order given.
    pub fn take_positional(&mut self) -> Option<String> {
        (!self.positionals.is_empty()).then(|| self.positionals.remove(0))
    }

    pub fn has(&self, switch: &str) -> bool {
        self.switches.iter().any(|s| s == switch)
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    /// A secret given as `--NAME VALUE`, `--NAME-file PATH`, the environment variable `var`, or
    /// `var_FILE` naming a file, flags first; a file keeps the secret out of `ps` and takes
    /// systemd's `LoadCredential=` (whitespace around its text is dropped). `None` when none is.
    pub fn take_secret(&mut self, name: &str, env: &Env, var: &str) -> Result<Option<Secret>, ConfigError> {
        let file_flag = format!("{name}-file");
        let (value, file) = (self.take(name), self.take(&file_flag));
        if value.is_some() || file.is_some() {
            return one_secret(value, file, &format!("--{name}"), &format!("--{file_flag}"));
        }
        let file_var = format!("{var}_FILE");
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        one_secret(set(var), set(&file_var), var, &file_var)
    }

    /// Fails on any flag nobody asked for: a typo must not be silently ignored.
    pub fn finish(self) -> Result<(), ConfigError> {
        if let Some(name) = self.values.keys().next() {
            return Err(bad(format!("unknown option --{name} (see --help)")));
        }
        match self.positionals.first() {
            Some(arg) => Err(bad(format!("unexpected argument {arg:?} (see --help)"))),
            None => Ok(()),
        }
    }
}

/// The database's connection string and where it came from, which its errors name: an operator
/// who never gave `--database-url` is not told to fix it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    pub url: String,
    /// `--database-url`, `--database-url-file`, `DATABASE_URL`, `DATABASE_URL_FILE` or
    /// `VCAP_SERVICES mypostgres`.
    pub origin: String,
}

/// Without the string: it may hold a password.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseUrl").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// Where settings come from besides flags; tests pass their own.
pub type Env = dyn Fn(&str) -> Option<String>;

impl Config {
    /// Reads the configuration for `serve` from flags and environment.
    pub fn load(mut flags: Flags, env: &Env) -> Result<Config, ConfigError> {
        let database_url = flags
            .take_secret("database-url", env, "DATABASE_URL")?
            .map(|given| DatabaseUrl { url: given.text, origin: given.origin });
        let password = flags.take_secret("actuator-password", env, "IOT_WS_ACTUATOR_PASSWORD")?;
        let mut setting = |flag: &str, var: &str| match flags.take(flag) {
            Some(text) => Some(Setting { text, origin: format!("--{flag}") }),
            None => env(var).filter(|v| !v.is_empty()).map(|text| Setting { text, origin: var.to_string() }),
        };
        let listen = setting("listen", "IOT_WS_LISTEN");
        let metrics_listen = setting("metrics-listen", "IOT_WS_METRICS_LISTEN");
        let public_key = setting("public-key", "IOT_WS_PUBLIC_KEY");
        let username = setting("actuator-username", "IOT_WS_ACTUATOR_USERNAME");
        let external = setting("external-address", "IOT_WS_EXTERNAL_ADDRESS");
        let max_message = setting("max-message-bytes", "IOT_WS_MAX_MESSAGE_BYTES");
        let register_timeout = setting("register-timeout-secs", "IOT_WS_REGISTER_TIMEOUT_SECS");
        let hold = setting("hold-actuations-secs", "IOT_WS_HOLD_ACTUATIONS_SECS");
        let max_connections = setting("max-connections", "IOT_WS_MAX_CONNECTIONS");
        let max_pending = setting("max-pending", "IOT_WS_MAX_PENDING");
        let max_pending_per_address = setting("max-pending-per-address", "IOT_WS_MAX_PENDING_PER_ADDRESS");
        let send_queue = setting("send-queue-bytes", "IOT_WS_SEND_QUEUE_BYTES");
        let hold_max_bytes = setting("hold-max-bytes", "IOT_WS_HOLD_MAX_BYTES");
        let tls_cert = setting("tls-cert", "IOT_WS_TLS_CERT");
        let tls_key = setting("tls-key", "IOT_WS_TLS_KEY");
        let lock_wait = setting("instance-lock-wait", "IOT_WS_INSTANCE_LOCK_WAIT");
        let log = log_settings(setting("log", "IOT_WS_LOG"), setting("log-format", "IOT_WS_LOG_FORMAT"))?;
        let demo = flags.has("demo");
        flags.finish()?;

        let vcap = VcapServices::parse(env("VCAP_SERVICES"))?;
        let listen = match (listen, env("PORT")) {
            (Some(addr), _) => parse_addr(&addr.text, &addr.origin)?,
            (None, Some(port)) => parse_addr(&format!("0.0.0.0:{port}"), "PORT")?,
            (None, None) => parse_addr("0.0.0.0:5000", "--listen")?,
        };
        let metrics_listen = metrics_listen.map(|addr| parse_addr(&addr.text, &addr.origin)).transpose()?;
        let database_url = match database_url {
            _ if demo => None,
            Some(given) => Some(given),
            None => vcap.postgres_url()?.map(|url| DatabaseUrl { url, origin: "VCAP_SERVICES mypostgres".into() }),
        };
        if let Some(db) = &database_url {
            // Checked here (its sslrootcert read too) so that a bad one stops the server before
            // anything is bound.
            crate::db::connection::parse_config(&db.url, &db.origin).map_err(ConfigError)?;
        }
        let (actuator, actuator_password_file) = match (username, password) {
            (Some(username), Some(password)) => {
                (Some(Credentials { username: username.text, password: password.text }), password.file)
            }
            (None, None) => (vcap.actuator(), None),
            _ => return Err(bad("--actuator-username and --actuator-password go together")),
        };
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.text.into(), key: key.text.into() }),
            (None, None) => None,
            _ => return Err(bad("--tls-cert and --tls-key go together")),
        };
        let external = match external {
            Some(address) => Some(address),
            None => cloud_foundry_route(env)?.map(|text| Setting { text, origin: "VCAP_APPLICATION".into() }),
        };
        if let Some(address) = &external {
            check_external_address(&address.text, &address.origin)?;
        }
        Ok(Config {
            listen,
            metrics_listen,
            public_key: PathBuf::from(public_key.map_or_else(|| "keys/public.pem".into(), |key| key.text)),
            database_url,
            actuator,
            actuator_password_file,
            external_address: external.map(|address| address.text),
            max_message_bytes: number(max_message, 65_536, 64..=64 << 20)? as usize,
            register_timeout_secs: number(register_timeout, 10, 1..=86_400)?,
            hold_secs: number(hold, 30, 0..=3_600)?,
            max_connections: number(max_connections, default_max_connections(), 1..=10_000_000)? as usize,
            max_pending: number(max_pending, 1_024, 1..=10_000_000)? as usize,
            max_pending_per_address: number(max_pending_per_address, 512, 1..=10_000_000)? as usize,
            send_queue_bytes: number(send_queue, 1 << 20, 1_024..=1 << 30)? as usize,
            hold_max_bytes: number(hold_max_bytes, 16 << 20, 0..=1 << 40)? as usize,
            tls,
            instance_lock_wait_secs: number(lock_wait, 90, 0..=86_400)?,
            log,
            demo,
        })
    }
}

/// `--log` and `--log-format`; an error names the one that is wrong.
fn log_settings(filter: Option<Setting>, format: Option<Setting>) -> Result<logging::Settings, ConfigError> {
    fn read<T: Default>(s: Option<Setting>, parse: fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        s.map_or(Ok(T::default()), |s| parse(&s.text).map_err(|e| bad(format!("{}: {e}", s.origin))))
    }
    Ok(logging::Settings {
        filter: read(filter, logging::Filter::parse)?,
        format: read(format, logging::Format::parse)?,
    })
}

/// File descriptors kept for everything but client connections: the listener, the database
/// connections, the key file, stdio.
const RESERVED_FDS: u64 = 64;

/// The soft open-file limit less what the server keeps for itself, so that a full house of
/// clients never leaves it unable to reach its database.
fn default_max_connections() -> u64 {
    let soft = crate::ops::process::soft_open_file_limit().unwrap_or(1_024);
    soft.min(1 << 24).saturating_sub(RESERVED_FDS).max(1)
}

fn parse_addr(text: &str, what: &str) -> Result<SocketAddr, ConfigError> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| bad(format!("{what}: {text:?} is not an address to listen on (HOST:PORT)")))
}

/// A setting's text and where it came from (`--listen`, `IOT_WS_LISTEN`): its errors name that,
/// so that an operator who set a variable is not told to fix a flag.
pub struct Setting {
    pub text: String,
    pub origin: String,
}

/// A secret, where it came from, and the file it was read from if it was (read again on SIGHUP).
pub struct Secret {
    pub text: String,
    pub origin: String,
    pub file: Option<PathBuf>,
}

/// The secret given at one level (flags, or the environment): a value, or a file holding it.
fn one_secret(
    value: Option<String>,
    file: Option<String>,
    value_origin: &str,
    file_origin: &str,
) -> Result<Option<Secret>, ConfigError> {
    let path = match (value, file) {
        (Some(_), Some(_)) => return Err(bad(format!("give {value_origin} or {file_origin}, not both"))),
        (Some(text), None) => return Ok(Some(Secret { text, origin: value_origin.to_string(), file: None })),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => return Ok(None),
    };
    let text = read_secret_file(&path).map_err(|e| bad(format!("{file_origin} {e}")))?;
    Ok(Some(Secret { text, origin: file_origin.to_string(), file: Some(path) }))
}

fn number(setting: Option<Setting>, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ConfigError> {
    let Some(Setting { text, origin }) = setting else { return Ok(default) };
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(format!("{origin}: {text:?} is not a whole number from {} to {}", range.start(), range.end()))),
    }
}

/// The dashboard splits `server` on ':' into a host and a port to connect back.
fn check_external_address(address: &str, origin: &str) -> Result<(), ConfigError> {
    let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if !valid {
        return Err(bad(format!("{origin}: {address:?} is not HOST:PORT (the dashboard splits it on ':')")));
    }
    if address.starts_with("0.0.0.0:") {
        return Err(bad(format!("{origin}: 0.0.0.0 cannot be connected to; give this instance's own address")));
    }
    Ok(())
}

/// Cloud Foundry's first route, reached through its router on the standard port.
fn cloud_foundry_route(env: &Env) -> Result<Option<String>, ConfigError> {
    let Some(app) = env("VCAP_APPLICATION") else { return Ok(None) };
    let app: Value = serde_json::from_str(&app).map_err(|_| bad("VCAP_APPLICATION is not JSON"))?;
    Ok(app["uris"].get(0).and_then(Value::as_str).map(|uri| format!("{uri}:80")))
}

impl Config {
    /// The address stored in the bindings: as configured, else this host's name and the port
    /// actually bound (known only after binding when `--listen` asks for port 0).
    pub fn external_address(&self, bound: SocketAddr) -> String {
        if let Some(address) = &self.external_address {
            return address.clone();
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        format!("{}:{}", host_name(kernel, std::env::var("HOSTNAME").ok()), bound.port())
    }
}

/// The kernel's host name, else `$HOSTNAME`, else `localhost`.
fn host_name(kernel: Option<String>, env: Option<String>) -> String {
    kernel.map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).or(env).unwrap_or_else(|| "localhost".into())
}

/// The services bound to a Cloud Foundry app.
struct VcapServices(Value);

impl VcapServices {
    fn parse(text: Option<String>) -> Result<VcapServices, ConfigError> {
        match text {
            None => Ok(VcapServices(Value::Null)),
            Some(text) => serde_json::from_str(&text).map(VcapServices).map_err(|_| bad("VCAP_SERVICES is not JSON")),
        }
    }

    /// The credentials of the bound service instance called `name`, whatever its label.
    fn credentials(&self, name: &str) -> Option<&Value> {
        let services = self.0.as_object()?;
        services.values().filter_map(Value::as_array).flatten().find(|s| s["name"] == name).map(|s| &s["credentials"])
    }

    fn postgres_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(c) = self.credentials("mypostgres") else { return Ok(None) };
        if let Some(uri) = c["uri"].as_str() {
            return Ok(Some(uri.to_string()));
        }
        let field = |k: &str| match &c[k] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let (Some(host), Some(dbname), Some(user)) = (field("hostname"), field("dbname"), field("username")) else {
            return Err(bad("VCAP_SERVICES mypostgres: credentials need uri, or hostname, dbname and username"));
        };
        let mut url = format!("host={} dbname={} user={}", quote(&host), quote(&dbname), quote(&user));
        if let Some(port) = field("port") {
            url += &format!(" port={}", quote(&port));
        }
        if let Some(password) = field("password") {
            url += &format!(" password={}", quote(&password));
        }
        Ok(Some(url))
    }

    fn actuator(&self) -> Option<Credentials> {
        let c = self.credentials("websocket-ups")?;
        Some(Credentials {
            username: c["username"].as_str()?.to_string(),
            password: c["password"].as_str()?.to_string(),
        })
    }
}

/// Quotes a value for a libpq key=value connection string.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests;
