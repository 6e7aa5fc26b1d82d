//! The actuator's credentials and their constant-time comparison.

use alloc::string::String;
use core::fmt;

/// A username and password pair, as the dashboard sends it with every actuation.
///
/// `Debug` never shows the password: these values end up near log lines.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The actuator's user name.
    pub username: String,
    /// The actuator's password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

impl Credentials {
    /// Whether `offered` matches these credentials, compared in time that depends only on the
    /// lengths, so that a remote caller cannot learn a prefix of the password by timing.
    pub fn matches(&self, offered: &Credentials) -> bool {
        // `&` rather than `&&`: both comparisons always run.
        constant_time_eq(self.username.as_bytes(), offered.username.as_bytes())
            & constant_time_eq(self.password.as_bytes(), offered.password.as_bytes())
    }
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(expected: &[u8], offered: &[u8]) -> bool {
    let mut diff = expected.len() ^ offered.len();
    // Always walk the expected value's length, whatever was offered.
    for (i, e) in expected.iter().enumerate() {
        // A shorter offer is already refused by the lengths in `diff`: any stand-in byte will do.
        let o = offered.get(i).copied().unwrap_or(0);
        diff |= usize::from(e ^ o);
    }
    core::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials { username: u.to_string(), password: p.to_string() }
    }

    #[test]
    fn equal_credentials_match() {
        assert!(creds("admin", "s3cret").matches(&creds("admin", "s3cret")));
    }

    #[test]
    fn any_difference_fails() {
        let c = creds("admin", "s3cret");
        for other in [("admin", "s3cre"), ("admin", "s3cret!"), ("Admin", "s3cret"), ("", ""), ("admin", "")] {
            assert!(!c.matches(&creds(other.0, other.1)), "{other:?}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = alloc::format!("{:?}", creds("admin", "hunter2"));
        assert!(shown.contains("admin") && !shown.contains("hunter2"));
    }
}
