//! The TLS settings of a libpq connection string, which we read because tokio-postgres does not:
//! it knows `sslmode` disable, prefer and require only, and no `sslrootcert` at all (either one
//! otherwise makes the whole string "invalid").
//!
//! [`split`] takes them out of the string, in URL form (`postgresql://…?sslmode=verify-full`) or
//! key=value form (`host=… sslmode=verify-ca`), so that what is left parses with
//! `postgres::Config::from_str`, and says what they mean, as libpq does:
//! - `disable`: no TLS.
//! - `prefer`, the default: TLS when the server offers it, its certificate not checked; clear
//!   text only when the server refuses TLS.
//! - `require`: TLS or no connection, the certificate not checked; but with an `sslrootcert` it
//!   is verify-ca (libpq's rule: whoever names a CA wants it used).
//! - `verify-ca`: the chain must lead to `sslrootcert` (else the system's roots); any host name.
//! - `verify-full`: the chain, and the host name (a DNS name or an IP address) in the certificate.
//! - `sslrootcert=system` (libpq 16): the system's roots; verify-full unless `sslmode` says
//!   otherwise, and libpq refuses any weaker mode with it, so do we.
//!
//! Nothing here reads a file: the roots are named, `db/tls.rs` loads them.

use std::path::PathBuf;

/// Which certificates a verified connection trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// The system's store (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// `sslrootcert`: a PEM file of one or more CA certificates.
    File(PathBuf),
}

/// How a connection uses TLS: libpq's `sslmode`, as it takes effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa(Roots),
    VerifyFull(Roots),
}

impl SslMode {
    /// What tokio-postgres is told: whether to ask for TLS and whether clear text will do. The
    /// verify modes are `Require` there; the checking is the rustls configuration's.
    pub fn negotiation(&self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa(_) | SslMode::VerifyFull(_) => postgres::config::SslMode::Require,
        }
    }

    /// The libpq name of the mode in effect, for the startup line.
    pub fn name(&self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa(_) => "verify-ca",
            SslMode::VerifyFull(_) => "verify-full",
        }
    }
}

/// A TLS setting that cannot be used. Its text names neither the string nor its password.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SslError {
    #[error("sslmode {0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    UnknownMode(String),
    #[error("sslrootcert is empty: give the path of a PEM file of CA certificates, or system")]
    EmptyRootCert,
    #[error("sslmode {0:?} may not be used with sslrootcert=system (use verify-full)")]
    WeakWithSystemRoots(String),
    #[error("{0} is given, but client certificates (sslcert, sslkey) are not supported")]
    ClientCertificate(&'static str),
    #[error("{0} is not valid percent-encoded UTF-8")]
    NotUtf8(&'static str),
}

/// The connection string without its TLS settings, and the mode they make.
///
/// A string whose syntax is broken is given back whole with the default mode: tokio-postgres
/// parses it next and says what is wrong in its own words.
pub fn split(url: &str) -> Result<(String, SslMode), SslError> {
    let mut found = Found::default();
    let rest = match url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://")) {
        Some(_) => split_url(url, &mut found)?,
        None => match split_key_values(url, &mut found)? {
            Some(rest) => rest,
            None => return Ok((url.to_owned(), SslMode::Prefer)),
        },
    };
    Ok((rest, found.mode()?))
}

/// The name of a TLS setting that is ours to read, `None` for one of tokio-postgres's.
fn ours(key: &str) -> Option<&'static str> {
    ["sslmode", "sslrootcert", "sslcert", "sslkey"].into_iter().find(|name| *name == key)
}

/// The settings taken out of the string, as written (the last of each wins, as in libpq).
#[derive(Default)]
struct Found {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl Found {
    /// Keeps the value of one of [`ours`]; client certificates are refused here.
    fn take(&mut self, name: &'static str, value: String) -> Result<(), SslError> {
        match name {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            _ => return Err(SslError::ClientCertificate(name)),
        }
        Ok(())
    }

    fn mode(self) -> Result<SslMode, SslError> {
        let roots = match self.sslrootcert.as_deref() {
            None => None,
            Some("") => return Err(SslError::EmptyRootCert),
            Some("system") => Some(Roots::System),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
        };
        let system = roots == Some(Roots::System);
        let written = self.sslmode.unwrap_or_else(|| if system { "verify-full" } else { "prefer" }.to_owned());
        let mode = match written.as_str() {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => roots.map_or(SslMode::Require, SslMode::VerifyCa),
            "verify-ca" => SslMode::VerifyCa(roots.unwrap_or(Roots::System)),
            "verify-full" => SslMode::VerifyFull(roots.unwrap_or(Roots::System)),
            _ => return Err(SslError::UnknownMode(written)),
        };
        if system && !matches!(mode, SslMode::VerifyFull(_)) {
            return Err(SslError::WeakWithSystemRoots(written));
        }
        Ok(mode)
    }
}

/// URL form: the query's `key=value` pairs are split on `&` and percent-decoded. Pairs that are
/// not ours stay exactly as written. The query starts at the first `?` after the credentials,
/// which end at the first `@`, where tokio-postgres looks for them.
fn split_url(url: &str, found: &mut Found) -> Result<String, SslError> {
    // From the `@` itself, which is no `?`.
    let credentials_end = url.find('@').unwrap_or(0);
    let Some(question) = url[credentials_end..].find('?').map(|q| credentials_end + q) else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for pair in url[question + 1..].split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            kept.push(pair);
            continue;
        };
        // A key that does not decode is not ours; tokio-postgres refuses it.
        match decode(key).as_deref().and_then(ours) {
            Some(name) => found.take(name, decode(value).ok_or(SslError::NotUtf8(name))?)?,
            None => kept.push(pair),
        }
    }
    let base = &url[..question];
    Ok(if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) })
}

fn decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|s| s.into_owned())
}

/// Key=value form, tokenised as tokio-postgres does (whitespace between pairs and around `=`;
/// a value plain or in single quotes, `\` escaping the next character). The pairs that are not
/// ours are written back quoted. `Ok(None)` when the syntax is broken.
fn split_key_values(text: &str, found: &mut Found) -> Result<Option<String>, SslError> {
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        skip_whitespace(&mut chars);
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '=') {
            key.push(c);
        }
        // tokio-postgres stops where no keyword starts (the end, or a stray `=`), as we do.
        if key.is_empty() {
            break;
        }
        skip_whitespace(&mut chars);
        if chars.next_if_eq(&'=').is_none() {
            return Ok(None);
        }
        skip_whitespace(&mut chars);
        let Some(value) = value(&mut chars) else { return Ok(None) };
        match ours(&key) {
            Some(name) => found.take(name, value)?,
            None => kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))),
        }
    }
    Ok(Some(kept.join(" ")))
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn skip_whitespace(chars: &mut Chars<'_>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// One value: `'quoted'` (may be empty) or plain (may not be); `None` when broken.
fn value(chars: &mut Chars<'_>) -> Option<String> {
    let quoted = chars.next_if_eq(&'\'').is_some();
    let mut value = String::new();
    while let Some(c) = chars.next_if(|&c| quoted || !c.is_whitespace()) {
        match c {
            '\'' if quoted => return Some(value),
            '\\' => value.extend(chars.next()),
            c => value.push(c),
        }
    }
    // The end of the text, or whitespace after a plain value: an open quote is broken.
    (!quoted && !value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests;
