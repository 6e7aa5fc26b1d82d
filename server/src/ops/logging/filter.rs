//! Which records are written: `IOT_WS_LOG` / `--log`, e.g. `info` or
//! `warn,iot_ws_server=info,tokio_postgres=debug`. A bare level is the default; `path=level` sets
//! the level of a module path and everything under it (`tokio_postgres` covers
//! `tokio_postgres::connection`), the longest matching path winning.

use log::LevelFilter;

/// The levels by name, in the order `--help` lists them.
const LEVELS: [(&str, LevelFilter); 6] = [
    ("off", LevelFilter::Off),
    ("error", LevelFilter::Error),
    ("warn", LevelFilter::Warn),
    ("info", LevelFilter::Info),
    ("debug", LevelFilter::Debug),
    ("trace", LevelFilter::Trace),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// Module paths and their levels, longest path first.
    paths: Vec<(String, LevelFilter)>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter { default: LevelFilter::Info, paths: Vec::new() }
    }
}

impl Filter {
    /// Reads a filter; the error says which part is wrong (the caller names the setting).
    pub fn parse(spec: &str) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => filter.default = level(part)?,
                Some((path, lvl)) => {
                    let path = path.trim();
                    if path.is_empty() || !path.split("::").all(is_identifier) {
                        return Err(format!("{path:?} is not a module path (e.g. tokio_postgres)"));
                    }
                    let lvl = level(lvl.trim())?;
                    filter.paths.retain(|(p, _)| p != path);
                    filter.paths.push((path.to_string(), lvl));
                }
            }
        }
        filter.paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(filter)
    }

    /// The most detailed level any record may be written at: the `log` crate's macros skip
    /// records above it without calling the logger.
    pub fn max_level(&self) -> LevelFilter {
        self.paths.iter().map(|(_, l)| *l).fold(self.default, Ord::max)
    }

    /// Whether a record of `level` from module path `target` is written.
    pub fn enabled(&self, target: &str, level: log::Level) -> bool {
        level <= self.level_for(target)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        let covers =
            |path: &str| target.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
        self.paths.iter().find(|(p, _)| covers(p)).map_or(self.default, |(_, l)| *l)
    }
}

fn level(name: &str) -> Result<LevelFilter, String> {
    LEVELS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, l)| *l).ok_or_else(|| {
        let names: Vec<&str> = LEVELS.iter().map(|(n, _)| *n).collect();
        format!("{name:?} is not a level ({})", names.join(", "))
    })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    #[test]
    fn a_bare_level_sets_the_default() {
        let f = Filter::parse("warn").unwrap();
        assert!(f.enabled("iot_ws_server::serve", Level::Warn));
        assert!(!f.enabled("iot_ws_server::serve", Level::Info));
        assert_eq!(f.max_level(), LevelFilter::Warn);
        assert_eq!(Filter::parse("").unwrap(), Filter::default());
        assert!(Filter::default().enabled("x", Level::Info) && !Filter::default().enabled("x", Level::Debug));
        assert_eq!(Filter::parse("DEBUG").unwrap().max_level(), LevelFilter::Debug);
    }

    #[test]
    fn a_path_covers_its_modules_and_the_longest_path_wins() {
        let f =
            Filter::parse("error, tokio_postgres=debug ,tokio_postgres::connection=off,iot_ws_server=info").unwrap();
        assert!(f.enabled("tokio_postgres", Level::Debug));
        assert!(f.enabled("tokio_postgres::query", Level::Debug));
        assert!(!f.enabled("tokio_postgres::query", Level::Trace));
        assert!(!f.enabled("tokio_postgres::connection", Level::Error));
        assert!(f.enabled("tokio_postgres::connection_pool", Level::Debug), "a path, not a prefix of text");
        assert!(!f.enabled("tokio_postgresql", Level::Warn), "a path, not a prefix of text");
        assert!(f.enabled("iot_ws_server::db", Level::Info));
        assert!(!f.enabled("tungstenite::protocol", Level::Warn));
        assert!(f.enabled("tungstenite::protocol", Level::Error));
        assert_eq!(f.max_level(), LevelFilter::Debug);
    }

    #[test]
    fn the_last_setting_of_a_path_or_default_counts() {
        let f = Filter::parse("debug,rustls=warn,info,rustls=trace").unwrap();
        assert_eq!(f, Filter::parse("info,rustls=trace").unwrap());
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        let err = Filter::parse("info,tokio_postgres=loud").unwrap_err();
        assert_eq!(err, r#""loud" is not a level (off, error, warn, info, debug, trace)"#);
        assert!(Filter::parse("verbose").unwrap_err().starts_with(r#""verbose" is not a level"#));
        assert!(Filter::parse("=info").unwrap_err().contains("not a module path"));
        assert!(Filter::parse("a b=info").unwrap_err().contains("not a module path"));
        assert!(Filter::parse("a:::b=info").unwrap_err().contains("not a module path"));
    }
}
