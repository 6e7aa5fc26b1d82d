//! Text as it may appear in a log line: client text quoted, escaped and cut ([`ClientText`]);
//! any message cut to 1 KiB with no control character left raw ([`Capped`]), so one record is one
//! line whatever the caller formats.

use std::fmt::{self, Display, Write as _};
use std::net::SocketAddr;

/// Most characters of one client text, quotes and `…` included.
const CLIENT_TEXT_MAX: usize = 128;
/// Most bytes of one message, `…` included (the line's time, level and target come on top).
pub const MESSAGE_MAX: usize = 1024;

/// Client-supplied text as it may appear in a line: quoted, escaped as `{:?}` escapes a `str`
/// (control characters, `"` and `\` never pass raw) and at most 128 characters, quotes included.
/// Longer text ends in `…"`, cut between whole characters of the input, never inside an escape.
/// Formatting reads at most 127 characters of the input, however long it is.
#[derive(Clone, Copy)]
pub struct ClientText<'a>(pub &'a str);

/// `s` as it may appear in a line; see [`ClientText`].
pub fn client_text(s: &str) -> ClientText<'_> {
    ClientText(s)
}

impl Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, cut) = fit(self.0, CLIENT_TEXT_MAX - 2);
        f.write_char('"')?;
        for c in shown.chars() {
            // Inside double quotes a single quote needs no escape, as in `{:?}`.
            if c == '\'' {
                f.write_char(c)?;
            } else {
                write!(f, "{}", c.escape_debug())?;
            }
        }
        if cut {
            f.write_char('…')?;
        }
        f.write_char('"')
    }
}

fn escaped_len(c: char) -> usize {
    if c == '\'' {
        1
    } else {
        c.escape_debug().len()
    }
}

/// The longest prefix of `s` whose escaped form fits `budget` characters, and whether that is
/// not all of `s`; a cut prefix leaves room for the `…`.
fn fit(s: &str, budget: usize) -> (&str, bool) {
    let mut used = 0;
    let mut end_with_marker = 0;
    for (i, c) in s.char_indices() {
        used += escaped_len(c);
        if used > budget {
            return (&s[..end_with_marker], true);
        }
        if used < budget {
            end_with_marker = i + c.len_utf8();
        }
    }
    (s, false)
}

/// The start of a line about a connection: `peer 192.0.2.7:50123` or `peer [2001:db8::7]:50123`.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.0)
    }
}

/// How [`Capped`] escapes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Control characters as Rust writes them (`\n`, `\u{1b}`): the text line format.
    Controls,
    /// Also `"` and `\`, and control characters as `\u001b`: inside a JSON string.
    Json,
}

/// Appends `message` to `buf`, escaped by `escape`, cut with a `…` so that the message takes at
/// most [`MESSAGE_MAX`] bytes. (A message of 1022 to 1024 bytes may be cut a little early:
/// simpler.)
pub fn append_message(buf: &mut String, message: &dyn Display, escape: Escape) {
    let end = buf.len() + MESSAGE_MAX;
    let mut capped = Capped { buf, end, escape, cut: false };
    let _ = write!(capped, "{message}");
    if capped.cut {
        buf.push('…');
    }
}

/// Appends text, escaped, until a `…` would not fit before `end`; then stops formatting.
struct Capped<'a> {
    buf: &'a mut String,
    end: usize,
    escape: Escape,
    cut: bool,
}

impl Capped<'_> {
    fn needs_escape(&self, c: char) -> bool {
        c.is_control() || (self.escape == Escape::Json && (c == '"' || c == '\\'))
    }

    fn push(&mut self, s: &str, is_escape: bool) -> fmt::Result {
        let room = self.end.saturating_sub('…'.len_utf8() + self.buf.len());
        if s.len() <= room {
            self.buf.push_str(s);
            return Ok(());
        }
        // An escape goes in whole or not at all.
        if !is_escape {
            self.buf.push_str(&s[..floor_char_boundary(s, room)]);
        }
        self.cut = true;
        Err(fmt::Error)
    }

    fn push_escaped(&mut self, c: char) -> fmt::Result {
        let mut escaped = [0u8; 16];
        let mut w = SliceWriter { buf: &mut escaped, len: 0 };
        let _ = match (self.escape, c) {
            (Escape::Json, '"' | '\\') => write!(w, "\\{c}"),
            (Escape::Json, _) => write!(w, "\\u{:04x}", u32::from(c)),
            (Escape::Controls, _) => write!(w, "{}", c.escape_debug()),
        };
        let len = w.len;
        // Only ASCII was written.
        self.push(std::str::from_utf8(&escaped[..len]).unwrap_or("?"), true)
    }
}

impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        let mut rest = s;
        while let Some((i, c)) = rest.char_indices().find(|&(_, c)| self.needs_escape(c)) {
            self.push(&rest[..i], false)?;
            self.push_escaped(c)?;
            rest = &rest[i + c.len_utf8()..];
        }
        self.push(rest, false)
    }
}

/// Formats into a fixed buffer: an escape without an allocation.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The largest character boundary of `s` at or below `i`: where a cut at `i` bytes may fall.
pub fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
