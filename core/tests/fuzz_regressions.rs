//! Inputs the fuzz targets once crashed on, or that reach the corners they are for, replayed on
//! stable without libFuzzer: `cargo test -p iot-ws-core --features fuzzing`.
//!
//! To add a crash: `cargo +nightly fuzz run TARGET` leaves `fuzz/artifacts/TARGET/crash-…`;
//! paste its bytes here (`xxd -i`), fix the bug, and keep the case.

use iot_ws_core::fuzzing::{drive_client, drive_session, parse_message};

/// The seed corpus, committed under `fuzz/corpus/`, must pass too.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")))
        .map(|path| (path.display().to_string(), std::fs::read(&path).expect("seed readable")))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// A body number beyond f64 is still JSON, and forwarded: the check, not the core, was wrong.
#[test]
fn parse_message_huge_number_in_body() {
    parse_message(br#"{"type":"actuation","credentials":{"username":"a\u0064min","password":"\ud83d\ude00"},"body":{"content":{"deviceId":"\u00e9"},"n":1e30000000000}}"#);
}

#[test]
fn parse_message_seeds_and_edges() {
    for (_, data) in seeds("parse_message") {
        parse_message(&data);
    }
    for data in
        [&b""[..], b"\xff\xfe", b"{\"type\":\"device\",\"deviceId\":\"\\ud800\",\"deviceToken\":\"\"}", b"-000000"]
    {
        parse_message(data);
    }
}

#[test]
fn session_seeds_and_edges() {
    for (_, data) in seeds("session") {
        drive_session(&data);
    }
    // Every step kind once (the timer firing early last), then huge clock jumps.
    let every_kind: Vec<u8> = (0..12).flat_map(|op| [op, 0, 0, 0]).chain([11, 255, 255, 11, 255, 255]).collect();
    drive_session(&every_kind);
    drive_session(&[0xff; 600]);
}

/// The clock saturated at u64::MAX: the next ping cannot be later than now. Not a core bug.
#[test]
fn client_clock_at_the_end_of_time() {
    drive_client(&[
        0xff, 0xff, 0xff, 0xff, 0xff, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xfe,
        0xff, 0x63, 0xff, 0x04, 0xc8, 0x01, 0x00, 0xa7,
    ]);
}

#[test]
fn client_seeds_and_edges() {
    for (_, data) in seeds("client") {
        drive_client(&data);
    }
    drive_client(&[0xff; 600]);
    drive_client(&[0x00; 600]);
}

#[test]
fn http_head_seeds_and_edges() {
    use iot_ws_core::fuzzing::http_head;
    for (_, data) in seeds("http_head") {
        http_head(&data);
    }
    for data in
        [&b""[..], b"\r\n\r\n", b"\r\n\r\n\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n\xff", b"GET \xff HTTP/1.1\r\n\r\n"]
    {
        http_head(data);
    }
    // A head that ends just inside, then just past, the limit; and no head at all.
    let limit = iot_ws_core::http_head::MAX_HEAD_BYTES;
    for len in [limit, limit + 1] {
        let mut data = b"GET /health HTTP/1.1\r\nX-Pad: ".to_vec();
        data.resize(len - 4, b'a');
        data.extend_from_slice(b"\r\n\r\n");
        http_head(&data);
    }
    http_head(&[b'a'; 20_000]);
}
