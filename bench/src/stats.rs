//! Percentiles and medians of latency samples.

use serde_json::{json, Value};

/// Latency samples in microseconds.
#[derive(Default, Clone)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    pub fn push(&mut self, micros: u64) {
        self.0.push(micros);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The q-quantile (0..=1) in microseconds, nearest rank; 0 without samples.
    pub fn quantile(&mut self, q: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.sort_unstable();
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }

    /// `{"p50_us":..,"p99_us":..,"max_us":..,"n":..}`.
    pub fn summary(&mut self) -> Value {
        json!({
            "p50_us": self.quantile(0.5),
            "p99_us": self.quantile(0.99),
            "max_us": self.quantile(1.0),
            "n": self.0.len(),
        })
    }

    /// "p50 0.12 ms, p99 0.80 ms" for the human text.
    pub fn describe(&mut self) -> String {
        format!("p50 {} / p99 {}", ms(self.quantile(0.5)), ms(self.quantile(0.99)))
    }
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut s = Samples((1..=100).rev().collect());
        assert_eq!(s.quantile(0.5), 50);
        assert_eq!(s.quantile(0.99), 99);
        assert_eq!(s.quantile(1.0), 100);
        assert_eq!(Samples::default().quantile(0.5), 0);
    }
}
