//! The hub task: the one owner of routing, held actuations and binding writes.
//!
//! Connections talk to it through a channel; it answers through their mailboxes. Because every
//! registration and disconnection passes through here in order, the binding writes for one
//! device reach the store in the order they happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use futures_lite::future;
use iot_ws_core::{Body, DeviceId, HeldActuations, Hub, Millis, RouteOutcome, SessionId};

use crate::metrics::Metrics;
use crate::store::{Store, StoreReply};

/// Most actuations waiting in one connection's mailbox; beyond it the device is not keeping up.
const MAILBOX_LIMIT: usize = 1_024;
/// Most actuations held for one device between two of its connections.
const HELD_PER_DEVICE: usize = 256;

/// What the hub tells a connection.
pub enum Mail {
    Deliver { device: DeviceId, body: Body },
    Superseded,
    Routed(RouteOutcome),
}

/// What a connection asks of the hub.
pub enum Request {
    /// Answers once every earlier request is handled.
    Barrier(Sender<()>),
    /// Make `session` the device's route and record the binding; the store's answer goes to
    /// `reply`.
    Attach { session: SessionId, device: DeviceId, mailbox: Sender<Mail>, reply: Sender<StoreReply> },
    /// The session ended or its device is gone.
    Detach { session: SessionId },
    /// Route an actuation; the outcome goes to `ack_to` when the sender asked for one.
    Route { device: DeviceId, body: Body, ack_to: Option<Sender<Mail>> },
}

pub struct HubTask {
    hub: Hub,
    mailboxes: HashMap<SessionId, Sender<Mail>>,
    held: HeldActuations,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    start: Instant,
}

impl HubTask {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, hold_secs: u64, start: Instant) -> Self {
        HubTask {
            hub: Hub::new(),
            mailboxes: HashMap::new(),
            held: HeldActuations::new(hold_secs * 1_000, HELD_PER_DEVICE),
            store,
            metrics,
            start,
        }
    }

    /// Serves requests until every sender is gone.
    pub async fn run(mut self, requests: Receiver<Request>) {
        loop {
            let expiry = self.held.poll_timeout();
            let timer = async {
                match expiry {
                    Some(at) => smol::Timer::at(self.start + std::time::Duration::from_millis(at.0)).await,
                    None => smol::Timer::never().await,
                };
                None
            };
            match future::or(async { Some(requests.recv().await) }, timer).await {
                Some(Ok(request)) => self.handle(request),
                Some(Err(_)) => return,
                None => {
                    let dropped = self.held.expire(self.now());
                    self.metrics
                        .actuations_dropped_after_hold
                        .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64)
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Attach { session, device, mailbox, reply } => self.attach(session, device, mailbox, reply),
            Request::Detach { session } => self.detach(session),
            Request::Barrier(done) => {
                let _ = done.try_send(());
            }
            Request::Route { device, body, ack_to } => {
                let outcome = self.route(device, body);
                if let Some(ack_to) = ack_to {
                    let _ = ack_to.try_send(Mail::Routed(outcome));
                }
            }
        }
    }

    fn attach(&mut self, session: SessionId, device: DeviceId, mailbox: Sender<Mail>, reply: Sender<StoreReply>) {
        let _ = reply.try_send(self.store.upsert_connected(device.clone()));
        if let Some(displaced) = self.hub.register(session, device.clone()) {
            if let Some(old) = self.mailboxes.remove(&displaced) {
                let _ = old.try_send(Mail::Superseded);
            }
        }
        // Held actuations queue behind the store's answer: the device hears 200 before them.
        for body in self.held.arrived(&device) {
            let _ = mailbox.try_send(Mail::Deliver { device: device.clone(), body });
        }
        self.mailboxes.insert(session, mailbox);
        self.set_registered_gauge();
    }

    fn detach(&mut self, session: SessionId) {
        self.mailboxes.remove(&session);
        if let Some(device) = self.hub.remove(session) {
            self.held.departed(self.now(), device.clone());
            self.store.mark_disconnected(device);
        }
        self.set_registered_gauge();
    }

    fn route(&mut self, device: DeviceId, body: Body) -> RouteOutcome {
        let target = self.hub.route(&device).and_then(|sid| self.mailboxes.get(&sid)).cloned();
        let outcome = match target {
            // A device this far behind is not reading: refuse rather than grow without bound.
            Some(mailbox) if mailbox.len() >= MAILBOX_LIMIT => RouteOutcome::NotConnected,
            Some(mailbox) => match mailbox.try_send(Mail::Deliver { device: device.clone(), body }) {
                Ok(()) => RouteOutcome::Delivered,
                // The connection ended before the hub heard of it: its device is between two
                // connections.
                Err(e) => match e.into_inner() {
                    Mail::Deliver { body, .. } => self.hold(device, body),
                    _ => RouteOutcome::NotConnected,
                },
            },
            None => self.hold(device, body),
        };
        let counter = match outcome {
            RouteOutcome::Delivered => &self.metrics.actuations_delivered,
            RouteOutcome::Held => &self.metrics.actuations_held,
            RouteOutcome::NotConnected => &self.metrics.actuations_not_connected,
        };
        Metrics::inc(counter);
        outcome
    }

    fn hold(&mut self, device: DeviceId, body: Body) -> RouteOutcome {
        if self.held.hold(self.now(), &device, body) {
            RouteOutcome::Held
        } else {
            RouteOutcome::NotConnected
        }
    }

    fn set_registered_gauge(&self) {
        self.metrics.registered_devices.store(self.hub.len() as i64, std::sync::atomic::Ordering::Relaxed);
    }
}
