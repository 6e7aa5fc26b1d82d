//! SIGHUP's part for the actuator's credentials: the password is read again from its file when
//! it came from one (`--actuator-password-file`, `IOT_WS_ACTUATOR_PASSWORD_FILE`). A value given
//! as a flag, in the environment or in `VCAP_SERVICES` cannot change in a running process, and
//! the user name has no file: both stay as they were at the start.

use std::path::{Path, PathBuf};

use iot_ws_core::{Credentials, SessionConfig};

use crate::config::{read_secret_file, SecretFileError};
use crate::connection::live_config::LiveSessionConfig;

/// What reading the actuator's password again made of the credentials in use.
#[derive(Debug)]
pub enum Reread {
    /// None configured: every actuation is still refused.
    NoneConfigured,
    /// Given as values, not a file: kept.
    Fixed,
    /// The file holds the password in use.
    Unchanged(PathBuf),
    /// The file holds another password: these credentials replace the ones in use.
    Changed(PathBuf, Credentials),
    /// The file cannot be used (unreadable, empty, too big): the credentials in use stay.
    Kept(SecretFileError),
}

/// Reads `file` again, if the password came from one, and compares it with `in_use`.
pub fn reread(in_use: Option<&Credentials>, file: Option<&Path>) -> Reread {
    let Some(in_use) = in_use else { return Reread::NoneConfigured };
    let Some(file) = file else { return Reread::Fixed };
    match read_secret_file(file) {
        Err(why) => Reread::Kept(why),
        Ok(password) if password == in_use.password => Reread::Unchanged(file.to_path_buf()),
        Ok(password) => {
            Reread::Changed(file.to_path_buf(), Credentials { username: in_use.username.clone(), password })
        }
    }
}

impl Reread {
    /// A file that could not be used is a warning: the operator's change did not take.
    pub fn level(&self) -> log::Level {
        match self {
            Reread::Kept(_) => log::Level::Warn,
            _ => log::Level::Info,
        }
    }

    /// The reload's log line about the credentials (paths and causes, never a password); `None`
    /// when there is nothing to say.
    pub fn log_line(&self) -> Option<String> {
        let what = match self {
            Reread::NoneConfigured => return None,
            Reread::Fixed => "actuator credentials kept: given as values, which only a restart changes".to_string(),
            Reread::Unchanged(path) => format!("actuator password read again from {}: unchanged", path.display()),
            Reread::Changed(path, _) => format!(
                "actuator password read again from {}: changed, open connections check their next actuation with it",
                path.display()
            ),
            Reread::Kept(why) => format!("actuator credentials kept: {why}"),
        };
        Some(format!("reload (SIGHUP): {what}"))
    }
}

/// Reads the password again and, if it changed, puts it in the settings every session uses.
pub fn reload(live: &LiveSessionConfig, file: Option<&Path>) -> Reread {
    let current = live.current();
    let reread = reread(current.actuator.as_ref(), file);
    if let Reread::Changed(_, credentials) = &reread {
        live.replace(SessionConfig { actuator: Some(credentials.clone()), ..SessionConfig::clone(&current) });
    }
    reread
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("iot-ws-actuator-reload-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
        fn file(&self, content: &str) -> PathBuf {
            let path = self.0.join("password");
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn creds(password: &str) -> Credentials {
        Credentials { username: "dash".into(), password: password.into() }
    }

    fn live(password: &str) -> LiveSessionConfig {
        LiveSessionConfig::new(SessionConfig { actuator: Some(creds(password)), register_timeout_ms: 7_000 })
    }

    fn password_in_use(live: &LiveSessionConfig) -> String {
        live.current().actuator.as_ref().unwrap().password.clone()
    }

    #[test]
    fn a_new_password_in_the_file_replaces_the_one_in_use_and_keeps_the_rest() {
        let dir = Dir::new("changed");
        let file = dir.file("bravo\n");
        let live = live("alpha");
        let reread = reload(&live, Some(&file));
        assert!(matches!(&reread, Reread::Changed(path, c) if *path == file && *c == creds("bravo")), "{reread:?}");
        assert_eq!(password_in_use(&live), "bravo");
        assert_eq!(live.current().actuator.as_ref().unwrap().username, "dash");
        assert_eq!(live.current().register_timeout_ms, 7_000);
        let line = reread.log_line().unwrap();
        assert!(line.starts_with("reload (SIGHUP): actuator password read again from ") && line.contains("changed"));
        assert!(line.contains(&file.display().to_string()) && !line.contains("bravo"), "{line}");
        assert_eq!(reread.level(), log::Level::Info);
    }

    #[test]
    fn the_same_password_leaves_the_settings_as_they_are() {
        let dir = Dir::new("same");
        let file = dir.file("alpha");
        let live = live("alpha");
        let before = live.current();
        let reread = reload(&live, Some(&file));
        assert!(matches!(&reread, Reread::Unchanged(path) if *path == file), "{reread:?}");
        assert!(std::sync::Arc::ptr_eq(&before, &live.current()), "no replacement, no refresh for every session");
        let line = reread.log_line().unwrap();
        assert_eq!(line, format!("reload (SIGHUP): actuator password read again from {}: unchanged", file.display()));
    }

    #[test]
    fn a_file_that_cannot_be_used_keeps_the_password_in_use_and_says_why() {
        let dir = Dir::new("broken");
        let empty = dir.file(" \n");
        let missing = dir.0.join("missing");
        for (file, why) in [(&empty, "is empty"), (&missing, "No such file")] {
            let live = live("alpha");
            let reread = reload(&live, Some(file));
            assert!(matches!(reread, Reread::Kept(_)), "{reread:?}");
            assert_eq!(password_in_use(&live), "alpha");
            let line = reread.log_line().unwrap();
            assert!(line.starts_with("reload (SIGHUP): actuator credentials kept: "), "{line}");
            assert!(line.contains(&file.display().to_string()) && line.contains(why) && !line.contains("alpha"));
            assert_eq!(reread.level(), log::Level::Warn, "the operator's change did not take");
        }
    }

    #[test]
    fn credentials_given_as_values_or_none_are_not_read_again() {
        let live = live("alpha");
        let reread = reload(&live, None);
        assert!(matches!(reread, Reread::Fixed), "{reread:?}");
        assert_eq!(password_in_use(&live), "alpha");
        let line = reread.log_line().unwrap();
        assert_eq!(line, "reload (SIGHUP): actuator credentials kept: given as values, which only a restart changes");
        // No credentials: nothing to read again (even with a file, which the configuration never pairs with none).
        let dir = Dir::new("none");
        let none = LiveSessionConfig::new(SessionConfig { actuator: None, register_timeout_ms: 7_000 });
        let reread = reload(&none, Some(&dir.file("bravo")));
        assert!(matches!(reread, Reread::NoneConfigured) && reread.log_line().is_none(), "{reread:?}");
        assert!(none.current().actuator.is_none());
    }
}
