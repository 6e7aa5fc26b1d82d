//! One task per connection: the HTTP head, then a core `Session` driven over the WebSocket.

use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{future, AsyncWriteExt, StreamExt};
use iot_ws_core::{CloseCode, DeviceId, Input, Output, Reply, Session, SessionId, StoreFailed};
use smol::{Async, Timer};

use crate::http;
use crate::hub_task::{Mail, Request};
use crate::keepalive::KeepAlive;
use crate::mailbox::{mailbox, MailSender, Mailbox};
use crate::metrics::Metrics;
use crate::server::Ctx;

#[path = "cork.rs"]
mod cork;
use cork::Corked;

type Ws = WebSocketStream<Corked>;

/// Most mails handled in one corked burst before the frames go out and others get a turn.
const BURST: usize = 64;

/// How long to wait for the peer's answer to our close frame.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one accepted TCP connection to its end.
pub async fn serve_connection(mut stream: Async<TcpStream>, ctx: Arc<Ctx>) {
    // Boxed, like every rare phase below: an idle connection's task keeps only the state of its
    // steady loop, not the largest state any phase ever needs (the head buffer, the attach).
    let Some(head) = Box::pin(http::read_head(&mut stream)).await else { return };
    let request = http::classify(&head);
    // Freed now, not when the connection ends (a kilobyte per idle connection).
    drop(head);
    match request {
        http::Request::Plain(answer) => http::respond(&mut stream, &answer, || ctx.metrics.render()).await,
        http::Request::Upgrade { accept_key, leftover } => {
            if stream.write_all(http::switching_protocols(&accept_key).as_bytes()).await.is_err() {
                return;
            }
            let ws =
                WebSocketStream::from_partially_read(Corked::new(stream), leftover, Role::Server, Some(ctx.ws_config))
                    .await;
            ctx.metrics.connections.fetch_add(1, Relaxed);
            Connection::new(ws, ctx.clone()).run().await;
            ctx.metrics.connections.fetch_sub(1, Relaxed);
        }
    }
}

enum Wake {
    Frame(Option<Result<Message, WsError>>),
    Mail(Mail),
    Shutdown,
    Tick,
}

struct Connection {
    ws: Ws,
    ctx: Arc<Ctx>,
    session: Session,
    id: SessionId,
    mail_tx: MailSender,
    mail_rx: Mailbox,
    keepalive: KeepAlive,
    /// Fires at the earlier of the session's and the keepalive's deadlines. Kept across wakes
    /// and moved only when the deadline moves: registering a timer costs a reactor wakeup.
    timer: Timer,
    /// The deadline `timer` is set for; `None` once it fired.
    armed: Option<Instant>,
    /// Registered with the hub (until detached).
    attached: bool,
    /// We sent a close frame: the peer's answer ends the connection.
    close_sent: bool,
    /// The peer's side is over (closed, reset, or errored): nothing more to read.
    peer_done: bool,
}

impl Connection {
    fn new(ws: Ws, ctx: Arc<Ctx>) -> Self {
        let (mail_tx, mail_rx) = mailbox();
        Connection {
            ws,
            session: Session::new(ctx.now(), &ctx.session_config),
            id: SessionId(ctx.next_session.fetch_add(1, Relaxed)),
            ctx,
            mail_tx,
            mail_rx,
            keepalive: KeepAlive::new(Instant::now()),
            timer: Timer::never(),
            armed: None,
            attached: false,
            close_sent: false,
            peer_done: false,
        }
    }

    /// Not an `async fn`: its argument would be stored twice in the future (once as the
    /// argument, once as the body's local), 640 bytes more for every idle connection.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            loop {
                // On the heap, and only when there is something to do: the sending state
                // would otherwise sit in every idle connection's task.
                if self.session.has_output() {
                    Box::pin(self.perform_outputs()).await;
                }
                if self.session.is_closed() {
                    break;
                }
                let wake = self.next_wake().await;
                let now = self.ctx.now();
                match wake {
                    Wake::Frame(Some(Ok(message))) => {
                        self.keepalive.heard();
                        self.on_message(message);
                    }
                    Wake::Frame(Some(Err(error))) => Box::pin(self.on_error(error)).await,
                    Wake::Frame(None) => {
                        self.peer_done = true;
                        self.session.handle_input(now, Input::PeerGone);
                    }
                    Wake::Mail(mail) => {
                        self.on_mail(now, mail);
                        if !self.mail_rx.is_empty() {
                            Box::pin(self.mail_burst()).await;
                        }
                    }
                    Wake::Shutdown => self.session.handle_input(now, Input::Shutdown),
                    Wake::Tick => {
                        self.armed = None;
                        Box::pin(self.on_tick(now)).await
                    }
                }
            }
            Box::pin(self.finish()).await;
        }
    }

    /// Waits for whatever happens first; shutdown and mail before frames, so a chatty peer
    /// cannot starve its own actuations.
    async fn next_wake(&mut self) -> Wake {
        let session_deadline = self.session.poll_timeout().map(|t| self.ctx.instant(t));
        let deadline = session_deadline.map_or(self.keepalive.deadline(), |d| d.min(self.keepalive.deadline()));
        if self.armed != Some(deadline) {
            self.timer.set_at(deadline);
            self.armed = Some(deadline);
        }
        let Connection { ws, mail_rx, ctx, timer, .. } = self;
        // The channel is closed, never written: `recv` fails at once, every time, after a stop.
        let shutdown = async {
            let _ = ctx.shutdown.recv().await;
            Wake::Shutdown
        };
        let mail = async { Wake::Mail(mail_rx.recv().await) };
        let frame = async { Wake::Frame(ws.next().await) };
        let tick = async {
            timer.await;
            Wake::Tick
        };
        future::or(shutdown, future::or(mail, future::or(frame, tick))).await
    }

    fn on_mail(&mut self, now: iot_ws_core::Millis, mail: Mail) {
        let input = match mail {
            Mail::Deliver { device, body } => Input::Deliver { device, body },
            Mail::Superseded => Input::Superseded,
            Mail::Routed { device, outcome } => Input::Routed { device, outcome },
        };
        self.session.handle_input(now, input);
    }

    /// More mail is waiting: handles it with the socket corked, so that its replies leave in
    /// one write rather than one each.
    async fn mail_burst(&mut self) {
        self.ws.get_mut().cork();
        for _ in 0..BURST {
            self.perform_outputs().await;
            if self.session.is_closed() || self.close_sent {
                break;
            }
            let Some(mail) = self.mail_rx.try_recv() else { break };
            self.on_mail(self.ctx.now(), mail);
        }
        self.ws.get_mut().uncork();
        if self.ws.get_mut().flush().await.is_err() {
            self.peer_done = true;
            self.session.handle_input(self.ctx.now(), Input::PeerGone);
        }
    }

    fn on_message(&mut self, message: Message) {
        let now = self.ctx.now();
        match message {
            Message::Text(text) => self.session.handle_input(now, Input::Text(text.as_str())),
            Message::Binary(_) => self.session.handle_input(now, Input::Binary),
            Message::Close(_) => {
                // tungstenite answers the close itself; the session only learns the peer is gone.
                self.session.handle_input(now, Input::PeerGone);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    /// Frame-level errors the session never sees: close with the RFC's code for each.
    async fn on_error(&mut self, error: WsError) {
        let code = match error {
            WsError::Capacity(_) => Some(CloseCode::MESSAGE_TOO_BIG),
            WsError::Utf8(_) => Some(CloseCode::INVALID_PAYLOAD),
            // A peer that just drops the TCP connection is gone, not misbehaving.
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
            WsError::Protocol(_) => Some(CloseCode::PROTOCOL_ERROR),
            _ => None,
        };
        if let Some(code) = code {
            Metrics::inc(&self.ctx.metrics.messages_rejected);
            self.send_close(code).await;
        }
        self.peer_done = code.is_none();
        self.session.handle_input(self.ctx.now(), Input::PeerGone);
    }

    async fn on_tick(&mut self, now: iot_ws_core::Millis) {
        self.session.handle_timeout(now);
        match self.keepalive.on_tick() {
            crate::keepalive::Action::Nothing => {}
            crate::keepalive::Action::Ping => {
                if self.ws.send(Message::Ping(Default::default())).await.is_err() {
                    self.peer_done = true;
                    self.session.handle_input(now, Input::PeerGone);
                }
            }
            crate::keepalive::Action::Dead => {
                self.peer_done = true;
                self.session.handle_input(now, Input::PeerGone);
            }
        }
    }

    /// Performs every pending command; results go straight back into the session.
    async fn perform_outputs(&mut self) {
        while let Some(output) = self.session.poll_output() {
            let now = self.ctx.now();
            match output {
                Output::Send(reply) => self.send_reply(reply).await,
                Output::Close(code) => self.send_close(code).await,
                Output::VerifyToken { device, token } => {
                    let verdict = self.ctx.verifier.verify(&device, &token, SystemTime::now());
                    if let Err(reason) = verdict {
                        // The reason, never the token.
                        eprintln!("device {device}: token refused: {reason}");
                        Metrics::inc(&self.ctx.metrics.registrations_invalid_token);
                    }
                    self.session.handle_input(now, Input::TokenChecked(verdict));
                }
                Output::StoreBinding { device } => {
                    let stored = Box::pin(self.attach(device)).await;
                    let counter = match stored {
                        Ok(()) => &self.ctx.metrics.registrations_ok,
                        Err(StoreFailed) => &self.ctx.metrics.registrations_store_failed,
                    };
                    Metrics::inc(counter);
                    self.session.handle_input(self.ctx.now(), Input::BindingStored(stored));
                }
                Output::MarkDisconnected { .. } => self.detach(),
                Output::Route { device, body, ack } => {
                    let ack_to = ack.then(|| self.mail_tx.clone());
                    let _ = self.ctx.hub.try_send(Request::Route { device, body, ack_to });
                }
                Output::Undelivered { device, body } => {
                    let _ = self.ctx.hub.try_send(Request::Route { device, body, ack_to: None });
                }
            }
        }
    }

    async fn send_reply(&mut self, reply: Reply) {
        match reply {
            Reply::WrongFormat => Metrics::inc(&self.ctx.metrics.messages_rejected),
            Reply::InvalidCredentials => Metrics::inc(&self.ctx.metrics.actuations_refused),
            _ => {}
        }
        if self.ws.send(Message::text(reply.to_text())).await.is_err() {
            self.peer_done = true;
            self.session.handle_input(self.ctx.now(), Input::PeerGone);
        }
    }

    async fn send_close(&mut self, code: CloseCode) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        let frame = CloseFrame { code: WsCloseCode::from(code.0), reason: "".into() };
        let _ = self.ws.close(Some(frame)).await;
    }

    /// Makes this connection the device's route and waits for the binding to be recorded.
    async fn attach(&mut self, device: DeviceId) -> Result<(), StoreFailed> {
        let (reply, answer) = async_channel::bounded(1);
        let request = Request::Attach { session: self.id, device, mailbox: self.mail_tx.clone(), reply };
        self.ctx.hub.try_send(request).map_err(|_| StoreFailed)?;
        self.attached = true;
        let store_reply = answer.recv().await.map_err(|_| StoreFailed)?;
        store_reply.recv().await.unwrap_or(Err(StoreFailed))
    }

    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            let _ = self.ctx.hub.try_send(Request::Detach { session: self.id });
        }
    }

    /// Leaves the hub, hands back undelivered actuations, and completes the close handshake.
    async fn finish(mut self) {
        self.detach();
        self.mail_rx.close();
        while let Some(mail) = self.mail_rx.try_recv() {
            if let Mail::Deliver { device, body } = mail {
                let _ = self.ctx.hub.try_send(Request::Route { device, body, ack_to: None });
            }
        }
        if !self.peer_done {
            let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
            future::or(drain, async {
                smol::Timer::after(CLOSE_GRACE).await;
            })
            .await;
        }
    }
}
