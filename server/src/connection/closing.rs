//! How a connection ends: given up on a peer that does not take its output, or closed with
//! a grace for the last frames; either way what it did not write goes back to the hub.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use futures_lite::{future, Stream};
use iot_ws_core::{CloseCode, Input};
use smol::Timer;

use super::{Connection, GaveUp, Wake, CLOSE_GRACE};
use crate::hub::{HubRequest, Mail, Undelivered};
use crate::ops::logging::{self, Kind};
use crate::ops::metrics::Metrics;

impl Connection {
    /// The peer is not taking its output: what it was not given goes back to be held, a
    /// close 1008 follows if the stream is between two frames, and the connection ends
    /// without waiting for the peer.
    pub(super) fn give_up(&mut self, why: GaveUp) {
        if self.gave_up.is_some() {
            return;
        }
        self.gave_up = Some(why);
        let (counter, what) = match why {
            GaveUp::SendQueueFull => (&self.ctx.metrics.closed_send_queue_full, "send queue full"),
            GaveUp::WriteStalled => (&self.ctx.metrics.closed_write_stalled, "peer took no output"),
        };
        Metrics::inc(counter);
        let peer = self.peer();
        logging::limited(Kind::SlowPeer, module_path!(), || format!("{peer}: closed: {what}"));
        let end = self.ws.get_mut().cut_unsent();
        self.transit.cut(end);
        if self.ws.get_ref().unsent() == 0 && why == GaveUp::SendQueueFull {
            self.send_close(CloseCode::POLICY_VIOLATION);
        }
        self.close_sent = true;
        self.peer_done = true;
        self.session.handle_input(self.ctx.clock.now(), Input::PeerGone);
    }

    /// Lets the last frames go and the peer answer our close (within [`CLOSE_GRACE`], not at
    /// all for a peer given up on), then leaves the hub, handing back what was not written.
    pub(super) async fn finish(mut self) {
        // From here the hub holds the device's actuations instead of handing them over.
        if let Some(mail) = &self.mail {
            mail.close();
        }
        self.ctx.stop.forget(self.stop_key.take());
        if self.gave_up.is_some() {
            // The close frame, if the socket takes it now; the peer is not waited for.
            if let Some(Ok(_)) = future::poll_once(poll_fn(|cx| self.ws.get_mut().poll_send(cx))).await {
                self.on_sent();
            }
        } else {
            let grace = Instant::now() + CLOSE_GRACE;
            while (!self.peer_done || self.ws.get_ref().has_output()) && Instant::now() < grace {
                let wake = future::or(self.next_io(), async {
                    Timer::at(grace).await;
                    None
                });
                match wake.await {
                    Some(Wake::Sent(Ok(_))) => self.on_sent(),
                    Some(Wake::Frame(Some(Ok(_)))) => {}
                    // The peer has said all it will; our last frames may still go.
                    Some(Wake::Frame(_)) => self.peer_done = true,
                    // Nothing more can be written: done. (Looping on would spin: the socket
                    // fails again at once, and the task would keep the thread until the grace
                    // ran out. A peer that resets mid-frame found that: 1-2 s of a frozen server.)
                    Some(_) => {
                        self.peer_done = true;
                        let end = self.ws.get_mut().cut_unsent();
                        self.transit.cut(end);
                        break;
                    }
                    None => break,
                }
            }
        }
        // Oldest first: what stayed in the stream, what was taken back from it, then the mailbox.
        let mut in_stream = std::mem::take(&mut self.transit).into_undelivered();
        let queued = std::iter::from_fn(|| self.mail.as_ref().and_then(|m| m.try_recv(true)));
        in_stream.extend(queued.filter_map(|mail| match mail {
            Mail::Deliver { device, body, ack_to, .. } => Some(Undelivered { device, body, ack_to }),
            _ => None,
        }));
        if self.detach {
            self.to_hub(HubRequest::Detach { session: self.id, undelivered: in_stream }).await;
        } else {
            for Undelivered { device, body, ack_to } in in_stream {
                self.to_hub(HubRequest::Route { device, body, ack_to }).await;
            }
        }
    }

    /// The socket's next event while closing: output taken, or a frame (or the end).
    fn next_io(&mut self) -> impl std::future::Future<Output = Option<Wake>> + '_ {
        let sending = self.ws.get_ref().has_output();
        let reading = !self.peer_done;
        let ws = &mut self.ws;
        poll_fn(move |cx| {
            if sending {
                if let Poll::Ready(result) = ws.get_mut().poll_send(cx) {
                    return Poll::Ready(Some(Wake::Sent(result)));
                }
            }
            if reading {
                if let Poll::Ready(frame) = Pin::new(&mut *ws).poll_next(cx) {
                    return Poll::Ready(Some(Wake::Frame(frame)));
                }
            }
            Poll::Pending
        })
    }
}
