//! The loopback floor of one delivered actuation (issue 14): one `write()` of a frame of the
//! actuation's size to each of N loopback sockets in turn, drained by another thread; the
//! writer thread's CPU per write.
//!
//! On loopback the kernel charges the receiving side's TCP processing and the reader's wake-up
//! to the writer, so this is what the server cannot go below for an actuation that costs it one
//! write. Measured in the same run as the server's figure, the ratio between the two no longer
//! depends on how busy the machine is.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sender::command_body;

/// How long the drainer waits without data before it gives up (the writer has failed).
const DRAIN_IDLE: Duration = Duration::from_secs(10);

/// One measurement.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    pub sockets: usize,
    pub frame_bytes: usize,
    pub writes: u64,
    /// The writer thread's user + system CPU per write.
    pub cpu_us_per_write: f64,
    /// The drainer thread's CPU per write (what the device's side costs; not part of the floor).
    pub drain_cpu_us_per_write: f64,
    pub per_s: f64,
}

impl Floor {
    pub fn json(&self) -> Value {
        json!({
            "sockets": self.sockets, "frame_bytes": self.frame_bytes, "writes": self.writes,
            "cpu_us_per_write": round2(self.cpu_us_per_write),
            "drain_cpu_us_per_write": round2(self.drain_cpu_us_per_write), "per_s": self.per_s.round(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{:.2} µs writer CPU per write ({} writes of {} bytes over {} sockets, {:.0}/s; drainer {:.2} µs)",
            self.cpu_us_per_write, self.writes, self.frame_bytes, self.sockets, self.per_s, self.drain_cpu_us_per_write
        )
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `iot-ws-bench floor`: `runs` measurements with the frame of an actuation of the actuate mode;
/// the median is the figure.
pub fn run(sockets: usize, writes: u64, runs: u64) -> Result<Value, String> {
    let frame = actuation_frame(
        &format!("bench-{:x}-act-{}", std::process::id(), sockets.saturating_sub(1)),
        writes,
        10_000_000,
    );
    println!("loopback floor: {sockets} sockets, {writes} writes of {} bytes, {runs} runs", frame.len());
    let mut all = Vec::new();
    for _ in 0..runs.max(1) {
        let floor = measure(sockets, &frame, writes)?;
        println!("  {}", floor.describe());
        all.push(floor);
    }
    let mut per: Vec<f64> = all.iter().map(|f| f.cpu_us_per_write).collect();
    per.sort_by(f64::total_cmp);
    let median = per[per.len() / 2];
    println!("  median: {median:.2} µs writer CPU per write");
    Ok(json!({ "cpu_us_per_write": round2(median), "runs": all.iter().map(Floor::json).collect::<Vec<_>>() }))
}

/// The WebSocket frame a device receives for actuation `seq` (stamped `t`): the server's 1024
/// reply around the dashboard's body, unmasked, in one text frame.
pub fn actuation_frame(device: &str, seq: u64, t: u64) -> Vec<u8> {
    let body = iot_ws_core::Body::from_json_object(&command_body(device, seq, t));
    let text = body.map(|b| iot_ws_core::Reply::Actuation(b).to_text()).unwrap_or_default();
    ws_text_frame(text.as_bytes())
}

/// A final, unmasked text frame (server to client).
fn ws_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// Measures the floor: `writes` writes of `frame`, round-robin over `sockets` connections.
/// Blocking: run it on a thread of its own (`smol::unblock`), it measures the calling thread.
pub fn measure(sockets: usize, frame: &[u8], writes: u64) -> Result<Floor, String> {
    let (mut writers, readers) = pairs(sockets.max(1)).map_err(|e| format!("floor: loopback sockets: {e}"))?;
    let n = writers.len();
    // One write per socket first, so that no socket's first write (its buffers, the window) is
    // counted.
    for w in writers.iter_mut() {
        w.write_all(frame).map_err(|e| format!("floor: write: {e}"))?;
    }
    let expected = (n as u64 + writes) * frame.len() as u64;
    let drainer = std::thread::Builder::new()
        .name("floor-drain".into())
        .spawn(move || drain(readers, expected))
        .map_err(|e| format!("floor: drainer thread: {e}"))?;
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    for k in 0..writes {
        writers[(k % n as u64) as usize].write_all(frame).map_err(|e| format!("floor: write: {e}"))?;
    }
    let (cpu1, elapsed) = (thread_cpu(), t0.elapsed());
    let (drained, drain_cpu) =
        drainer.join().map_err(|_| "floor: the drainer panicked")?.map_err(|e| format!("floor: drain: {e}"))?;
    if drained < expected {
        return Err(format!("floor: {drained} of {expected} bytes arrived"));
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / writes.max(1) as f64;
    Ok(Floor {
        sockets: n,
        frame_bytes: frame.len(),
        writes,
        cpu_us_per_write: per(cpu1.saturating_sub(cpu0)),
        drain_cpu_us_per_write: per(drain_cpu),
        per_s: writes as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

/// `n` loopback connections: the accepted ends write (as the server's do, with Nagle off), the
/// connecting ends are read.
fn pairs(n: usize) -> io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut writers, mut readers) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let reader = TcpStream::connect(addr)?;
        let (writer, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        reader.set_nonblocking(true)?;
        writers.push(writer);
        readers.push(reader);
    }
    Ok((writers, readers))
}

/// Reads every socket as data arrives (epoll, as the devices' reactor does) until `expected`
/// bytes came or none came for [`DRAIN_IDLE`]; returns the bytes and this thread's CPU.
fn drain(mut readers: Vec<TcpStream>, expected: u64) -> io::Result<(u64, Duration)> {
    let cpu0 = thread_cpu();
    let epoll = Epoll::new()?;
    for (i, r) in readers.iter().enumerate() {
        epoll.add(r.as_raw_fd(), i as u64)?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let (mut total, mut idle_since) = (0u64, Instant::now());
    while total < expected && idle_since.elapsed() < DRAIN_IDLE {
        let ready = epoll.wait(&mut events, 100)?;
        if ready > 0 {
            idle_since = Instant::now();
        }
        for ev in &events[..ready] {
            let reader = &mut readers[ev.u64 as usize];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(got) => total += got as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok((total, thread_cpu().saturating_sub(cpu0)))
}

/// A level-triggered epoll set.
struct Epoll(i32);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: i32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: both descriptors are open; the kernel copies `ev`.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into the slice we own.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        match n {
            n if n >= 0 => Ok(n as usize),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(0),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// The calling thread's user + system CPU time (getrusage RUSAGE_THREAD: the kernel's
/// nanosecond run time, not the 10 ms ticks of /proc).
pub fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_grows_with_the_payload() {
        assert_eq!(ws_text_frame(&[b'x'; 125])[..2], [0x81, 125]);
        assert_eq!(ws_text_frame(&[b'x'; 126])[..4], [0x81, 126, 0, 126]);
        assert_eq!(ws_text_frame(&[b'x'; 126]).len(), 130);
    }

    #[test]
    fn the_actuation_frame_carries_the_1024_reply_around_the_body() {
        let frame = actuation_frame("dev-1", 7, 42);
        let text = std::str::from_utf8(&frame[2..]).unwrap();
        assert!(text.starts_with(r#"{"code":1024,"content":{"type":"command""#), "{text}");
        assert_eq!(frame[1] as usize, text.len());
    }

    #[test]
    fn a_small_floor_run_drains_every_byte() {
        let floor = measure(4, &actuation_frame("dev-1", 7, 42), 100).unwrap();
        assert_eq!((floor.sockets, floor.writes), (4, 100));
    }
}
