//! The one conversion between the host's `Instant`s and the core's `Millis`: milliseconds since
//! the server started. Connections and the hub share it, so their deadlines agree.

use std::time::{Duration, Instant};

use iot_ws_core::Millis;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock whose time 0 is now.
    pub fn start() -> Self {
        Clock { start: Instant::now() }
    }

    /// Now, as the core's time.
    pub fn now(&self) -> Millis {
        self.millis(Instant::now())
    }

    /// `at` as the core's time (time 0 for anything before the start).
    pub fn millis(&self, at: Instant) -> Millis {
        Millis(at.saturating_duration_since(self.start).as_millis() as u64)
    }

    /// The core's time `at` as an `Instant`, for a timer.
    pub fn instant(&self, at: Millis) -> Instant {
        self.start + Duration::from_millis(at.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_from_its_start() {
        let clock = Clock::start();
        let later = clock.instant(Millis(1_500));
        assert_eq!(later.duration_since(clock.start), Duration::from_millis(1_500));
        assert_eq!(clock.millis(later), Millis(1_500));
        assert_eq!(clock.millis(clock.start - Duration::from_secs(1)), Millis(0), "before the start is 0");
    }

    #[test]
    fn now_is_the_time_since_its_start() {
        let clock = Clock::start();
        std::thread::sleep(Duration::from_millis(5));
        let now = clock.now();
        assert!(now >= Millis(5) && now < Millis(60_000), "{now:?}");
    }
}
