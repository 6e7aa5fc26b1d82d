//! WebSocket-level liveness: a ping frame every 20 s, and a peer silent for 10 s after a ping
//! is gone. Any frame from the peer counts as a sign of life, not only the pong.
//!
//! Kept in the clock's milliseconds, in 16 bytes: every idle connection has one.

use iot_ws_core::Millis;

pub const PING_EVERY_MS: u64 = 20_000;
pub const SILENCE_LIMIT_MS: u64 = 10_000;
// The ping unanswered is the last one sent (its time is `next_ping - PING_EVERY_MS`) only if
// the peer is declared dead before the next one is due.
const _: () = assert!(SILENCE_LIMIT_MS < PING_EVERY_MS);

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Ping,
    Dead,
}

pub struct KeepAlive {
    next_ping: Millis,
    /// A ping went out and nothing was heard since.
    unanswered: bool,
}

impl KeepAlive {
    pub fn new(now: Millis) -> Self {
        KeepAlive { next_ping: now.plus(PING_EVERY_MS), unanswered: false }
    }

    /// The peer sent something.
    pub fn heard(&mut self) {
        self.unanswered = false;
    }

    /// When [`on_tick`](KeepAlive::on_tick) has something to do.
    pub fn deadline(&self) -> Millis {
        if self.unanswered {
            self.silence_limit()
        } else {
            self.next_ping
        }
    }

    /// When the peer is gone if it stays silent since the last ping.
    fn silence_limit(&self) -> Millis {
        Millis(self.next_ping.0 - PING_EVERY_MS).plus(SILENCE_LIMIT_MS)
    }

    pub fn on_tick(&mut self, now: Millis) -> Action {
        if self.unanswered && now >= self.silence_limit() {
            return Action::Dead;
        }
        if now >= self.next_ping {
            self.next_ping = now.plus(PING_EVERY_MS);
            self.unanswered = true;
            return Action::Ping;
        }
        Action::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = Millis(1_234);

    fn at(ms: u64) -> Millis {
        T0.plus(ms)
    }

    #[test]
    fn pings_every_20_seconds_while_the_peer_answers() {
        let mut k = KeepAlive::new(T0);
        assert_eq!(k.deadline(), at(PING_EVERY_MS));
        assert_eq!(k.on_tick(at(PING_EVERY_MS - 1)), Action::Nothing);
        assert_eq!(k.on_tick(at(PING_EVERY_MS)), Action::Ping);
        k.heard();
        assert_eq!(k.deadline(), at(PING_EVERY_MS * 2));
        assert_eq!(k.on_tick(at(PING_EVERY_MS * 2 - 1)), Action::Nothing);
        assert_eq!(k.on_tick(at(PING_EVERY_MS * 2)), Action::Ping);
    }

    #[test]
    fn peer_silent_10_seconds_after_a_ping_is_dead() {
        let mut k = KeepAlive::new(T0);
        assert_eq!(k.on_tick(at(PING_EVERY_MS)), Action::Ping);
        assert_eq!(k.deadline(), at(PING_EVERY_MS + SILENCE_LIMIT_MS));
        assert_eq!(k.on_tick(at(PING_EVERY_MS + SILENCE_LIMIT_MS - 1)), Action::Nothing);
        assert_eq!(k.on_tick(at(PING_EVERY_MS + SILENCE_LIMIT_MS)), Action::Dead);
    }

    #[test]
    fn a_late_tick_pings_and_counts_the_silence_from_that_ping() {
        let mut k = KeepAlive::new(T0);
        let late = at(PING_EVERY_MS + 5_000);
        assert_eq!(k.on_tick(late), Action::Ping);
        assert_eq!(k.deadline(), late.plus(SILENCE_LIMIT_MS));
        assert_eq!(k.on_tick(late.plus(SILENCE_LIMIT_MS - 1)), Action::Nothing);
        k.heard();
        assert_eq!(k.deadline(), late.plus(PING_EVERY_MS));
    }
}
