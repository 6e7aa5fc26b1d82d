//! The hub task: the one owner of routing, held actuations and binding writes.
//!
//! Connections talk to it through a channel; it answers through their mailboxes. Because every
//! registration and disconnection passes through here in order, the binding writes for one
//! device reach the store in the order they happened.
//!
//! With PostgreSQL, an actuation for a device that is not connected here goes to the
//! forwarding thread, which sends it on to the device's instance or gives it back to be held
//! or refused here. While any actuation of a device is with that thread, the device's later
//! actuations follow the same way, so they (and their acks) never overtake each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_channel::Sender;
use futures_lite::future;
use iot_ws_core::{Body, DeviceId, HeldActuations, Hold, Hub, Millis, RouteOutcome, SessionId};

use crate::forward::{Lookup, Verdict};
use crate::hub_queue::{HubReceiver, Weighed};
use crate::inbox::Inbound;
use crate::mailbox::MailSender;
use crate::metrics::Metrics;
use crate::store::{Store, StoreReply};

/// Most actuations held for one device between two of its connections.
const HELD_PER_DEVICE: usize = 256;

/// What the hub tells a connection.
pub enum Mail {
    /// An actuation for the connection's device. Its sender hears "Delivered" (at `ack_to`)
    /// from the device's connection once the frame is written to the socket. `from_hold`: one
    /// held while the device was away, handed over at its registration.
    Deliver {
        device: DeviceId,
        body: Body,
        ack_to: Option<MailSender>,
        from_hold: bool,
    },
    Superseded,
    Routed {
        device: DeviceId,
        outcome: RouteOutcome,
    },
}

impl Mail {
    /// What the mail adds to the connection's unsent output, as `--send-queue-bytes` counts
    /// it. Actuations handed over from the hold queue at a registration do not count: the
    /// connection takes them as its socket makes room (they were bounded when held), and a
    /// device returning to a long backlog must not be closed for it.
    pub fn bytes(&self) -> usize {
        match self {
            Mail::Deliver { body, from_hold: false, .. } => body.as_str().len(),
            _ => 0,
        }
    }
}

/// An actuation a connection was given and did not write before it ended.
pub struct Undelivered {
    pub device: DeviceId,
    pub body: Body,
    pub ack_to: Option<MailSender>,
}

/// Limits of what the hub keeps for devices.
#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    pub hold_secs: u64,
    /// All held actuations together, in body bytes.
    pub hold_max_bytes: usize,
    /// A connection's unsent output (its mailbox included); beyond it the hub stops handing
    /// actuations to it, since the connection is about to be closed for it.
    pub send_queue_bytes: usize,
}

impl Weighed for Request {
    /// The actuation bytes it carries, as the hub's queue counts them.
    fn bytes(&self) -> usize {
        match self {
            Request::Route { body, .. } => body.as_str().len(),
            _ => 0,
        }
    }
}

/// What a connection asks of the hub.
pub enum Request {
    /// Answers once every earlier request is handled.
    Barrier(Sender<()>),
    /// Make `session` the device's route and record the binding; the store's answer goes to
    /// `reply`.
    Attach { session: SessionId, device: DeviceId, mailbox: MailSender, reply: Sender<StoreReply> },
    /// The session ended or its device is gone; `undelivered` is what it was given and did not
    /// write, oldest first.
    Detach { session: SessionId, undelivered: Vec<Undelivered> },
    /// Route an actuation; the outcome goes to `ack_to` when the sender asked for one.
    Route { device: DeviceId, body: Body, ack_to: Option<MailSender> },
}

pub struct HubTask {
    hub: Hub,
    mailboxes: HashMap<SessionId, MailSender>,
    held: HeldActuations,
    send_queue_bytes: usize,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    start: Instant,
    /// Devices with actuations at the forwarding thread, and how many.
    forwarding: HashMap<DeviceId, usize>,
}

/// What wakes the hub.
enum Wake {
    Request(Request),
    Verdict(Verdict),
    Inbound(Inbound),
    HoldExpired,
    Stop,
}

impl HubTask {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, limits: HubLimits, start: Instant) -> Self {
        HubTask {
            hub: Hub::new(),
            mailboxes: HashMap::new(),
            held: HeldActuations::new(limits.hold_secs * 1_000, HELD_PER_DEVICE, limits.hold_max_bytes),
            send_queue_bytes: limits.send_queue_bytes,
            store,
            metrics,
            start,
            forwarding: HashMap::new(),
        }
    }

    /// Serves requests until every sender is gone.
    pub async fn run(mut self, requests: HubReceiver<Request>) {
        let store = self.store.clone();
        let forwarding = store.forwarding();
        // Kept across requests and moved only when the next expiry moves: registering a timer
        // wakes the reactor, and while anything is held every request would otherwise do it.
        let mut timer = smol::Timer::never();
        let mut armed = None;
        loop {
            let expiry = self.held.poll_timeout();
            if expiry != armed {
                match expiry {
                    Some(at) => timer.set_at(self.start + std::time::Duration::from_millis(at.0)),
                    None => timer = smol::Timer::never(),
                }
                armed = expiry;
            }
            let timer = async {
                (&mut timer).await;
                Wake::HoldExpired
            };
            let request = async { requests.recv().await.map_or(Wake::Stop, Wake::Request) };
            let from_db = async {
                match forwarding {
                    Some((forwarder, inbox)) => {
                        // A database thread that is gone (it never should be) only stops forwarding.
                        let verdict = async {
                            match forwarder.verdicts().recv().await {
                                Ok(verdict) => Wake::Verdict(verdict),
                                Err(_) => future::pending().await,
                            }
                        };
                        let inbound = async {
                            match inbox.recv().await {
                                Ok(inbound) => Wake::Inbound(inbound),
                                Err(_) => future::pending().await,
                            }
                        };
                        future::or(verdict, inbound).await
                    }
                    None => future::pending().await,
                }
            };
            match future::or(request, future::or(from_db, timer)).await {
                Wake::Request(request) => self.handle(request),
                Wake::Verdict(verdict) => self.decided(verdict),
                Wake::Inbound(Inbound::Actuation { device, body, hops }) => {
                    self.route(Lookup { device, body, hops, ack_to: None });
                }
                Wake::Inbound(Inbound::Moved(device)) => self.moved_away(device),
                Wake::HoldExpired => {
                    armed = None;
                    let dropped = self.held.expire(self.now());
                    self.metrics
                        .actuations_dropped_after_hold
                        .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Wake::Stop => return,
            }
        }
    }

    fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64)
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Attach { session, device, mailbox, reply } => self.attach(session, device, mailbox, reply),
            Request::Detach { session, undelivered } => self.detach(session, undelivered),
            Request::Barrier(done) => {
                let _ = done.try_send(());
            }
            Request::Route { device, body, ack_to } => self.route(Lookup { device, body, hops: 0, ack_to }),
        }
    }

    fn attach(&mut self, session: SessionId, device: DeviceId, mailbox: MailSender, reply: Sender<StoreReply>) {
        let _ = reply.try_send(self.store.upsert_connected(device.clone()));
        if let Some(displaced) = self.hub.register(session, device.clone()) {
            if let Some(old) = self.mailboxes.remove(&displaced) {
                let _ = old.try_send(Mail::Superseded);
            }
        }
        // Held actuations queue behind the store's answer: the device hears 200 before them.
        for body in self.held.arrived(&device) {
            let _ = mailbox.try_send(Mail::Deliver { device: device.clone(), body, ack_to: None, from_hold: true });
        }
        self.mailboxes.insert(session, mailbox);
        self.set_registered_gauge();
    }

    fn detach(&mut self, session: SessionId, undelivered: Vec<Undelivered>) {
        self.mailboxes.remove(&session);
        match self.hub.remove(session) {
            Some(device) => {
                self.held.departed(self.now(), device.clone());
                self.store.mark_disconnected(device);
                self.hold_undelivered(undelivered);
            }
            // Superseded or moved: its actuations follow the device to its current connection.
            None => {
                for Undelivered { device, body, ack_to } in undelivered {
                    self.route(Lookup { device, body, hops: 0, ack_to });
                }
            }
        }
        self.set_registered_gauge();
    }

    /// A connection's unwritten actuations are older than anything held for its device since
    /// it stopped taking mail: they go first, in their order.
    fn hold_undelivered(&mut self, undelivered: Vec<Undelivered>) {
        let now = self.now();
        let outcomes: Vec<Hold> =
            undelivered.iter().rev().map(|u| self.held.hold_first(now, &u.device, u.body.clone())).collect();
        for (u, hold) in undelivered.into_iter().zip(outcomes.into_iter().rev()) {
            let outcome = self.count_hold(hold);
            acknowledge(u.ack_to, u.device, outcome);
        }
    }

    /// The device registered with another instance. A connection of it still open here is
    /// stale: closed as superseded, without a disconnect (the row is the other instance's).
    /// What was held for it here follows it there.
    fn moved_away(&mut self, device: DeviceId) {
        if let Some(session) = self.hub.route(&device) {
            self.hub.remove(session);
            if let Some(mailbox) = self.mailboxes.remove(&session) {
                let _ = mailbox.try_send(Mail::Superseded);
            }
            self.set_registered_gauge();
        }
        self.store.forget(device.clone());
        for body in self.held.arrived(&device) {
            self.route(Lookup { device: device.clone(), body, hops: 0, ack_to: None });
        }
    }

    /// Delivers here, or asks the forwarding thread where the device is.
    fn route(&mut self, lookup: Lookup) {
        let here = self.hub.route(&lookup.device).is_some();
        let lookup = match self.store.forwarding() {
            Some((forwarder, _)) if !here || self.forwarding.contains_key(&lookup.device) => {
                let device = lookup.device.clone();
                match forwarder.lookup(lookup) {
                    Ok(()) => {
                        *self.forwarding.entry(device).or_default() += 1;
                        return;
                    }
                    // The database is far behind: decide here rather than queue without bound.
                    Err(lookup) => lookup,
                }
            }
            _ => lookup,
        };
        self.route_here(lookup);
    }

    /// The forwarding thread's answer, in the order it was asked.
    fn decided(&mut self, Verdict { lookup, forwarded_to }: Verdict) {
        if let Some(n) = self.forwarding.get_mut(&lookup.device) {
            *n -= 1;
            if *n == 0 {
                self.forwarding.remove(&lookup.device);
            }
        }
        match forwarded_to {
            Some(server) => {
                Metrics::inc(&self.metrics.actuations_forwarded);
                acknowledge(lookup.ack_to, lookup.device, RouteOutcome::Forwarded { server });
            }
            None => self.route_here(lookup),
        }
    }

    /// Hands the actuation to the device's connection here, which acks it once written, or
    /// holds it, or refuses it.
    fn route_here(&mut self, Lookup { device, body, ack_to, .. }: Lookup) {
        let target = self.hub.route(&device).and_then(|sid| self.mailboxes.get(&sid)).cloned();
        let (body, ack_to) = match target {
            Some(mailbox) if mailbox.queued_bytes() <= self.send_queue_bytes => {
                match mailbox.try_send(Mail::Deliver { device: device.clone(), body, ack_to, from_hold: false }) {
                    Ok(()) => return,
                    Err(Mail::Deliver { body, ack_to, .. }) => (body, ack_to),
                    Err(_) => unreachable!("try_send gives back the mail it was given"),
                }
            }
            Some(_) => (body, ack_to),
            None => (body, ack_to),
        };
        if self.hub.route(&device).is_some() && !self.held.is_away(&device) {
            // The device's connection is ending (it stopped taking mail, or is closed for
            // falling behind): the device is between two connections from now on. Its
            // connection's own leftovers will go ahead of what is held from here.
            self.held.departed(self.now(), device.clone());
        }
        let hold = self.held.hold(self.now(), &device, body);
        let outcome = self.count_hold(hold);
        acknowledge(ack_to, device, outcome);
    }

    /// Counts a hold attempt's outcome and says what the sender hears.
    fn count_hold(&self, hold: Hold) -> RouteOutcome {
        let (counter, outcome) = match hold {
            Hold::Held => (&self.metrics.actuations_held, RouteOutcome::Held),
            Hold::NotAway => (&self.metrics.actuations_not_connected, RouteOutcome::NotConnected),
            Hold::Full => (&self.metrics.actuations_hold_full, RouteOutcome::NotConnected),
        };
        Metrics::inc(counter);
        outcome
    }

    fn set_registered_gauge(&self) {
        self.metrics.registered_devices.store(self.hub.len() as i64, std::sync::atomic::Ordering::Relaxed);
    }
}

fn acknowledge(ack_to: Option<MailSender>, device: DeviceId, outcome: RouteOutcome) {
    if let Some(ack_to) = ack_to {
        let _ = ack_to.try_send(Mail::Routed { device, outcome });
    }
}
