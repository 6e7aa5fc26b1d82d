//! Time as the host tells it.

/// Monotonic milliseconds since some origin chosen by the host.
///
/// The core never reads a clock: every call that depends on time takes a `Millis`. This keeps the
/// state machines deterministic under test, fuzzing and WASM, where `Instant` does not exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// This instant plus `ms` milliseconds, saturating rather than wrapping.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}
