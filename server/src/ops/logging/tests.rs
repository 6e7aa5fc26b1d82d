use super::format::{render, Record};
use super::text::MESSAGE_MAX;
use super::writer::{Limits, Logger, Span, QUEUE_BYTES};
use super::*;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, UNIX_EPOCH};

const BOUND: Duration = Duration::from_secs(10);
const OWN: &str = "iot_ws_server::serve";

/// Output a test reads, behind a gate that holds every write until opened (at most
/// [`BOUND`], so no test thread waits forever).
#[derive(Clone, Default)]
struct Sink {
    out: Arc<Mutex<Vec<u8>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Sink {
    fn open() -> Sink {
        let sink = Sink::default();
        sink.release();
        sink
    }

    fn release(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }

    fn text(&self) -> String {
        String::from_utf8(self.out.lock().unwrap().clone()).unwrap()
    }

    /// The lines' messages: each line without its time and level.
    fn messages(&self) -> Vec<String> {
        self.text().lines().map(|l| message(l).to_string()).collect()
    }

    /// Waits (bounded) until the output has a message starting with `prefix`.
    fn wait_for(&self, prefix: &str) -> bool {
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            if self.messages().iter().any(|l| l.starts_with(prefix)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (open, cv) = &*self.gate;
        let _ = cv.wait_timeout_while(open.lock().unwrap(), BOUND, |open| !*open).unwrap();
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A text line's message: after the time and the padded level.
fn message(line: &str) -> &str {
    let (_time, rest) = line.split_once(' ').expect("a time");
    let (_level, rest) = rest.split_once(' ').expect("a level");
    rest.trim_start()
}

fn logger(out: &Sink, err: &Sink, queue_bytes: usize, per_window: u64, window: Duration) -> Logger {
    let outputs: writer::Outputs = [Box::new(out.clone()), Box::new(err.clone())];
    Logger::spawn(outputs, Limits { queue_bytes, per_window, window }, Format::Text).unwrap()
}

fn line(format: Format, level: Level, target: &str, message: &dyn Display) -> String {
    let mut buf = String::new();
    let time = UNIX_EPOCH + Duration::from_millis(1_796_170_283_040);
    render(&mut buf, format, &Record { time, level, target, message });
    buf
}

#[test]
fn client_text_escapes_what_could_forge_or_hide_a_line_and_keeps_the_rest_readable() {
    let cases = [
        ("a\nb", r#""a\nb""#),
        ("a\rb", r#""a\rb""#),
        ("\t", r#""\t""#),
        ("\u{1b}[2J", r#""\u{1b}[2J""#),
        ("nul\0", r#""nul\0""#),
        ("del\u{7f}", r#""del\u{7f}""#),
        ("c1\u{85}", r#""c1\u{85}""#),
        ("bidi\u{202e}", r#""bidi\u{202e}""#),
        ("back\\slash", r#""back\\slash""#),
        ("say \"hi\"", r#""say \"hi\"""#),
        ("it's", r#""it's""#),
        ("Zürich 日本 😀", "\"Zürich 日本 😀\""),
        ("", r#""""#),
    ];
    for (input, shown) in cases {
        assert_eq!(client_text(input).to_string(), shown, "{input:?}");
        assert_eq!(client_text(input).to_string(), format!("{input:?}"), "same as Debug");
    }
}

#[test]
fn long_client_text_is_cut_to_128_characters_ending_in_the_marker() {
    let input = "x".repeat(65 * 1024);
    let shown = client_text(&input).to_string();
    assert_eq!(shown.chars().count(), 128);
    assert_eq!(shown, format!("\"{}…\"", "x".repeat(125)));
    // 126 characters fit between the quotes; one more and the marker takes the last place.
    assert_eq!(client_text(&"y".repeat(126)).to_string(), format!("\"{}\"", "y".repeat(126)));
    assert_eq!(client_text(&"y".repeat(127)).to_string(), format!("\"{}…\"", "y".repeat(125)));
    assert_eq!(client_text(&"日".repeat(300)).to_string().chars().count(), 128);
}

#[test]
fn a_cut_never_falls_inside_an_escape() {
    for lead in 0..8 {
        let input = format!("{}{}", "a".repeat(lead), "\u{1b}\n".repeat(100));
        let shown = client_text(&input).to_string();
        assert!(shown.chars().count() <= 128, "{shown}");
        let inner = shown.strip_prefix('"').and_then(|s| s.strip_suffix("…\"")).expect("cut and quoted");
        // The inner text is the escape of a whole prefix of the input.
        let mut prefix = String::new();
        let whole = input.chars().any(|c| {
            prefix.push_str(&c.escape_debug().to_string());
            prefix == inner
        });
        assert!(whole, "{lead}: {inner}");
        assert!(inner.len() > 110, "cut no earlier than needed: {inner}");
    }
}

#[test]
fn a_text_line_has_the_time_the_level_and_one_line_of_message_at_most_1_kib() {
    let text = line(Format::Text, Level::Warn, OWN, &format_args!("peer 10.0.0.1:80: error: {}", "two\nlines\u{1b}"));
    assert_eq!(text, "2026-12-02T00:11:23.040Z WARN  peer 10.0.0.1:80: error: two\\nlines\\u{1b}\n");
    // Only control characters are escaped in text: quotes and backslashes are read as they are.
    let plain = line(Format::Text, Level::Info, OWN, &r#"it's "quoted" \ here"#);
    assert_eq!(plain, "2026-12-02T00:11:23.040Z INFO  it's \"quoted\" \\ here\n");
    let long = line(Format::Text, Level::Info, OWN, &"é".repeat(5000));
    let msg = message(long.trim_end());
    assert!(msg.len() <= MESSAGE_MAX && msg.len() > MESSAGE_MAX - 8 && msg.ends_with('…'), "{}", msg.len());
    assert_eq!(long.lines().count(), 1);
    for lead in 0..2 {
        let text = line(Format::Text, Level::Error, OWN, &format!("{}{}", "a".repeat(lead), "\n".repeat(5000)));
        let msg = message(text.trim_end());
        assert!(msg.len() <= MESSAGE_MAX && msg.ends_with("\\n…"), "{lead}: {text}");
        assert_eq!(text.lines().count(), 1);
    }
}

#[test]
fn a_library_line_names_its_module_and_this_crate_does_not() {
    let lib = line(Format::Text, Level::Debug, "tokio_postgres::connection", &"NOTICE: x");
    assert_eq!(lib, "2026-12-02T00:11:23.040Z DEBUG tokio_postgres::connection: NOTICE: x\n");
    assert_eq!(line(Format::Text, Level::Info, "iot_ws_server", &"up"), "2026-12-02T00:11:23.040Z INFO  up\n");
    let lookalike = line(Format::Text, Level::Info, "iot_ws_server_x", &"m");
    assert!(lookalike.contains(" iot_ws_server_x: m"), "{lookalike}");
    let forged = line(Format::Text, Level::Info, "evil\ntarget", &"m");
    assert_eq!(forged.lines().count(), 1, "{forged}");
    // A target is cut at 128 bytes, between whole characters: `a` and 63 of the 100 `é`.
    let long = format!("a{}", "é".repeat(100));
    let json: serde_json::Value = serde_json::from_str(&line(Format::Json, Level::Info, &long, &"m")).unwrap();
    assert_eq!(json["target"], format!("a{}", "é".repeat(63)));
}

#[test]
fn a_json_line_is_one_object_whatever_the_message_holds() {
    let nasty = format!("say \"hi\" \\ {} \n\r\t\u{1b}\u{85} 日本 {}", client_text("a\"b\nc"), "x".repeat(3000));
    let text = line(Format::Json, Level::Error, "tokio_postgres::x", &nasty);
    assert_eq!(text.matches('\n').count(), 1);
    assert!(text.ends_with("}\n"));
    let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(v["time"], "2026-12-02T00:11:23.040Z");
    assert_eq!(v["level"], "error");
    assert_eq!(v["target"], "tokio_postgres::x");
    let msg = v["message"].as_str().unwrap();
    let expected_start = "say \"hi\" \\ \"a\\\"b\\nc\" \n\r\t\u{1b}\u{85} 日本 xxx";
    assert!(msg.starts_with(expected_start), "{msg:?}");
    assert!(msg.ends_with('…') && msg.len() < MESSAGE_MAX, "{}", msg.len());
    assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
    for (level, name) in
        [(Level::Warn, "warn"), (Level::Info, "info"), (Level::Debug, "debug"), (Level::Trace, "trace")]
    {
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, level, OWN, &"m")).unwrap();
        assert_eq!(v["level"], name);
        assert_eq!(v["target"], OWN);
    }
}

#[test]
fn formats_by_name() {
    assert_eq!(Format::parse("json"), Ok(Format::Json));
    assert_eq!(Format::parse("TEXT"), Ok(Format::Text));
    assert_eq!(Format::parse("xml"), Err(r#""xml" is not a log format (text, json)"#.to_string()));
}

#[test]
fn peer_shows_the_address() {
    let v4: SocketAddr = "127.0.0.1:4242".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
    assert_eq!(format!("{}: device {}", Peer(v4), client_text("d1")), r#"peer 127.0.0.1:4242: device "d1""#);
    assert_eq!(Peer(v6).to_string(), "peer [2001:db8::7]:443");
}

#[test]
fn warnings_and_errors_go_to_stderr_the_rest_to_stdout() {
    let (out, err) = (Sink::open(), Sink::open());
    let log = logger(&out, &err, QUEUE_BYTES, 10, BOUND);
    for level in [Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace] {
        log.record(level, OWN, &level);
    }
    assert!(log.flush(BOUND));
    assert_eq!(err.messages(), ["ERROR", "WARN"]);
    assert_eq!(out.messages(), ["INFO", "DEBUG", "TRACE"]);
}

#[test]
fn a_blocked_output_makes_lines_drop_and_count_never_wait() {
    let (out, err) = (Sink::default(), Sink::open());
    // "2026-12-02T00:11:23.040Z INFO  line 00\n": 39 bytes; 5 fill 195 exactly.
    let log = logger(&out, &err, 195, 10, BOUND);
    let started = Instant::now();
    for i in 0..50 {
        log.record(Level::Info, OWN, &format_args!("line {i:02}"));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(log.shared.dropped.load(Relaxed), 45);
    assert!(!log.flush(Duration::from_millis(50)), "flush is bounded while blocked");
    // By now the writer holds the five lines, blocked: they still count. Both streams share
    // the bound.
    log.record(Level::Error, OWN, &"no room");
    assert_eq!(log.shared.dropped.load(Relaxed), 46);
    out.release();
    assert!(log.flush(BOUND));
    let expected: Vec<String> = (0..5).map(|i| format!("line {i:02}")).collect();
    assert_eq!(out.messages(), expected);
    // Room again once written.
    log.record(Level::Info, OWN, &"after");
    log.record(Level::Warn, OWN, &"warned");
    assert!(log.flush(BOUND));
    assert_eq!(out.messages().last().unwrap(), "after");
    assert_eq!(err.messages(), ["warned"]);
    assert_eq!(log.shared.dropped.load(Relaxed), 46);
}

#[test]
fn lines_an_output_refuses_count_as_dropped() {
    struct Closed;
    impl io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let open = Sink::open();
    let log = Logger::spawn([Box::new(open.clone()), Box::new(Closed)], Limits::DEFAULT, Format::Text).unwrap();
    for _ in 0..5 {
        log.record(Level::Error, OWN, &"lost");
    }
    log.record(Level::Info, OWN, &"kept");
    assert!(log.flush(BOUND));
    assert_eq!(log.shared.dropped.load(Relaxed), 5);
    assert_eq!(open.messages(), ["kept"]);
}

#[test]
fn limited_shows_n_per_window_and_summarises_the_rest_without_a_further_event() {
    let (sink, err) = (Sink::open(), Sink::open());
    let log = logger(&sink, &err, QUEUE_BYTES, 3, Duration::from_millis(300));
    let formatted = Cell::new(0);
    for i in 0..20 {
        log.limited(Kind::TokenRefused, OWN, || {
            formatted.set(formatted.get() + 1);
            format!("peer 10.0.0.1:1: device \"d{i}\": token refused: expired")
        });
    }
    log.limited(Kind::CredentialsRefused, OWN, || "peer 10.0.0.2:2: actuation: credentials refused");
    assert!(sink.wait_for("token refused: "), "a summary comes by itself: {}", sink.text());
    // Should the events have spread over two windows, the second summary comes now.
    assert!(log.flush(BOUND));
    let messages = sink.messages();
    let shown = messages.iter().filter(|l| l.contains(": token refused: expired")).count();
    // Normally all 20 fall in one window: 3 shown, "17 more". A slow machine may spread them
    // over two windows; then the counts still add up.
    let hidden: u64 = messages
        .iter()
        .filter_map(|l| l.strip_prefix("token refused: "))
        .map(|rest| {
            assert!(rest.ends_with(" not shown"), "{rest}");
            rest.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(shown, formatted.get(), "suppressed lines are not formatted");
    assert_eq!(shown as u64 + hidden, 20, "{messages:?}");
    assert!((3..=6).contains(&shown), "{messages:?}");
    assert_eq!(messages.iter().filter(|l| l.contains("credentials refused")).count(), 1, "{messages:?}");
    assert!(err.text().is_empty(), "info lines: {}", err.text());
    // A new window lets lines through again.
    let before = sink.messages().len();
    log.limited(Kind::TokenRefused, OWN, || "again");
    assert!(log.flush(BOUND));
    assert_eq!(sink.messages()[before..], ["again"]);
}

#[test]
fn flush_writes_the_summary_with_the_exact_count() {
    let (sink, err) = (Sink::open(), Sink::open());
    let log = logger(&sink, &err, QUEUE_BYTES, 2, Duration::from_secs(3600));
    for _ in 0..4713 {
        log.limited(Kind::CredentialsRefused, OWN, || "peer 10.0.0.1:1: actuation: credentials refused");
    }
    assert!(log.flush(BOUND));
    let lines = sink.messages();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], lines[1]);
    assert!(lines[2].starts_with("credentials refused: 4711 more like this in the last "), "{lines:?}");
    assert!(lines[2].ends_with(" not shown"), "{lines:?}");
}

#[test]
fn span_reads_as_seconds_or_milliseconds() {
    assert_eq!(Span(Duration::from_millis(100)).to_string(), "100 ms");
    assert_eq!(Span(Duration::from_millis(10_004)).to_string(), "10 s");
    assert_eq!(Span(Duration::from_millis(59_600)).to_string(), "60 s");
}

#[test]
fn libraries_trace_records_are_never_written() {
    let all = Filter::parse("trace").unwrap();
    assert!(admits(&all, "iot_ws_server::connection", Level::Trace));
    assert!(admits(&all, "iot_ws_server", Level::Trace));
    assert!(!admits(&all, "tungstenite::protocol", Level::Trace));
    assert!(admits(&all, "tungstenite::protocol", Level::Debug));
    let info = Filter::default();
    assert!(!admits(&info, "iot_ws_server::connection", Level::Debug));
    assert!(admits(&info, "tokio_postgres::connection", Level::Info));
}
