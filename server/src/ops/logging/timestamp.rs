//! RFC 3339 timestamps in UTC with milliseconds (`2026-12-02T00:11:23.123Z`), for log lines:
//! the civil date from the days since 1970 (Howard Hinnant's `civil_from_days`), no time zone
//! database and no dependency.

use std::fmt::{self, Display};
use std::time::{SystemTime, UNIX_EPOCH};

/// A moment as RFC 3339 UTC text with milliseconds. A clock set before 1970 shows 1970.
#[derive(Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
        let millis = since.subsec_millis();
        write!(f, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01: (year, month 1-12, day 1-31).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so that the leap day is the last day of a (March-based) year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> String {
        Rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)).to_string()
    }

    #[test]
    fn known_moments() {
        // Checked with `date -u -d @SECS +%FT%T`.
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_868_799, 999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(1_709_251_199, 7), "2024-02-29T23:59:59.007Z");
        assert_eq!(at(1_796_170_283, 40), "2026-12-02T00:11:23.040Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799, 999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn before_1970_shows_the_epoch() {
        assert_eq!(Rfc3339(UNIX_EPOCH - Duration::from_secs(5)).to_string(), "1970-01-01T00:00:00.000Z");
    }

    /// Day after day for 1,000 years, each date is the one after the day before, by the
    /// Gregorian rules written out the plain way.
    #[test]
    fn every_day_follows_the_one_before() {
        let leap = |y: u64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let days_in = |y: u64, m: u64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..365_243 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < days_in(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
