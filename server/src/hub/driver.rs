//! The hub task: drives the core's [`Router`], which owns routing, held actuations and the
//! order of binding writes; this file only carries its facts in and its commands out.
//!
//! Connections talk to it through a channel; it answers through their mailboxes. Because every
//! registration and disconnection passes through here in order, the binding writes for one
//! device reach the store in the order they happened.
//!
//! With PostgreSQL, the router's lookups go to the forwarding thread, which sends each
//! actuation on to its device's instance or gives it back to be routed here, and actuations
//! forwarded by other instances come in from the inbox.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

use async_channel::Sender;
use futures_lite::future;
use iot_ws_core::router::{Command, Fact, Parcel, Router, RouterConfig};
use iot_ws_core::SessionId;

use crate::clock::Clock;
use crate::cluster::forward::Verdict;
use crate::cluster::inbox::Inbound;
use crate::cluster::Cluster;
use crate::hub::mail::{Address, HubLimits, HubRequest, Mail};
use crate::hub::queue::HubReceiver;
use crate::ops::metrics::Metrics;
use crate::store::{Store, StoreReply};

/// Most actuations held for one device between two of its connections.
const HELD_PER_DEVICE: usize = 256;

pub struct HubTask {
    router: Router<Address>,
    mailboxes: HashMap<SessionId, Attached>,
    /// Registrations attached so far, shared with the cluster's inbox (see `Inbound::Moved`).
    attaches: Arc<AtomicU64>,
    /// Where each attaching session hears its binding's record, until the router asks for it.
    store_replies: HashMap<SessionId, Sender<StoreReply>>,
    send_queue_bytes: usize,
    store: Arc<Store>,
    /// Other instances, when the bindings table is shared.
    cluster: Option<Cluster<Address>>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

/// A registered session: where its mail goes, and its number among registrations attached.
struct Attached {
    mailbox: Address,
    number: u64,
}

/// What wakes the hub.
enum Wake {
    Request(HubRequest),
    Verdict(Verdict<Address>),
    Inbound(Inbound),
    HoldExpired,
    Stop,
}

impl HubTask {
    pub fn new(
        store: Arc<Store>,
        cluster: Option<Cluster<Address>>,
        metrics: Arc<Metrics>,
        limits: HubLimits,
        clock: Clock,
    ) -> Self {
        let config = RouterConfig {
            hold_ms: limits.hold_secs * 1_000,
            hold_per_device: HELD_PER_DEVICE,
            hold_max_bytes: limits.hold_max_bytes,
            cluster: cluster.is_some(),
        };
        HubTask {
            router: Router::new(config),
            mailboxes: HashMap::new(),
            attaches: cluster.as_ref().map(|c| c.attaches.clone()).unwrap_or_default(),
            store_replies: HashMap::new(),
            send_queue_bytes: limits.send_queue_bytes,
            store,
            cluster,
            metrics,
            clock,
        }
    }

    /// Serves requests until every sender is gone.
    pub async fn run(mut self, requests: HubReceiver<HubRequest>) {
        // Kept across requests and moved only when the next expiry moves: registering a timer
        // wakes the reactor, and while anything is held every request would otherwise do it.
        let mut timer = smol::Timer::never();
        let mut armed = None;
        loop {
            let expiry = self.router.poll_timeout();
            if expiry != armed {
                match expiry {
                    Some(at) => timer.set_at(self.clock.instant(at)),
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
                match &self.cluster {
                    Some(Cluster { forwarder, inbox, .. }) => {
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
                Wake::Verdict(Verdict { lookup, forwarded_to }) => {
                    self.fact(Fact::Verdict { parcel: lookup, forwarded_to });
                }
                Wake::Inbound(Inbound::Actuation { device, body, hops }) => {
                    self.fact(Fact::Route(Parcel { device, body, ack: None, hops }));
                }
                Wake::Inbound(Inbound::Moved { device, attaches_seen }) => {
                    // Registered here again after the move was noticed: this one is newer.
                    let session = self.router.route_of(&device);
                    let newer = session.and_then(|s| self.mailboxes.get(&s)).is_some_and(|a| a.number > attaches_seen);
                    if !newer {
                        self.fact(Fact::MovedAway(device));
                    }
                }
                Wake::HoldExpired => {
                    armed = None;
                    self.router.handle_timeout(self.clock.now());
                }
                Wake::Stop => return,
            }
            self.publish_counts();
        }
    }

    fn handle(&mut self, request: HubRequest) {
        match request {
            HubRequest::Attach { session, device, mailbox, reply } => {
                // Counted before its binding is written (when the router asks), so that a move
                // noticed before this count cannot be newer than this registration's write.
                let number = self.attaches.fetch_add(1, SeqCst) + 1;
                self.mailboxes.insert(session, Attached { mailbox, number });
                self.store_replies.insert(session, reply);
                self.fact(Fact::Attach { session, device });
            }
            HubRequest::Detach { session, undelivered } => {
                self.mailboxes.remove(&session);
                let undelivered = undelivered.into_iter().map(|u| Parcel::new(u.device, u.body, u.ack_to)).collect();
                self.fact(Fact::Detach { session, undelivered });
            }
            HubRequest::Barrier(done) => {
                let _ = done.try_send(());
            }
            HubRequest::Route { device, body, ack_to } => self.fact(Fact::Route(Parcel::new(device, body, ack_to))),
        }
    }

    /// Feeds the router one fact and performs every command it gives, including those of the
    /// facts the commands themselves feed back (a delivery not taken, a lookup not queued).
    fn fact(&mut self, fact: Fact<Address>) {
        self.router.handle(self.clock.now(), fact);
        while let Some(command) = self.router.poll_command() {
            self.perform(command);
        }
    }

    fn perform(&mut self, command: Command<Address>) {
        match command {
            Command::RecordConnected { session, device } => {
                if let Some(reply) = self.store_replies.remove(&session) {
                    let _ = reply.try_send(self.store.upsert_connected(device));
                }
            }
            Command::RecordDisconnected(device) => self.store.mark_disconnected(device),
            Command::Forget(device) => self.store.forget(device),
            Command::Supersede(session) => {
                if let Some(old) = self.mailboxes.remove(&session) {
                    let _ = old.mailbox.try_send(Mail::Superseded);
                }
            }
            Command::Deliver { session, parcel, from_hold } => {
                if let Err(parcel) = self.deliver(session, parcel, from_hold) {
                    self.router.handle(self.clock.now(), Fact::NotTaken { session, parcel });
                }
            }
            Command::LookUp(parcel) => {
                let refused = match &self.cluster {
                    Some(cluster) => cluster.forwarder.lookup(parcel).err(),
                    None => Some(parcel),
                };
                // The database is far behind: decided here (in its turn) rather than queued
                // without bound.
                if let Some(parcel) = refused {
                    self.router.handle(self.clock.now(), Fact::NotLookedUp(parcel));
                }
            }
            Command::Ack { to, device, outcome } => {
                let _ = to.try_send(Mail::Routed { device, outcome });
            }
        }
    }

    /// Hands an actuation to a session's mailbox, unless the session is gone or so far behind
    /// that it is about to be closed for it. Handed-over held actuations are not weighed (see
    /// [`Mail::bytes`]).
    fn deliver(&self, session: SessionId, parcel: Parcel<Address>, from_hold: bool) -> Result<(), Parcel<Address>> {
        let Some(Attached { mailbox, .. }) = self.mailboxes.get(&session) else { return Err(parcel) };
        if !from_hold && mailbox.queued_bytes() > self.send_queue_bytes {
            return Err(parcel);
        }
        let Parcel { device, body, ack, hops } = parcel;
        match mailbox.try_send(Mail::Deliver { device, body, ack_to: ack, from_hold }) {
            Ok(()) => Ok(()),
            Err(Mail::Deliver { device, body, ack_to, .. }) => Err(Parcel { device, body, ack: ack_to, hops }),
            Err(_) => unreachable!("try_send gives back the mail it was given"),
        }
    }

    /// The router's counts, as the metrics show them.
    fn publish_counts(&self) {
        let counts = self.router.counts();
        let m = &self.metrics;
        m.registered_devices.store(self.router.connected() as i64, Relaxed);
        m.actuations_held.store(counts.held, Relaxed);
        m.actuations_not_connected.store(counts.not_connected, Relaxed);
        m.actuations_hold_full.store(counts.hold_full, Relaxed);
        m.actuations_dropped_after_hold.store(counts.dropped_after_hold, Relaxed);
        m.actuations_forwarded.store(counts.forwarded, Relaxed);
    }
}
