//! `parse_iso8601` checked against an independent implementation (chrono) over random
//! date-times: every field in and just out of its range, leap years, fractions, both zone
//! signs, four-digit and expanded (`±YYYYYY`) years.
//!
//! The platform minted these strings with JavaScript's `Date.prototype.toISOString`, so a
//! mistake here moves a device token's expiry by hours or refuses valid tokens outright; the
//! unit tests in `claims.rs` pin the examples, this pins the arithmetic.
#![cfg(not(target_arch = "wasm32"))]

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};
use iot_ws_core::claims::parse_iso8601;
use proptest::prelude::*;

/// The parts of a date-time, each allowed one step past its valid range.
#[derive(Clone, Debug)]
struct Parts {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    fraction: Option<String>,
    separator: char,
    zone: Zone,
}

#[derive(Clone, Debug)]
enum Zone {
    /// No zone at all: taken as UTC.
    Absent,
    Utc(char),
    Offset {
        east: bool,
        hours: u32,
        minutes: u32,
    },
}

impl Parts {
    fn text(&self) -> String {
        let year = if (0..=9999).contains(&self.year) {
            format!("{:04}", self.year)
        } else {
            format!("{}{:06}", if self.year < 0 { '-' } else { '+' }, self.year.unsigned_abs())
        };
        let fraction = self.fraction.as_ref().map(|f| format!(".{f}")).unwrap_or_default();
        let zone = match self.zone {
            Zone::Absent => String::new(),
            Zone::Utc(z) => z.to_string(),
            Zone::Offset { east, hours, minutes } => {
                format!("{}{hours:02}:{minutes:02}", if east { '+' } else { '-' })
            }
        };
        format!(
            "{year}-{:02}-{:02}{}{:02}:{:02}:{:02}{fraction}{zone}",
            self.month, self.day, self.separator, self.hour, self.minute, self.second
        )
    }

    /// What chrono makes of the same parts: seconds since the epoch (fractions dropped), or
    /// `None` where the date, the time or the offset does not exist.
    fn reference(&self) -> Option<i64> {
        let date = NaiveDate::from_ymd_opt(self.year, self.month, self.day)?;
        let time = NaiveTime::from_hms_opt(self.hour, self.minute, self.second)?;
        let offset = match self.zone {
            Zone::Absent | Zone::Utc(_) => FixedOffset::east_opt(0)?,
            Zone::Offset { east, hours, minutes } => {
                if minutes > 59 {
                    return None;
                }
                let secs = i32::try_from(hours * 3_600 + minutes * 60).ok()?;
                if east {
                    FixedOffset::east_opt(secs)?
                } else {
                    FixedOffset::west_opt(secs)?
                }
            }
        };
        Some(date.and_time(time).and_local_timezone(offset).single()?.timestamp())
    }
}

/// A zone, or none when `absent` allows it; offsets one step past their range too.
fn zones(absent: bool) -> impl Strategy<Value = Zone> {
    let present = prop_oneof![
        prop::sample::select(vec!['Z', 'z']).prop_map(Zone::Utc),
        (any::<bool>(), 0u32..=24, 0u32..=60).prop_map(|(east, hours, minutes)| Zone::Offset { east, hours, minutes }),
    ];
    if absent {
        prop_oneof![1 => Just(Zone::Absent), 3 => present].boxed()
    } else {
        present.boxed()
    }
}

fn parts(years: impl Strategy<Value = i32>, zone: impl Strategy<Value = Zone>) -> impl Strategy<Value = Parts> {
    (
        (years, 0u32..=13, 0u32..=32),
        // 60 is a leap second, which chrono and JavaScript read differently: pinned by a unit test.
        (0u32..=24, 0u32..=60, 0u32..=59),
        (prop::option::of("[0-9]{1,9}"), prop::sample::select(vec!['T', 't', ' ']), zone),
    )
        .prop_map(|((year, month, day), (hour, minute, second), (fraction, separator, zone))| Parts {
            year,
            month,
            day,
            hour,
            minute,
            second,
            fraction,
            separator,
            zone,
        })
}

/// Years that stress the calendar: the four-digit range, the century leap-year rule around
/// 1900, 2000 and 2100, and expanded years either side of zero (chrono's range is ±262,143).
fn years() -> impl Strategy<Value = i32> {
    prop_oneof![
        0..=9999i32,
        prop::sample::select(vec![1600, 1700, 1900, 2000, 2024, 2100, 2400]),
        -262_000..=262_000i32,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn parses_as_chrono_computes(p in parts(years(), zones(true))) {
        prop_assert_eq!(parse_iso8601(&p.text()), p.reference(), "{}", p.text());
    }

    /// Where chrono can read the string itself (RFC 3339: four-digit year, a zone), the two
    /// parsers agree on the string, not only on the parts.
    #[test]
    fn agrees_with_chrono_reading_rfc3339(p in parts(0..=9999i32, zones(false))) {
        let text = p.text();
        let chrono = DateTime::parse_from_rfc3339(&text).ok().map(|t| t.timestamp());
        prop_assert_eq!(parse_iso8601(&text), chrono, "{}", text);
    }
}
