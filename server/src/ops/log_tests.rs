use super::*;
use std::cell::Cell;

const BOUND: Duration = Duration::from_secs(10);

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

    /// Waits (bounded) until the output has a line starting with `prefix`.
    fn wait_for(&self, prefix: &str) -> bool {
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            if self.text().lines().any(|l| l.starts_with(prefix)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Write for Sink {
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

fn logger(sink: &Sink, queue_bytes: usize, per_window: u64, window: Duration) -> Logger {
    Logger::spawn(Box::new(sink.clone()), Limits { queue_bytes, per_window, window }).unwrap()
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
fn a_line_is_one_line_at_most_1_kib() {
    let mut buf = String::new();
    render(&mut buf, &format_args!("peer 10.0.0.1:80: error: {}", "two\nlines\u{1b}"));
    assert_eq!(buf, "peer 10.0.0.1:80: error: two\\nlines\\u{1b}\n");
    render(&mut buf, &"é".repeat(5000));
    assert!(buf.len() <= LINE_MAX + 1 && buf.ends_with("…\n"), "{}", buf.len());
    assert_eq!(buf.lines().count(), 1);
    for lead in 0..2 {
        render(&mut buf, &format!("{}{}", "a".repeat(lead), "\n".repeat(5000)));
        assert!(buf.len() <= LINE_MAX + 1 && buf.ends_with("\\n…\n"), "{lead}: {buf}");
    }
}

#[test]
fn peer_shows_the_address() {
    let v4: SocketAddr = "127.0.0.1:4242".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
    assert_eq!(format!("{}: device {}", Peer(v4), client_text("d1")), r#"peer 127.0.0.1:4242: device "d1""#);
    assert_eq!(Peer(v6).to_string(), "peer [2001:db8::7]:443");
}

#[test]
fn a_blocked_output_makes_lines_drop_and_count_never_wait() {
    let sink = Sink::default();
    let log = logger(&sink, 100, 10, BOUND);
    let started = Instant::now();
    for i in 0..50 {
        log.line(&format_args!("line {i:02}")); // 8 bytes with the newline: 12 fit in 100
    }
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(log.shared.dropped.load(Relaxed), 38);
    assert!(!log.flush(Duration::from_millis(50)), "flush is bounded while blocked");
    sink.release();
    assert!(log.flush(BOUND));
    let expected: String = (0..12).map(|i| format!("line {i:02}\n")).collect();
    assert_eq!(sink.text(), expected);
    // Room again once written.
    log.line(&"after");
    assert!(log.flush(BOUND));
    assert!(sink.text().ends_with("line 11\nafter\n"));
    assert_eq!(log.shared.dropped.load(Relaxed), 38);
}

#[test]
fn lines_stderr_refuses_count_as_dropped() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let log = Logger::spawn(Box::new(Closed), Limits::DEFAULT).unwrap();
    for _ in 0..5 {
        log.line(&"lost");
    }
    assert!(log.flush(BOUND));
    assert_eq!(log.shared.dropped.load(Relaxed), 5);
}

#[test]
fn limited_shows_n_per_window_and_summarises_the_rest_without_a_further_event() {
    let sink = Sink::open();
    let log = logger(&sink, QUEUE_BYTES, 3, Duration::from_millis(300));
    let formatted = Cell::new(0);
    for i in 0..20 {
        log.limited(Kind::TokenRefused, || {
            formatted.set(formatted.get() + 1);
            format!("peer 10.0.0.1:1: device \"d{i}\": token refused: expired")
        });
    }
    log.limited(Kind::CredentialsRefused, || "peer 10.0.0.2:2: actuation: credentials refused");
    assert!(sink.wait_for("token refused: "), "a summary comes by itself: {}", sink.text());
    // Should the events have spread over two windows, the second summary comes now.
    assert!(log.flush(BOUND));
    let text = sink.text();
    let shown = text.lines().filter(|l| l.contains(": token refused: expired")).count();
    // Normally all 20 fall in one window: 3 shown, "17 more". A slow machine may spread them
    // over two windows; then the counts still add up.
    let hidden: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("token refused: "))
        .map(|rest| {
            assert!(rest.ends_with(" not shown"), "{rest}");
            rest.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(shown, formatted.get(), "suppressed lines are not formatted");
    assert_eq!(shown as u64 + hidden, 20, "{text}");
    assert!((3..=6).contains(&shown), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("credentials refused")).count(), 1, "{text}");
    // A new window lets lines through again.
    let before = sink.text().len();
    log.limited(Kind::TokenRefused, || "again");
    assert!(log.flush(BOUND));
    assert_eq!(&sink.text()[before..], "again\n");
}

#[test]
fn flush_writes_the_summary_with_the_exact_count() {
    let sink = Sink::open();
    let log = logger(&sink, QUEUE_BYTES, 2, Duration::from_secs(3600));
    for _ in 0..4713 {
        log.limited(Kind::CredentialsRefused, || "peer 10.0.0.1:1: actuation: credentials refused");
    }
    assert!(log.flush(BOUND));
    let text = sink.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], lines[1]);
    assert!(lines[2].starts_with("credentials refused: 4711 more like this in the last "), "{text}");
    assert!(lines[2].ends_with(" not shown"), "{text}");
}

#[test]
fn span_reads_as_seconds_or_milliseconds() {
    assert_eq!(Span(Duration::from_millis(100)).to_string(), "100 ms");
    assert_eq!(Span(Duration::from_millis(10_004)).to_string(), "10 s");
    assert_eq!(Span(Duration::from_millis(59_600)).to_string(), "60 s");
}
