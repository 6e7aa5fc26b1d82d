//! The claims check of a device token, once the host has verified its signature.
//!
//! The platform minted device tokens in two shapes, and both must keep working: a numeric `exp`
//! (seconds since the epoch, as JWT says) and an `exp` that is a serialised JavaScript `Date`
//! such as `"2035-11-24T10:00:00.000Z"`; some tokens have no `exp` at all and never expire. An
//! ISO `exp` in the past is expired exactly like a numeric one.

use alloc::string::String;
use core::fmt;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::message::{CloseCode, DeviceId, Field, Reply};

/// Wall-clock seconds since the Unix epoch, as the host reads them. The core never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixSeconds(pub i64);

/// How far `exp` and `nbf` may be off, for clocks that disagree a little.
pub const LEEWAY_SECS: i64 = 60;

/// Why a device token was refused. All reasons get the same answer on the wire (401 "Invalid
/// device token"); the reason is for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenRejected {
    /// Not a compact JWT, or its header or claims are not JSON of the expected shape.
    Malformed,
    /// The header names an algorithm other than RS256.
    Algorithm,
    /// The signature does not verify with the server's key.
    Signature,
    /// `sub` is missing or is not the device id the device gave.
    Subject,
    /// `exp` has passed.
    Expired,
    /// `nbf` has not come yet.
    NotYetValid,
}

impl TokenRejected {
    /// The wire consequence, whatever the reason: 401 "Invalid device token", then close 1008.
    pub fn reply(&self) -> (Reply, CloseCode) {
        (Reply::InvalidToken, CloseCode::POLICY_VIOLATION)
    }
}

impl fmt::Display for TokenRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRejected::Malformed => "malformed token",
            TokenRejected::Algorithm => "algorithm is not RS256",
            TokenRejected::Signature => "signature does not verify",
            TokenRejected::Subject => "sub is not the device id",
            TokenRejected::Expired => "token expired",
            TokenRejected::NotYetValid => "token not yet valid",
        })
    }
}

#[derive(Deserialize)]
struct Claims<'a> {
    sub: Option<String>,
    #[serde(default, borrow)]
    exp: Field<'a>,
    #[serde(default, borrow)]
    nbf: Field<'a>,
}

/// Decides whether the claims (the token's decoded payload, JSON text) admit `device` at `now`.
///
/// ```
/// use iot_ws_core::{check_claims, DeviceId, TokenRejected, UnixSeconds};
/// let device = DeviceId("dev-1".into());
/// let iso = r#"{"sub":"dev-1","exp":"2035-11-24T10:00:00.000Z"}"#;
/// assert_eq!(check_claims(iso, &device, UnixSeconds(1_800_000_000)), Ok(()));
/// assert_eq!(check_claims(iso, &device, UnixSeconds(2_100_000_000)), Err(TokenRejected::Expired));
/// ```
pub fn check_claims(claims_json: &str, device: &DeviceId, now: UnixSeconds) -> Result<(), TokenRejected> {
    let claims: Claims<'_> = serde_json::from_str(claims_json).map_err(|_| TokenRejected::Malformed)?;
    if claims.sub.as_deref() != Some(device.as_str()) {
        return Err(TokenRejected::Subject);
    }
    if let Some(exp) = claims.exp.0 {
        if now.0 >= time_claim(exp)?.saturating_add(LEEWAY_SECS) {
            return Err(TokenRejected::Expired);
        }
    }
    if let Some(nbf) = claims.nbf.0 {
        if now.0.saturating_add(LEEWAY_SECS) < time_claim(nbf)? {
            return Err(TokenRejected::NotYetValid);
        }
    }
    Ok(())
}

/// A time claim: seconds (integer or not) or an ISO-8601 date-time string.
fn time_claim(raw: &RawValue) -> Result<i64, TokenRejected> {
    if let Ok(seconds) = serde_json::from_str::<f64>(raw.get()) {
        // `as` saturates for huge values and maps NaN to 0; JSON has no NaN.
        return Ok(seconds as i64);
    }
    let text: String = serde_json::from_str(raw.get()).map_err(|_| TokenRejected::Malformed)?;
    parse_iso8601(&text).ok_or(TokenRejected::Malformed)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (and the `±YYYYYY` years JavaScript writes for
/// far dates) into seconds since the epoch. A date-time without a zone is taken as UTC.
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let (year, rest) = match b.first()? {
        b'+' | b'-' => {
            let y = digits(b.get(1..7)?)?;
            (if b[0] == b'-' { -y } else { y }, b.get(7..)?)
        }
        _ => (digits(b.get(0..4)?)?, b.get(4..)?),
    };
    if rest.len() < 15 || rest[0] != b'-' || rest[3] != b'-' || !matches!(rest[6], b'T' | b't' | b' ') {
        return None;
    }
    if rest[9] != b':' || rest[12] != b':' {
        return None;
    }
    let (month, day) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
    let (hour, minute, second) = (digits(&rest[7..9])?, digits(&rest[10..12])?, digits(&rest[13..15])?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut zone = &rest[15..];
    if zone.first() == Some(&b'.') {
        let n = zone[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        zone = &zone[1 + n..];
    }
    let offset = match zone {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            // JavaScript and RFC 3339 alike refuse an offset of a day or more.
            if hours > 23 || minutes > 59 {
                return None;
            }
            let minutes = hours * 60 + minutes;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second - offset)
}

/// A fixed-width field's number (every caller slices a width of one or more digits).
fn digits(b: &[u8]) -> Option<i64> {
    if !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixSeconds = UnixSeconds(1_764_000_000); // 2025-11-24T16:00:00Z

    fn dev() -> DeviceId {
        DeviceId("dev-1".into())
    }

    fn check(claims: &str) -> Result<(), TokenRejected> {
        check_claims(claims, &dev(), NOW)
    }

    #[test]
    fn iso_dates_parse_to_epoch_seconds() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_iso8601("2025-11-24T16:00:00Z"), Some(1_764_000_000));
        assert_eq!(parse_iso8601("2000-02-29T12:00:00.5+02:00"), Some(951_818_400));
        assert_eq!(parse_iso8601("+275760-09-13T00:00:00.000Z"), Some(8_640_000_000_000));
        assert_eq!(parse_iso8601("1969-12-31T23:59:59Z"), Some(-1));
    }

    #[test]
    fn zone_offsets_of_both_signs_move_the_instant_the_right_way() {
        // 10:00 five hours west of Greenwich is 15:00 UTC; five hours east, 05:00 UTC.
        let utc = parse_iso8601("2035-11-24T15:00:00Z").unwrap();
        assert_eq!(parse_iso8601("2035-11-24T10:00:00-05:00"), Some(utc));
        assert_eq!(parse_iso8601("2035-11-24T20:00:00+05:00"), Some(utc));
        assert_eq!(parse_iso8601("2035-11-24T15:00:00+00:30"), Some(utc - 1_800));
        assert_eq!(parse_iso8601("2035-11-24T15:00:00-23:59"), Some(utc + 86_340));
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        for (date, exists) in [
            ("2024-02-29", true),
            ("2000-02-29", true),
            ("1600-02-29", true),
            ("2023-02-29", false),
            ("1900-02-29", false),
            ("2100-02-29", false),
        ] {
            assert_eq!(parse_iso8601(&alloc::format!("{date}T00:00:00Z")).is_some(), exists, "{date}");
        }
        assert_eq!(
            parse_iso8601("2024-03-01T00:00:00Z"),
            Some(parse_iso8601("2024-02-29T00:00:00Z").unwrap() + 86_400)
        );
    }

    #[test]
    fn thirty_day_months_end_on_the_thirtieth() {
        for month in ["04", "06", "09", "11"] {
            assert!(parse_iso8601(&alloc::format!("2025-{month}-30T00:00:00Z")).is_some(), "{month}");
            assert_eq!(parse_iso8601(&alloc::format!("2025-{month}-31T00:00:00Z")), None, "{month}");
        }
        assert!(parse_iso8601("2025-12-31T00:00:00Z").is_some());
    }

    #[test]
    fn a_leap_second_is_the_next_minutes_first() {
        // JavaScript never writes :60; a clock that does means the instant after :59.
        assert_eq!(parse_iso8601("2016-12-31T23:59:60Z"), parse_iso8601("2017-01-01T00:00:00Z"));
        assert_eq!(parse_iso8601("2016-12-31T23:59:61Z"), None);
    }

    #[test]
    fn every_refusal_reason_is_answered_401_then_closed_1008() {
        for reason in [TokenRejected::Malformed, TokenRejected::Expired, TokenRejected::Signature] {
            assert_eq!(reason.reply(), (Reply::InvalidToken, CloseCode(1008)), "{reason}");
        }
    }

    #[test]
    fn every_refusal_reason_reads_differently_in_a_log() {
        let reasons = [
            TokenRejected::Malformed,
            TokenRejected::Algorithm,
            TokenRejected::Signature,
            TokenRejected::Subject,
            TokenRejected::Expired,
            TokenRejected::NotYetValid,
        ];
        let texts: alloc::vec::Vec<String> = reasons.iter().map(alloc::string::ToString::to_string).collect();
        assert_eq!(texts[4], "token expired");
        for (i, text) in texts.iter().enumerate() {
            assert!(!text.is_empty());
            assert!(!texts[..i].contains(text), "{text} twice");
        }
    }

    #[test]
    fn malformed_iso_dates_are_refused() {
        for text in [
            "",
            "2025",
            "2025-13-01T00:00:00Z",
            "2025-02-30T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T00:00:00.Z",
            "2025-01-01T00:00:00+0100",
            "2025-01-01T00:00:00Zjunk",
            // Each separator in its place, and only there.
            "2025/01-01T00:00:00Z",
            "2025-01/01T00:00:00Z",
            "2025-01-01X00:00:00Z",
            "2025-01-01T00.00:00Z",
            "2025-01-01T00:00.00Z",
            "+002025/01-01T00:00:00Z",
            "２０２５-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_iso8601(text), None, "{text}");
        }
    }

    #[test]
    fn token_without_exp_is_valid() {
        assert_eq!(check(r#"{"sub":"dev-1","iat":1}"#), Ok(()));
    }

    #[test]
    fn numeric_and_iso_exp_in_the_future_are_valid() {
        assert_eq!(check(r#"{"sub":"dev-1","exp":2000000000}"#), Ok(()));
        assert_eq!(check(r#"{"sub":"dev-1","exp":2000000000.5}"#), Ok(()));
        assert_eq!(check(r#"{"sub":"dev-1","exp":"2035-11-24T10:00:00.000Z"}"#), Ok(()));
    }

    #[test]
    fn numeric_and_iso_exp_in_the_past_are_expired() {
        assert_eq!(check(r#"{"sub":"dev-1","exp":1700000000}"#), Err(TokenRejected::Expired));
        assert_eq!(check(r#"{"sub":"dev-1","exp":"2020-01-01T00:00:00.000Z"}"#), Err(TokenRejected::Expired));
    }

    #[test]
    fn exp_within_the_leeway_is_still_valid() {
        let just_passed = alloc::format!(r#"{{"sub":"dev-1","exp":{}}}"#, NOW.0 - LEEWAY_SECS + 1);
        assert_eq!(check(&just_passed), Ok(()));
        let passed = alloc::format!(r#"{{"sub":"dev-1","exp":{}}}"#, NOW.0 - LEEWAY_SECS);
        assert_eq!(check(&passed), Err(TokenRejected::Expired));
    }

    #[test]
    fn nbf_in_the_future_is_not_yet_valid() {
        let later = alloc::format!(r#"{{"sub":"dev-1","nbf":{}}}"#, NOW.0 + 3_600);
        assert_eq!(check(&later), Err(TokenRejected::NotYetValid));
        let nearly = alloc::format!(r#"{{"sub":"dev-1","nbf":{}}}"#, NOW.0 + LEEWAY_SECS);
        assert_eq!(check(&nearly), Ok(()));
    }

    #[test]
    fn subject_must_be_the_device_id() {
        assert_eq!(check(r#"{"sub":"dev-2"}"#), Err(TokenRejected::Subject));
        assert_eq!(check(r#"{"exp":2000000000}"#), Err(TokenRejected::Subject));
        assert_eq!(check(r#"{"sub":1}"#), Err(TokenRejected::Malformed));
    }

    #[test]
    fn unreadable_claims_are_malformed() {
        for claims in [
            "",
            "[]",
            r#"{"sub":"dev-1","exp":"soon"}"#,
            r#"{"sub":"dev-1","exp":null}"#,
            r#"{"sub":"dev-1","exp":true}"#,
        ] {
            assert_eq!(check(claims), Err(TokenRejected::Malformed), "{claims}");
        }
    }
}
