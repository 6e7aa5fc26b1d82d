//! One task per connection: the HTTP head, then a core `Session` driven over the WebSocket.
//!
//! Every peer is assumed hostile or stalled, so the task never waits on the peer alone:
//! - output is queued ([`Socket`]) and written as the socket takes it, so timers run while a
//!   write is blocked; unsent output is bounded by `--send-queue-bytes` (then close 1008), a
//!   peer that takes no byte for [`WRITE_STALL`] is dropped, and reading stops while a peer
//!   leaves its replies unread;
//! - input is rationed per turn ([`Socket`]) and the task yields every [`TURNS`] wakes, so no
//!   connection keeps the executor thread for more than a bounded burst;
//! - a pending connection ends at the register timeout after its accept, head included, or
//!   earlier if its slot goes to a fairer claim (limits.rs: close 1013).

use std::future::{poll_fn, Future};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{future, AsyncWriteExt, Stream};
use iot_ws_core::{FrameError, Input, Millis, Session, SessionConfig, SessionId};
use smol::{Async, Timer};

use crate::hub::mailbox::{MailWake, Mailbox};
use crate::hub::{Address, Mail};
use crate::ops::census::{self, Owner};
use crate::ops::logging::Peer;
use crate::ops::metrics::Metrics;
use crate::tls::Transport;
use keepalive::KeepAlive;
use limits::{OpenSlot, PendingSlot};
use socket::{masked_frame_bytes, Socket};
use transit::Transit;

mod closing;
mod context;
mod http;
mod keepalive;
pub mod limits;
pub mod live_config;
pub mod metrics_port;
mod output;
mod socket;
mod stop;
mod transit;

pub use context::{ws_config, Ctx};

type Ws = WebSocketStream<Socket>;

/// Most mails handled in one go before the frames go out and others get a turn.
const BURST: usize = 64;
/// Wakes handled before the task yields to the others, whatever keeps waking it. As many as the
/// socket's read ration allows messages (64 KiB in reads of 128 bytes): a smaller number
/// shrinks the hub's batches under a full-speed dashboard, and with them how many actuations
/// for one device share a write (measured: 64 cost ~30 % more CPU per actuation at full speed).
const TURNS: u32 = 512;
/// How long to wait for the peer's answer to our close frame, and for our last frames to go.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A peer whose socket takes no byte of our output for this long is gone.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// Reading stops while this much of our output (replies the peer does not read) is unsent.
const READ_PAUSE_BYTES: usize = 64 * 1024;

/// Serves one accepted TCP connection to its end; `accepted` starts its register timeout.
///
/// Not an `async fn` (its arguments would be stored twice), and the handshake runs in a box of
/// its own: a task is as large as the largest state it ever has, and the handshake's (the head,
/// its timers, the upgrade) would otherwise stay in every idle connection's task. This task
/// keeps only the steady loop.
pub fn serve_connection(
    stream: Async<TcpStream>,
    accepted: Instant,
    slots: (OpenSlot, PendingSlot),
    ctx: Arc<Ctx>,
) -> impl std::future::Future<Output = ()> {
    // Boxed here, outside the task's own async block: built inside it, the handshake's future
    // would get a slot in the task's state even though it only passes through (rustc keeps
    // space for such temporaries).
    let handshake = Box::pin(census::owned(Owner::Handshake, handshake(stream, accepted, slots, ctx)));
    async move {
        // In a block of its own, so that the connection, moved into its loop's future, keeps no
        // slot of its own in the task beside that future.
        let run = {
            let Some(connection) = handshake.await else { return };
            connection.run()
        };
        run.await;
    }
}

/// The TLS handshake (wss://), the HTTP head, then a plain answer (`None`) or the upgrade to a
/// WebSocket connection. All of it within the register timeout, and given up if the pending slot
/// goes to a fairer claim: a client stalling in the TLS handshake is as pending as one stalling
/// in its head.
async fn handshake(
    stream: Async<TcpStream>,
    accepted: Instant,
    (open, pending): (OpenSlot, PendingSlot),
    ctx: Arc<Ctx>,
) -> Option<Connection> {
    let session_config = ctx.session_config.current();
    let deadline = accepted + Duration::from_millis(session_config.register_timeout_ms);
    let evicted = async {
        pending.evicted().await;
        None
    };
    let opened = async {
        let mut stream = within(deadline, open_stream(stream, &ctx)).await??;
        let head = http::read_head(&mut stream, deadline).await?;
        Some((stream, head))
    };
    let (mut stream, head) = future::or(opened, evicted).await?;
    let request = http::classify(&head);
    drop(head);
    match request {
        http::Request::Plain(answer) => {
            // With --metrics-listen, the metrics are served there only.
            let answer = match answer {
                http::Answer::Metrics if !ctx.metrics_here => http::Answer::NotFound,
                answer => answer,
            };
            within(deadline, http::respond(&mut stream, &answer, &ctx.metrics)).await;
            None
        }
        http::Request::Upgrade { accept_key, leftover } => {
            let reply = http::switching_protocols(&accept_key);
            within(deadline, async { stream.write_all(reply.as_bytes()).await.and(stream.flush().await) })
                .await?
                .ok()?;
            let config = Some(ctx.ws_config);
            let socket = Socket::new(stream, leftover.len());
            let ws = WebSocketStream::from_partially_read(socket, leftover, Role::Server, config);
            let ws = census::owned(Owner::WebSocket, ws).await;
            Some(Connection::new(ws, ctx, session_config, accepted, (open, pending)))
        }
    }
}

/// The connection's byte stream: TLS once its handshake is done, when the listener has TLS.
async fn open_stream(stream: Async<TcpStream>, ctx: &Ctx) -> Option<Transport> {
    let Some(acceptor) = &ctx.tls else { return Some(Transport::Plain(stream)) };
    match crate::tls::accept(acceptor, stream).await {
        Ok(transport) => Some(transport),
        Err(_) => {
            // Plain HTTP to the TLS port, a scanner, a client that does not trust us.
            Metrics::inc(&ctx.metrics.tls_handshakes_failed);
            None
        }
    }
}

/// `work`'s result, unless `deadline` comes first.
async fn within<T>(deadline: Instant, work: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(work.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

/// What a message asks of the connection besides the session's answer.
///
/// tungstenite keeps its read buffer for the connection's life, grown to the largest frame read,
/// and a device's first frame is its largest: the registration with its token, ~600 bytes, kept
/// by every idle device for nothing. When that frame is all the connection has read, the
/// WebSocket state is rebuilt around the same socket, with [`DEVICE_READ_BUFFER`].
#[derive(PartialEq, Eq)]
enum Rebuild {
    Nothing,
    WebSocket,
}

/// tungstenite's read buffer for a registered device, which sends only pongs and pings: none
/// until it sends one (reads then take a header's 14 bytes at a time). A dashboard's connection,
/// which streams actuations, keeps the usual 128 bytes: it is never rebuilt.
const DEVICE_READ_BUFFER: usize = 0;

enum Wake {
    Frame(Option<Result<Message, WsError>>),
    Sent(std::io::Result<usize>),
    Mail(MailWake<Mail>),
    /// Its pending slot was given to a fairer claim (see limits.rs).
    Evicted,
    Shutdown,
    Tick,
}

/// What the loop does after a wake: the steps that await, or that need the connection whole.
enum Then {
    Nothing,
    /// Handle this mail and the mail behind it.
    Burst(Mail),
    /// Renew the WebSocket state (see [`Rebuild`]).
    Rebuild,
}

/// `Connection::armed` when its timer is set for nothing (it fired): no deadline is that late.
const DISARMED: Millis = Millis(u64::MAX);

/// Why the connection gave up on its peer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GaveUp {
    /// Its unsent output passed `--send-queue-bytes`.
    SendQueueFull,
    /// Its socket took nothing for [`WRITE_STALL`].
    WriteStalled,
}

struct Connection {
    ws: Ws,
    ctx: Arc<Ctx>,
    session: Session,
    id: SessionId,
    /// Made when first needed (a registration, an actuation asking for an ack): a connection
    /// that never gets that far (most refused and hostile ones) keeps none.
    mail: Option<Mailbox<Mail>>,
    keepalive: KeepAlive,
    /// Fires at the earliest deadline (session, keepalive, write stall). Kept across wakes and
    /// moved only when the deadline moves: registering a timer costs a reactor wakeup.
    timer: Timer,
    /// The deadline `timer` is set for; [`DISARMED`] once it fired.
    armed: Millis,
    /// Its place among those the stop wakes ([`stop::Stop`]), once it has slept.
    stop_key: Option<u32>,
    /// Counted against `--max-connections` until the connection is dropped.
    open: OpenSlot,
    /// Counted against `--max-pending` until the session stops being pending.
    pending: Option<PendingSlot>,
    /// Actuations fed to the session, queued on the socket (acked "Delivered" once written),
    /// or taken back.
    transit: Transit,
    /// Wakes since the task last yielded.
    turns: u32,
    /// The session ended its route ([`Output::Detach`](iot_ws_core::Output::Detach)): the hub
    /// hears it in `finish`, with what was not written.
    detach: bool,
    /// We sent a close frame (or can send nothing more): the peer's answer ends the connection.
    close_sent: bool,
    /// The peer's side is over (closed, reset, or errored): nothing more to read.
    peer_done: bool,
    gave_up: Option<GaveUp>,
}

impl Connection {
    fn new(
        ws: Ws,
        ctx: Arc<Ctx>,
        config: Arc<SessionConfig>,
        accepted: Instant,
        (open, pending): (OpenSlot, PendingSlot),
    ) -> Self {
        let keepalive = KeepAlive::new(ctx.clock.now());
        Connection {
            ws,
            session: Session::new(ctx.clock.millis(accepted), config),
            id: SessionId(ctx.next_session.fetch_add(1, Relaxed)),
            ctx,
            mail: None,
            keepalive,
            timer: Timer::never(),
            armed: DISARMED,
            stop_key: None,
            open,
            pending: Some(pending),
            transit: Transit::default(),
            turns: 0,
            detach: false,
            close_sent: false,
            peer_done: false,
            gave_up: None,
        }
    }

    /// Not an `async fn`: its argument would be stored twice in the future (once as the
    /// argument, once as the body's local), 640 bytes more for every idle connection.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            self.ctx.metrics.connections.fetch_add(1, Relaxed);
            loop {
                // On the heap, and only when there is something to do: the sending state
                // would otherwise sit in every idle connection's task.
                if self.session.has_output() {
                    Box::pin(self.perform_outputs()).await;
                }
                if self.pending.is_some() && !self.session.is_pending() {
                    self.pending = None;
                }
                if self.session.is_closed() {
                    break;
                }
                self.turns += 1;
                if self.turns >= TURNS {
                    self.turns = 0;
                    future::yield_now().await;
                }
                let wake = self.next_wake().await;
                // Handled in a plain function, and the burst boxed before it is awaited, so that
                // neither the wake (64 bytes) nor the mail (48) is held across an await: the
                // task would keep room for them.
                let burst = match self.on_wake(wake) {
                    Then::Nothing => None,
                    Then::Burst(mail) => Some(Box::pin(self.mail_burst(mail))),
                    Then::Rebuild => {
                        self = self.with_fresh_websocket();
                        None
                    }
                };
                if let Some(burst) = burst {
                    burst.await;
                }
            }
            let ctx = self.ctx.clone();
            Box::pin(self.finish()).await;
            ctx.metrics.connections.fetch_sub(1, Relaxed);
        }
    }

    fn on_wake(&mut self, wake: Wake) -> Then {
        let now = self.ctx.clock.now();
        match wake {
            Wake::Frame(Some(Ok(message))) => {
                self.keepalive.heard();
                if self.on_message(message) == Rebuild::WebSocket {
                    return Then::Rebuild;
                }
            }
            Wake::Frame(Some(Err(error))) => self.on_error(error),
            Wake::Frame(None) => {
                self.peer_done = true;
                self.session.handle_input(now, Input::PeerGone);
            }
            Wake::Sent(Ok(_)) => self.on_sent(),
            Wake::Sent(Err(_)) => {
                self.peer_done = true;
                self.session.handle_input(now, Input::PeerGone);
            }
            Wake::Mail(MailWake::Mail(mail)) => return Then::Burst(mail),
            Wake::Mail(MailWake::Overflow) => self.give_up(GaveUp::SendQueueFull),
            Wake::Shutdown => self.session.handle_input(now, Input::Shutdown),
            Wake::Evicted => self.session.handle_input(now, Input::Evicted),
            Wake::Tick => {
                self.armed = DISARMED;
                self.on_tick(now);
            }
        }
        Then::Nothing
    }

    /// Waits for whatever happens first (see [`Connection::poll_wake`]). The future holds only
    /// the connection's address: an idle connection's task keeps no room for what it waits on.
    fn next_wake(&mut self) -> impl Future<Output = Wake> + '_ {
        let deadline = self.next_deadline();
        if self.armed != deadline {
            self.timer.set_at(self.ctx.clock.instant(deadline));
            self.armed = deadline;
        }
        poll_fn(|cx| self.poll_wake(cx))
    }

    /// In this order: a stop first; output before mail (writing makes room for it); mail before
    /// frames, so that a chatty peer cannot starve its own actuations; and a frame is read only
    /// when nothing else is ready (each try is a syscall). Reading pauses while the peer leaves
    /// our output unread.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        let unsent = self.ws.get_ref().unsent();
        let sending = self.ws.get_ref().has_output();
        let reading = !self.peer_done && unsent <= self.read_pause_bytes();
        let take_actuations = self.has_room();
        let overflow_at = self.ctx.send_queue_bytes.saturating_sub(unsent);
        let Connection { ws, mail, ctx, timer, pending, stop_key, .. } = self;
        if ctx.stop.is_stopping() {
            return Poll::Ready(Wake::Shutdown);
        }
        if pending.as_ref().is_some_and(|slot| slot.poll_evicted(cx).is_ready()) {
            return Poll::Ready(Wake::Evicted);
        }
        if sending {
            if let Poll::Ready(result) = census::scope(Owner::Buffers, || ws.get_mut().poll_send(cx)) {
                return Poll::Ready(Wake::Sent(result));
            }
        }
        if let Some(mail) = mail {
            let polled = census::scope(Owner::Mailbox, || mail.poll_recv(cx, take_actuations, overflow_at));
            if let Poll::Ready(wake) = polled {
                return Poll::Ready(Wake::Mail(wake));
            }
        }
        if reading {
            if let Poll::Ready(frame) = census::scope(Owner::WebSocket, || Pin::new(&mut *ws).poll_next(cx)) {
                return Poll::Ready(Wake::Frame(frame));
            }
        }
        if census::scope(Owner::Timer, || Pin::new(&mut *timer).poll(cx)).is_ready() {
            return Poll::Ready(Wake::Tick);
        }
        if ctx.stop.wake_at_stop(stop_key, cx.waker()) {
            return Poll::Ready(Wake::Shutdown);
        }
        Poll::Pending
    }

    fn next_deadline(&self) -> Millis {
        let mut deadline = self.keepalive.deadline();
        if let Some(at) = self.session.poll_timeout() {
            deadline = deadline.min(at);
        }
        if let Some(since) = self.ws.get_ref().waiting_since() {
            // Rounded up: the tick must find the stall complete.
            deadline = deadline.min(self.ctx.clock.millis(since + WRITE_STALL).plus(1));
        }
        deadline
    }

    /// A sender to this connection's mailbox, made now if it has none yet.
    fn address(&mut self) -> Address {
        self.mail.get_or_insert_with(|| census::scope(Owner::Mailbox, Mailbox::default)).sender()
    }

    /// The peer, for a log line: asked of the socket (rare) rather than kept per connection.
    fn peer(&self) -> Peer {
        Peer(self.ws.get_ref().peer_addr().unwrap_or_else(|| (std::net::Ipv4Addr::UNSPECIFIED, 0).into()))
    }

    fn read_pause_bytes(&self) -> usize {
        READ_PAUSE_BYTES.min(self.ctx.send_queue_bytes / 2)
    }

    /// Whether the socket's queue has room for more actuations: up to half the send queue, so
    /// that a backlog handed over from the hold queue leaves room for live actuations.
    fn has_room(&self) -> bool {
        self.ws.get_ref().unsent() <= self.ctx.send_queue_bytes / 2
    }

    /// The socket took some output: the actuations now written whole are delivered.
    fn on_sent(&mut self) {
        let written = self.ws.get_ref().written();
        for delivered in self.transit.written(written) {
            Metrics::inc(&self.ctx.metrics.actuations_delivered);
            if let Some(ack_to) = delivered.ack_to {
                let outcome = iot_ws_core::RouteOutcome::Delivered;
                let _ = ack_to.try_send(Mail::Routed { device: delivered.device, outcome });
            }
        }
        if self.ws.get_ref().unsent() == 0 {
            self.transit.shrink();
        }
    }

    /// Handles `first` and the mail behind it, up to a burst; their frames leave together.
    async fn mail_burst(&mut self, first: Mail) {
        self.on_mail(first);
        for _ in 1..BURST {
            self.perform_outputs().await;
            if self.session.is_closed() || self.close_sent {
                return;
            }
            let Some(mail) = self.mail.as_ref().and_then(|m| m.try_recv(self.has_room())) else { return };
            self.on_mail(mail);
        }
    }

    fn on_mail(&mut self, mail: Mail) {
        let now = self.ctx.clock.now();
        let input = match mail {
            Mail::Deliver { device, body, ack_to, from_hold } => {
                self.transit.fed(ack_to, from_hold);
                Input::Deliver { device, body }
            }
            Mail::Superseded => Input::Superseded,
            Mail::Routed { device, outcome } => Input::Routed { device, outcome },
        };
        self.session.handle_input(now, input);
    }

    fn on_message(&mut self, message: Message) -> Rebuild {
        let now = self.ctx.clock.now();
        match message {
            Message::Text(text) => {
                // Credentials re-read by SIGHUP apply to connections already open too.
                self.ctx.session_config.refresh(&mut self.session);
                let first = self.pending.is_some() && self.ws.get_ref().handed() == masked_frame_bytes(text.len());
                census::scope(Owner::Session, || self.session.handle_input(now, Input::Text(text.as_str())));
                if first && self.session.is_registering() {
                    return Rebuild::WebSocket;
                }
            }
            Message::Binary(_) => self.session.handle_input(now, Input::Binary),
            Message::Close(_) => {
                // tungstenite answers the close itself; the session only learns the peer is gone.
                self.session.handle_input(now, Input::PeerGone);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
        Rebuild::Nothing
    }

    /// The same connection around a new WebSocket state, with tungstenite's read buffer back at
    /// its small start (see [`Rebuild`]). Only when tungstenite holds no byte unread, nothing
    /// half received and nothing unwritten: after one whole frame that was all it was given
    /// (a pong it owed is written at once: the socket takes every write).
    fn with_fresh_websocket(self) -> Self {
        let Connection {
            ws,
            ctx,
            session,
            id,
            mail,
            keepalive,
            timer,
            armed,
            stop_key,
            open,
            pending,
            transit,
            turns,
            detach,
            close_sent,
            peer_done,
            gave_up,
        } = self;
        let config = Some(ctx.ws_config.read_buffer_size(DEVICE_READ_BUFFER));
        let fresh = WebSocketStream::from_raw_socket(ws.into_inner(), Role::Server, config);
        let ws = census::scope(Owner::WebSocket, || future::block_on(fresh));
        #[rustfmt::skip]
        let connection = Connection {
            ws, ctx, session, id, mail, keepalive, timer, armed, stop_key, open, pending, transit, turns,
            detach, close_sent, peer_done, gave_up,
        };
        connection
    }

    /// A frame the WebSocket layer refused goes to the session, which closes with its code; any
    /// other error means the peer is gone.
    fn on_error(&mut self, error: WsError) {
        let refused = match error {
            WsError::Capacity(_) => Some(FrameError::TooBig),
            WsError::Utf8(_) => Some(FrameError::InvalidUtf8),
            // A peer that just drops the TCP connection is gone, not misbehaving.
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
            WsError::Protocol(_) => Some(FrameError::Protocol),
            _ => None,
        };
        let input = match refused {
            Some(error) => {
                Metrics::inc(&self.ctx.metrics.messages_rejected);
                Input::FrameRefused(error)
            }
            None => {
                self.peer_done = true;
                Input::PeerGone
            }
        };
        self.session.handle_input(self.ctx.clock.now(), input);
    }

    fn on_tick(&mut self, now: Millis) {
        if self.ws.get_ref().waiting_since().is_some_and(|since| Instant::now() >= since + WRITE_STALL) {
            self.give_up(GaveUp::WriteStalled);
            return;
        }
        self.session.handle_timeout(now);
        match self.keepalive.on_tick(now) {
            keepalive::Action::Nothing => {}
            keepalive::Action::Ping => {
                self.queue(Message::Ping(Default::default()));
            }
            keepalive::Action::Dead => {
                self.peer_done = true;
                self.session.handle_input(now, Input::PeerGone);
            }
        }
    }
}
