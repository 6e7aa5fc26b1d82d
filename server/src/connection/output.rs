//! A connection's commands from its session, performed: frames queued on the socket,
//! requests to the hub, token checks. Nothing here waits on the peer: frames are queued.

use std::time::SystemTime;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use futures_lite::future;
use iot_ws_core::{Body, CloseCode, DeviceId, Input, Output, Reply, StoreFailed};

use super::{Connection, GaveUp};
use crate::hub::{HubRequest, Undelivered};
use crate::ops::census::{self, Owner};
use crate::ops::logging::{self, client_text, Kind};
use crate::ops::metrics::Metrics;

impl Connection {
    /// Performs every pending command; results go straight back into the session.
    pub(super) async fn perform_outputs(&mut self) {
        while let Some(output) = self.session.poll_output() {
            let now = self.ctx.clock.now();
            match output {
                Output::Send(Reply::Actuation(body)) => self.send_actuation(body),
                Output::Send(reply) => self.send_reply(reply),
                Output::Close(code) => self.send_close(code),
                Output::VerifyToken { device, token } => {
                    let verify = || self.ctx.verifier.verify(&device, &token, SystemTime::now());
                    let verdict = census::scope(Owner::TokenCache, verify);
                    if let Err(reason) = verdict {
                        // The reason, never the token.
                        let peer = self.peer();
                        logging::limited(Kind::TokenRefused, module_path!(), || {
                            format!("{peer}: device {}: token refused: {reason}", client_text(device.as_str()))
                        });
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
                    self.session.handle_input(self.ctx.clock.now(), Input::BindingStored(stored));
                }
                // The hub hears of it in `finish`, with whatever was not written. It clears the
                // binding only while this session is the device's current one, which a session
                // that says `clear_binding: false` (superseded) no longer is.
                Output::Detach { .. } => self.detach = true,
                Output::Route { device, body, ack } => {
                    let ack_to = ack.then(|| self.address());
                    self.to_hub(HubRequest::Route { device, body, ack_to }).await;
                }
                Output::Undelivered { device, body } => {
                    let (ack_to, _) = self.transit.next_due();
                    self.to_hub(HubRequest::Route { device, body, ack_to }).await;
                }
            }
        }
    }

    /// Waits while the hub's queue is full: the connection stops reading meanwhile.
    pub(super) async fn to_hub(&self, request: HubRequest) {
        let _ = self.ctx.hub.send(request).await;
    }

    /// Queues a frame, noting when a queue that was empty starts waiting for the socket.
    pub(super) fn queue(&mut self, message: Message) -> bool {
        // The socket takes every write at once, so this completes in its first poll.
        let sent = future::block_on(future::poll_once(self.ws.send(message)));
        matches!(sent, Some(Ok(())))
    }

    /// Queues a text frame straight into the socket's queue (see `Socket::queue_text_frame`:
    /// tungstenite's output buffer would keep the frame's capacity for the connection's life);
    /// `false` once our close is sent, after which no data frame may follow.
    fn queue_text(&mut self, parts: [&str; 3]) -> bool {
        if self.close_sent {
            return false;
        }
        self.ws.get_mut().queue_text_frame(parts);
        true
    }

    /// Queues an actuation frame, or gives up on a peer that has fallen this far behind.
    fn send_actuation(&mut self, body: Body) {
        let (ack_to, from_hold) = self.transit.next_due();
        let Some(device) = self.session.registered_device().cloned() else { return };
        let backlog = self.ws.get_ref().unsent() + self.mail.as_ref().map_or(0, |m| m.bytes());
        // A backlog from the hold queue is taken as room allows, and never counts as falling
        // behind (see `Mail::bytes`).
        if !from_hold && backlog + body.as_str().len() > self.ctx.send_queue_bytes {
            // What the queue gives back is older than this one: it goes first.
            self.give_up(GaveUp::SendQueueFull);
            self.transit.take_back(Undelivered { device, body, ack_to });
            return;
        }
        // The body is kept, not the frame, in case it must be given back.
        if self.queue_text(body.delivery_text()) {
            let end = self.ws.get_ref().queued();
            self.transit.queued(end, device, body, ack_to);
        } else {
            self.transit.take_back(Undelivered { device, body, ack_to });
        }
    }

    fn send_reply(&mut self, reply: Reply) {
        match reply {
            Reply::WrongFormat => Metrics::inc(&self.ctx.metrics.messages_rejected),
            Reply::InvalidCredentials => {
                Metrics::inc(&self.ctx.metrics.actuations_refused);
                let peer = self.peer();
                logging::limited(Kind::CredentialsRefused, module_path!(), || {
                    format!("{peer}: actuation refused: wrong credentials")
                });
            }
            _ => {}
        }
        if !self.queue_text([&reply.to_text(), "", ""]) {
            self.peer_done = true;
            self.session.handle_input(self.ctx.clock.now(), Input::PeerGone);
            return;
        }
        if self.ws.get_ref().unsent() > self.ctx.send_queue_bytes {
            self.give_up(GaveUp::SendQueueFull);
        }
    }

    pub(super) fn send_close(&mut self, code: CloseCode) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        let frame = CloseFrame { code: WsCloseCode::from(code.0), reason: "".into() };
        let _ = future::block_on(future::poll_once(self.ws.close(Some(frame))));
    }

    /// Makes this connection the device's route and waits for the binding to be recorded.
    async fn attach(&mut self, device: DeviceId) -> Result<(), StoreFailed> {
        let (reply, answer) = async_channel::bounded(1);
        let request = HubRequest::Attach { session: self.id, device, mailbox: self.address(), reply };
        self.ctx.hub.send(request).await.map_err(|_| StoreFailed)?;
        let store_reply = answer.recv().await.map_err(|_| StoreFailed)?;
        store_reply.recv().await.unwrap_or(Err(StoreFailed))
    }
}
