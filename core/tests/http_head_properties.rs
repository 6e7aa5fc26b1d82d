//! Properties of the request head classification over random bytes and random valid upgrades.
//!
//! The head comes from anyone who can reach the port: any bytes get an answer and no panic; a
//! head cut short is never taken for a request, and an upgrade hands every byte after its head
//! to the WebSocket, whatever those bytes are.
#![cfg(not(target_arch = "wasm32"))]

use iot_ws_core::http_head::{classify, head_complete, Answer, Request, MAX_HEAD_BYTES};
use proptest::prelude::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A header name in a random mix of upper and lower case: names match case-insensitively.
fn any_case(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars().zip(upper).map(|(c, up)| if up { c.to_ascii_uppercase() } else { c }).collect()
    })
}

/// A valid upgrade offering `echo-protocol`: its headers in any order and case, with up to
/// eight unrelated ones mixed in.
fn valid_upgrade() -> impl Strategy<Value = Vec<u8>> {
    let needed = (
        any_case("upgrade"),
        any_case("connection"),
        any_case("sec-websocket-version"),
        any_case("sec-websocket-key"),
        any_case("sec-websocket-protocol"),
    )
        .prop_map(|(upgrade, connection, version, key, protocol)| {
            vec![
                format!("{upgrade}: websocket"),
                format!("{connection}: keep-alive, Upgrade"),
                format!("{version}: 13"),
                format!("{key}: {KEY}"),
                format!("{protocol}: chat, echo-protocol"),
            ]
        });
    let others = prop::collection::vec("X-[A-Za-z]{1,8}: [ -~]{0,40}", 0..8);
    (needed, others, "/[a-z?=]{0,20}")
        .prop_flat_map(|(needed, others, path)| {
            let lines: Vec<String> = needed.into_iter().chain(others).collect();
            (Just(lines).prop_shuffle(), Just(path))
        })
        .prop_map(|(lines, path)| {
            let headers: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
            format!("GET {path} HTTP/1.1\r\n{headers}\r\n").into_bytes()
        })
}

fn accepted(leftover: &[u8]) -> Request {
    Request::Upgrade { key: KEY.into(), leftover: leftover.to_vec() }
}

proptest! {
    #[test]
    fn any_bytes_get_an_answer_and_the_same_one_twice(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
        let request = classify(&buf);
        prop_assert_eq!(classify(&buf), request);
    }

    /// Random bytes around a blank line, so that httparse sees more than the first few bytes.
    #[test]
    fn any_head_shaped_bytes_get_an_answer(
        line in prop::collection::vec(any::<u8>(), 0..64),
        headers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..40),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = line;
        for header in headers {
            buf.extend_from_slice(b"\r\n");
            buf.extend_from_slice(&header);
        }
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(&after);
        if let Request::Upgrade { key, leftover } = classify(&buf) {
            let end = head_complete(&buf).expect("an upgrade has a complete head");
            prop_assert!(!key.is_empty());
            prop_assert_eq!(&leftover[..], &buf[end..]);
        }
    }

    #[test]
    fn a_valid_upgrade_is_accepted(head in valid_upgrade()) {
        prop_assert_eq!(classify(&head), accepted(&[]));
    }

    #[test]
    fn a_head_cut_short_is_a_bad_request(head in valid_upgrade(), cut in any::<prop::sample::Index>()) {
        let prefix = &head[..cut.index(head.len())];
        prop_assert_eq!(head_complete(prefix), None);
        prop_assert_eq!(classify(prefix), Request::Plain(Answer::BadRequest));
    }

    #[test]
    fn every_byte_after_the_head_is_the_leftover(
        head in valid_upgrade(),
        leftover in prop::collection::vec(any::<u8>(), 0..(2 * MAX_HEAD_BYTES)),
    ) {
        let mut buf = head;
        buf.extend_from_slice(&leftover);
        prop_assert_eq!(classify(&buf), accepted(&leftover));
    }

    #[test]
    fn a_head_ending_past_the_limit_is_a_bad_request(head in valid_upgrade(), over in 1..MAX_HEAD_BYTES) {
        // A padding header after the request line pushes the head's end `over` bytes too far.
        let line_end = head.windows(2).position(|w| w == b"\r\n").expect("a request line") + 2;
        let pad = (MAX_HEAD_BYTES + over).saturating_sub(head.len() + "X-Pad: \r\n".len());
        let mut buf = head[..line_end].to_vec();
        buf.extend_from_slice(b"X-Pad: ");
        buf.extend(std::iter::repeat_n(b'a', pad));
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(&head[line_end..]);
        prop_assert_eq!(head_complete(&buf), Some(MAX_HEAD_BYTES + over));
        prop_assert_eq!(classify(&buf), Request::Plain(Answer::BadRequest));
    }
}
