//! WebSocket-level liveness: a ping frame every 20 s, and a peer silent for 10 s after a ping
//! is gone. Any frame from the peer counts as a sign of life, not only the pong.

use std::time::{Duration, Instant};

pub const PING_EVERY: Duration = Duration::from_secs(20);
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Ping,
    Dead,
}

pub struct KeepAlive {
    next_ping: Instant,
    unanswered_since: Option<Instant>,
}

impl KeepAlive {
    pub fn new(now: Instant) -> Self {
        KeepAlive { next_ping: now + PING_EVERY, unanswered_since: None }
    }

    /// The peer sent something.
    pub fn heard(&mut self) {
        self.unanswered_since = None;
    }

    /// When [`on_tick`](KeepAlive::on_tick) has something to do.
    pub fn deadline(&self) -> Instant {
        match self.unanswered_since {
            Some(sent) => (sent + SILENCE_LIMIT).min(self.next_ping),
            None => self.next_ping,
        }
    }

    pub fn on_tick(&mut self) -> Action {
        self.on_tick_at(Instant::now())
    }

    fn on_tick_at(&mut self, now: Instant) -> Action {
        if self.unanswered_since.is_some_and(|sent| now >= sent + SILENCE_LIMIT) {
            return Action::Dead;
        }
        if now >= self.next_ping {
            self.next_ping = now + PING_EVERY;
            self.unanswered_since.get_or_insert(now);
            return Action::Ping;
        }
        Action::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_every_20_seconds_while_the_peer_answers() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0);
        assert_eq!(k.on_tick_at(t0 + Duration::from_secs(19)), Action::Nothing);
        assert_eq!(k.on_tick_at(t0 + PING_EVERY), Action::Ping);
        k.heard();
        assert_eq!(k.deadline(), t0 + PING_EVERY * 2);
        assert_eq!(k.on_tick_at(t0 + PING_EVERY * 2), Action::Ping);
    }

    #[test]
    fn peer_silent_10_seconds_after_a_ping_is_dead() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0);
        assert_eq!(k.on_tick_at(t0 + PING_EVERY), Action::Ping);
        assert_eq!(k.deadline(), t0 + PING_EVERY + SILENCE_LIMIT);
        assert_eq!(k.on_tick_at(t0 + PING_EVERY + SILENCE_LIMIT), Action::Dead);
    }
}
