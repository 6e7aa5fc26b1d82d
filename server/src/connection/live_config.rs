//! The session settings every connection shares, replaced whole when SIGHUP re-reads the
//! actuator's credentials, and the check that brings an open connection's session up to date.
//!
//! Cheap on the hot path: a connection compares its session's settings with the current ones by
//! address, one atomic load per message, and takes the lock only once after each replacement.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use iot_ws_core::{Session, SessionConfig};

/// The current [`SessionConfig`]; sessions hold an `Arc` of it, not a copy.
pub struct LiveSessionConfig {
    current: Mutex<Arc<SessionConfig>>,
    /// Where `current` points, for the lock-free check. Two live `Arc`s never share an address,
    /// and a session keeps its settings alive while it compares them: the same address means the
    /// same settings, never a new set that reused a freed one's memory.
    address: AtomicPtr<SessionConfig>,
}

impl LiveSessionConfig {
    pub fn new(config: SessionConfig) -> Self {
        let config = Arc::new(config);
        let address = AtomicPtr::new(Arc::as_ptr(&config).cast_mut());
        LiveSessionConfig { current: Mutex::new(config), address }
    }

    /// The settings a new session starts with.
    pub fn current(&self) -> Arc<SessionConfig> {
        self.lock().clone()
    }

    /// From now on, every session's next message is checked against `config`.
    pub fn replace(&self, config: SessionConfig) {
        let config = Arc::new(config);
        let mut current = self.lock();
        self.address.store(Arc::as_ptr(&config).cast_mut(), Ordering::Release);
        *current = config;
    }

    /// Gives `session` the current settings if it has older ones; call it before feeding a
    /// message that may carry an actuation.
    pub fn refresh(&self, session: &mut Session) {
        if std::ptr::eq(self.address.load(Ordering::Acquire), Arc::as_ptr(session.config())) {
            return;
        }
        session.set_config(self.current());
    }

    /// Nothing panics while holding the lock, but a poisoned one still holds whole settings.
    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<SessionConfig>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iot_ws_core::{Credentials, Millis};

    fn config(password: &str) -> SessionConfig {
        let actuator = Credentials { username: "dash".into(), password: password.into() };
        SessionConfig { actuator: Some(actuator), register_timeout_ms: 10_000 }
    }

    fn password(session: &Session) -> &str {
        &session.config().actuator.as_ref().unwrap().password
    }

    #[test]
    fn sessions_share_the_current_settings() {
        let live = LiveSessionConfig::new(config("a"));
        let (one, two) = (Session::new(Millis(0), live.current()), Session::new(Millis(0), live.current()));
        assert!(Arc::ptr_eq(one.config(), two.config()));
    }

    #[test]
    fn a_replacement_reaches_a_session_made_before_it_at_its_refresh() {
        let live = LiveSessionConfig::new(config("a"));
        let mut session = Session::new(Millis(0), live.current());
        live.replace(config("b"));
        assert_eq!(password(&session), "a", "not before its refresh");
        live.refresh(&mut session);
        assert_eq!(password(&session), "b");
        assert!(Arc::ptr_eq(session.config(), &live.current()));
        assert_eq!(password(&Session::new(Millis(0), live.current())), "b");
    }

    #[test]
    fn an_up_to_date_session_refreshes_without_taking_the_lock() {
        let live = LiveSessionConfig::new(config("a"));
        let mut session = Session::new(Millis(0), live.current());
        let _held = live.lock();
        // Taking the lock here would deadlock (or panic): the hot path must not.
        live.refresh(&mut session);
    }

    #[test]
    fn a_refresh_without_a_replacement_keeps_the_settings_it_has() {
        let live = LiveSessionConfig::new(config("a"));
        let mut session = Session::new(Millis(0), live.current());
        let before = session.config().clone();
        live.refresh(&mut session);
        assert!(Arc::ptr_eq(session.config(), &before));
        // A session given other settings of its own (a test, say) is brought back to the current.
        session.set_config(Arc::new(config("x")));
        live.refresh(&mut session);
        assert!(Arc::ptr_eq(session.config(), &before));
    }
}
