//! The attacks of the `attack` mode (issue 9): each runs on threads of its own, over raw
//! WebSocket ([`crate::attack_raw`]), until the deadline of its [`Ctx`]; a phase starts one with
//! [`start`] and joins its threads.

use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use iot_ws_core::{ClientConfig, ClientInput, ClientOutput, DeviceClient, DeviceId, Millis};
use serde_json::Value;
use smol::{Async, Timer};

use crate::attack::{within, Attack};
use crate::attack_raw::{
    bump, connect_sync, frame, half_head, open_async, pump, write_until, Ctx, Frames, Inbound, Opened, OP_CLOSE,
    OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};
use crate::bench::Bench;
use crate::device::Spec;
use crate::sender::Actuator;

/// Most connections of `pending-pings`, below the file limit.
const PENDING_MAX: u64 = 15_000;
const HALF_HEADS: usize = 4_000;
/// Actuations of `stalled-reader`, `held-flood`: 60 KiB, under the server's 64 KiB message limit.
const BIG: usize = 60 * 1024;
const STALLED_ACTUATIONS: u64 = 1_100;

/// What some attacks need besides the target.
pub struct Gear {
    actuator: Actuator,
    run: String,
    stalled: Vec<Spec>,
    held: Vec<Spec>,
    pending: usize,
}

impl Gear {
    /// Devices for the attacks of `attacks` that register some; `pending-pings` stays below the
    /// bench's `file_limit`.
    pub fn new(b: &Bench, attacks: &[Attack], file_limit: u64) -> Result<Gear, String> {
        Ok(Gear {
            actuator: b.actuator.clone(),
            run: b.run.clone(),
            stalled: b.specs("stalled", usize::from(attacks.contains(&Attack::StalledReader)))?,
            held: b.specs("held", if attacks.contains(&Attack::HeldFlood) { 4 } else { 0 })?,
            pending: PENDING_MAX.min(file_limit.saturating_sub(1_000)) as usize,
        })
    }
}

/// Starts `attack`'s threads; each returns by the deadline.
pub fn start(attack: Attack, ctx: &Ctx, gear: &Arc<Gear>) -> Vec<JoinHandle<()>> {
    let g = gear.clone();
    match attack {
        Attack::PongFlood => threads(attack, 1, ctx, |c, _| flood(c, &[], &Frames::empty(OP_PONG, true), 0)),
        Attack::ContFlood => threads(attack, 1, ctx, |c, _| {
            // A text message that never ends: its fragments are empty and never final.
            flood(c, &frame(OP_TEXT, false, b""), &Frames::empty(OP_CONTINUATION, false), 0)
        }),
        Attack::PingFrameFlood => threads(attack, 1, ctx, |c, _| flood(c, &[], &Frames::empty(OP_PING, true), 0)),
        Attack::JsonPingFlood => threads(attack, 1, ctx, |c, _| {
            let ping = frame(OP_TEXT, true, br#"{"type":"ping"}"#);
            flood(c, &[], &Frames::repeat(&ping, 4_096), 0)
        }),
        Attack::PendingPings => threads(attack, 1, ctx, move |c, _| pending_pings(c, g.pending)),
        Attack::HalfHeads => threads(attack, 1, ctx, |c, _| half_heads(c, HALF_HEADS)),
        Attack::StalledReader => threads(attack, 1, ctx, move |c, _| stalled_reader(c, &g)),
        Attack::ActuationFlood => threads(attack, 4, ctx, move |c, t| {
            let ids = (0..64).map(|i| format!("bench-{}-absent-{t}-{i:02}", g.run));
            let frames = Frames::concat(ids.map(|id| actuation(&g.actuator, &id, false, 0)));
            flood(c, &[], &frames, 0)
        }),
        Attack::HeldFlood => threads(attack, 1, ctx, move |c, _| held_flood(c, &g)),
        Attack::LogFlood => threads(attack, 8, ctx, |c, _| log_flood(c)),
    }
}

fn threads(
    attack: Attack,
    n: usize,
    ctx: &Ctx,
    body: impl Fn(&Ctx, usize) + Send + Sync + 'static,
) -> Vec<JoinHandle<()>> {
    let body = Arc::new(body);
    let spawn = |i: usize| {
        let (ctx, body) = (ctx.clone(), body.clone());
        std::thread::Builder::new().name(format!("{}-{i}", attack.name())).spawn(move || body(&ctx, i)).ok()
    };
    (0..n).filter_map(spawn).collect()
}

/// Writes `first`, then `frames` round and round as fast as the socket takes them, until the
/// deadline or `budget` messages (0: no budget); opens a new connection when the server closes.
fn flood(ctx: &Ctx, first: &[u8], frames: &Frames, budget: u64) {
    let mut left = if budget == 0 { u64::MAX } else { budget * frames.each as u64 };
    while left > 0 && ctx.running() {
        let Some((mut s, _)) = ctx.open_ws(None) else { continue };
        let written = write_until(&mut s, first, ctx.deadline).and_then(|_| pump(&mut s, frames, &mut left, ctx));
        if written.is_err() {
            bump(&ctx.count.closed);
        } else if left == 0 {
            // Budget spent: keep the connection (its replies may still be on their way).
            ctx.nap(ctx.left());
        }
    }
}

/// Many connections that upgrade and send a JSON ping every second without registering; refused
/// or closed ones are opened again until the deadline. Async, on an executor of this thread.
fn pending_pings(ctx: &Ctx, n: usize) {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let slots: Vec<_> = (0..n).map(|_| ex.spawn(pending_slot(ctx.clone()))).collect();
        for slot in slots {
            within(ctx.deadline + Duration::from_millis(500), slot).await;
        }
    }));
}

async fn pending_slot(ctx: Ctx) {
    while ctx.running() {
        match within(ctx.deadline, open_async(&ctx.target)).await {
            None => {
                // Not upgraded by the deadline: the server never got to it.
                bump(&ctx.count.failed);
                return;
            }
            Some(Ok(Opened::Upgraded(s, _))) => {
                bump(&ctx.count.connections);
                if pinging(&ctx, s).await {
                    bump(&ctx.count.closed);
                }
            }
            Some(Ok(Opened::Refused(status))) => {
                bump(if status == 503 { &ctx.count.refused_503 } else { &ctx.count.refused_other });
                within(ctx.deadline, Timer::after(Duration::from_millis(250))).await;
            }
            Some(Err(_)) => {
                bump(&ctx.count.failed);
                within(ctx.deadline, Timer::after(Duration::from_millis(250))).await;
            }
        }
    }
}

/// Pings every second, throwing away what comes back; true if the server closed.
async fn pinging(ctx: &Ctx, mut s: Async<TcpStream>) -> bool {
    let ping = frame(OP_TEXT, true, br#"{"type":"ping"}"#);
    let mut scratch = [0u8; 256];
    let mut next = Instant::now();
    loop {
        let at = next.min(ctx.deadline);
        let tick = async move {
            Timer::at(at).await;
            None
        };
        match future::or(async { Some(s.read(&mut scratch).await) }, tick).await {
            Some(Ok(0) | Err(_)) => return true,
            Some(Ok(_)) => {}
            None if !ctx.running() => return false,
            None => match within(ctx.deadline, s.write_all(&ping)).await {
                Some(Ok(())) => {
                    bump(&ctx.count.messages);
                    next += Duration::from_secs(1);
                }
                Some(Err(_)) => return true,
                None => return false,
            },
        }
    }
}

/// `n` connections that send the first half of an 8 KiB request head and stall; the ones the
/// server ends are replaced until the deadline.
fn half_heads(ctx: &Ctx, n: usize) {
    let head = half_head(&ctx.target);
    let mut open: Vec<TcpStream> = Vec::with_capacity(n);
    while ctx.running() {
        while open.len() < n && ctx.running() {
            let Ok(mut s) = connect_sync(&ctx.target, ctx.deadline, None) else {
                bump(&ctx.count.failed);
                break;
            };
            if write_until(&mut s, &head, ctx.deadline).is_ok() && s.set_nonblocking(true).is_ok() {
                bump(&ctx.count.connections);
                ctx.count.bytes.fetch_add(head.len() as u64, Relaxed);
                open.push(s);
            }
        }
        ctx.nap(Duration::from_millis(250));
        // An answer (408, 400) or an end both mean the server let go of it.
        open.retain(|s| {
            let alive = matches!(s.peek(&mut [0u8; 16]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            if !alive {
                bump(&ctx.count.closed);
            }
            alive
        });
    }
}

/// A device that registers and never reads again, and 60 KiB actuations to it, acknowledged,
/// from one sender connection whose acks are read.
fn stalled_reader(ctx: &Ctx, gear: &Gear) {
    let Some(spec) = gear.stalled.first() else { return };
    // A small receive window: the server's writes stall after a few KiB, not after the
    // megabytes the kernel would otherwise grant a loopback socket.
    let Some(_device) = register_raw(ctx, spec, Some(4_096)) else { return };
    let frames = Frames::concat([actuation(&gear.actuator, &spec.id, true, BIG)]);
    let Some((mut s, leftover)) = ctx.open_ws(None) else { return };
    std::thread::scope(|scope| {
        if let Ok(mut r) = s.try_clone() {
            scope.spawn(move || count_replies(ctx, &mut r, leftover));
        }
        let mut left = STALLED_ACTUATIONS * frames.each as u64;
        if pump(&mut s, &frames, &mut left, ctx).is_err() {
            bump(&ctx.count.closed);
        }
        ctx.nap(ctx.left());
    });
}

fn count_replies(ctx: &Ctx, s: &mut TcpStream, leftover: Vec<u8>) {
    let mut inbound = Inbound(leftover);
    while let Ok(Some((op, payload))) = inbound.next(s, ctx.deadline) {
        if op == OP_TEXT {
            bump(&ctx.count.replies);
            if !is_200(&payload) {
                bump(&ctx.count.refusals);
            }
        }
    }
}

/// Four devices register and leave; 60 KiB actuations to them flood in while they are away.
fn held_flood(ctx: &Ctx, gear: &Gear) {
    let devices: Vec<TcpStream> = gear.held.iter().filter_map(|spec| register_raw(ctx, spec, None)).collect();
    // Reset, all at once: the server sees four departures.
    drop(devices);
    ctx.nap(Duration::from_millis(200));
    let frames = Frames::concat(gear.held.iter().map(|spec| actuation(&gear.actuator, &spec.id, false, BIG)));
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| flood(ctx, &[], &frames, 0));
        }
    });
}

/// Registrations with a 200-character id full of control characters and an invalid token, each
/// on a new connection: read the 401 and the close, reset, again.
fn log_flood(ctx: &Ctx) {
    let pattern = "\u{1b}[2J\u{1b}[31mERROR\r\n2024-01-01T00:00:00Z INFO admin logged in\u{7}\u{8}\0\t";
    let id: String = pattern.chars().cycle().take(200).collect();
    let message = frame(OP_TEXT, true, registration(&id, "not.a.token").as_bytes());
    while ctx.running() {
        let Some((mut s, leftover)) = ctx.open_ws(None) else { continue };
        if write_until(&mut s, &message, ctx.deadline).is_err() {
            bump(&ctx.count.closed);
            continue;
        }
        bump(&ctx.count.messages);
        let mut inbound = Inbound(leftover);
        let limit = ctx.deadline.min(Instant::now() + Duration::from_secs(1));
        while let Ok(Some((op, payload))) = inbound.next(&mut s, limit) {
            if op == OP_TEXT && payload.windows(3).any(|w| w == b"401") {
                bump(&ctx.count.replies);
                bump(&ctx.count.refusals);
            }
            if op == OP_CLOSE {
                break;
            }
        }
    }
}

/// A raw device connection that registered (its 200 read); nothing more is read from it.
fn register_raw(ctx: &Ctx, spec: &Spec, receive_buffer: Option<usize>) -> Option<TcpStream> {
    let (mut s, leftover) = ctx.open_ws(receive_buffer)?;
    let message = frame(OP_TEXT, true, registration(&spec.id, &spec.token).as_bytes());
    write_until(&mut s, &message, ctx.deadline).ok()?;
    let mut inbound = Inbound(leftover);
    while let Ok(Some((op, payload))) = inbound.next(&mut s, ctx.deadline) {
        if op == OP_TEXT {
            let ok = is_200(&payload);
            if ok {
                bump(&ctx.count.registered);
            }
            return ok.then_some(s);
        }
    }
    None
}

/// Whether a server reply's payload carries code 200.
pub fn is_200(payload: &[u8]) -> bool {
    payload.windows(10).any(|w| w == br#""code":200"#)
}

/// The registration message, as the core's client writes it.
fn registration(id: &str, token: &str) -> String {
    let mut client = DeviceClient::new(Millis(0), DeviceId(id.into()), token.into(), ClientConfig::default());
    client.handle_input(Millis(0), ClientInput::Connected);
    std::iter::from_fn(|| client.poll_output())
        .find_map(|out| match out {
            ClientOutput::Send(text) => Some(text),
            _ => None,
        })
        .unwrap_or_default()
}

/// An actuation's text, padded to `size` bytes.
fn actuation(actuator: &Actuator, device: &str, ack: bool, size: usize) -> String {
    let device = Value::from(device);
    let head = format!(
        r#"{}{{"type":"command","content":{{"deviceId":{device},"actuation":"LED on","pad":""#,
        actuator.message_head(ack)
    );
    let tail = r#""}}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actuations_are_padded_json_and_registrations_escape_ids() {
        let actuator = Actuator { username: "u".into(), password: "p".into() };
        let text = actuation(&actuator, "dev-1", true, BIG);
        assert_eq!(text.len(), BIG);
        let head = r#"{"type":"actuation","ack":true,"credentials":{"password":"p","username":"u"},"body":{"type":"command","content":{"deviceId":"dev-1","actuation":"LED on","pad":"xxx"#;
        assert!(text.starts_with(head) && text.ends_with(r#"xxx"}}}"#));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["body"]["content"]["deviceId"], "dev-1");
        assert!(registration("a\u{1}b", "t").contains(r#""deviceId":"a\u0001b""#));
    }
}
