//! A world of real [`Session`]s around one real [`Router`], wired as the server wires them
//! (server/src/connection/ and server/src/hub/driver.rs), driven by a byte string: the property
//! tests and the `router` fuzz target share it.
//!
//! What the server does, and what stands for it here:
//! - a connection's outputs: `StoreBinding` becomes [`Fact::Attach`] and the session waits for
//!   its store reply (answered when the router's `RecordConnected` is performed: Ok, or now
//!   and then `StoreFailed`); `Route` and `Undelivered` become [`Fact::Route`]; a reply to an
//!   actuation goes on the socket's queue and is *written* (acked "Delivered") later;
//! - a connection that ends gives back what its socket did not write and what its mailbox
//!   still held, oldest first, in a [`Fact::Detach`] if it had attached, else as routes;
//! - the router's `Deliver` goes to the session's mailbox, or comes back as
//!   [`Fact::NotTaken`] when the mailbox is gone (superseded, detached, ending) or over its
//!   bound (the connection is then given up on, as for its send queue); `Supersede` and acks
//!   are mail too, and mail other than actuations may overtake actuations (a connection with
//!   no room takes only those);
//! - lookups are answered in order, later (forwarded, or `None`), or at once with `None`
//!   (the forwarder's queue is full); time jumps fire every timer.
//!
//! One difference, for the model's sake: every parcel the world hands the router carries a
//! [`Ticket`] (the router treats the ack handle as opaque), so every decision on it is seen;
//! only those whose sender asked reach the sender as [`Input::Routed`].

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::credentials::Credentials;
use crate::hub::SessionId;
use crate::message::{Body, DeviceId};
use crate::refusal::StoreFailed;
use crate::router::{Command, Fact, Parcel, Router, RouterConfig};
use crate::session::{Input, Session, SessionConfig};
use crate::time::Millis;

#[path = "world_conn.rs"]
mod conn;
#[path = "world_model.rs"]
mod model;

pub use model::{Fate, Model, Tracked};

use conn::{Conn, Mail};

/// The devices of the world: few, so that sessions meet.
pub const DEVICES: [&str; 3] = ["d0", "d1", "d2"];
/// Most sessions ever connected.
pub const MAX_SESSIONS: usize = 8;
/// Most steps one run takes.
pub const MAX_STEPS: usize = 400;
/// Outputs one input may cause in one session.
pub const MAX_OUTPUTS_PER_INPUT: usize = 8;

/// The router's handle on an actuation's sender: the actuation, and the session owed an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The actuation's id in the [`Model`].
    pub id: usize,
    /// The session that asked for an ack and has not heard one yet.
    pub ack_to: Option<usize>,
}

/// Reads the bytes as a sequence of small choices; zeros once they run out.
#[derive(Clone, Debug)]
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    /// Choices from these bytes.
    pub fn new(data: &'a [u8]) -> Self {
        Choices { data }
    }

    /// The next byte, or 0.
    pub fn byte(&mut self) -> u8 {
        let (first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        *first
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    /// Whether `num` out of 8 times.
    pub fn odds(&mut self, num: u8) -> bool {
        self.byte() % 8 < num
    }

    /// Whether the bytes ran out.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A hub request, in the order connections (and other instances) sent them.
#[derive(Clone, Debug)]
enum Request {
    Attach { session: usize, device: DeviceId },
    Detach { session: usize, undelivered: Vec<Parcel<Ticket>> },
    Route(Parcel<Ticket>),
    MovedAway(DeviceId),
}

/// N sessions, one router, their queues, and the model of what they must guarantee.
pub struct World<'a> {
    c: Choices<'a>,
    now: Millis,
    config: RouterConfig,
    /// Shared by every session, as a server shares it.
    session_config: Arc<SessionConfig>,
    router: Router<Ticket>,
    conns: Vec<Conn>,
    requests: VecDeque<Request>,
    lookups: VecDeque<Parcel<Ticket>>,
    /// Every actuation body the world made, and its id.
    ids: BTreeMap<String, usize>,
    /// Texts made so far (each actuation's body is unique).
    texts: u64,
    /// The newest session attached per device, and sessions told they are superseded or
    /// detached: the router must deliver only to the first, never to the others.
    newest: BTreeMap<DeviceId, usize>,
    stale: BTreeSet<usize>,
    /// The model: what became of each actuation, and the first broken rule.
    pub model: Model,
    /// What happened, step by step, when asked for (to read a failing case).
    pub trace: Option<Vec<String>>,
}

impl<'a> World<'a> {
    /// A world whose router's settings come from the first bytes.
    pub fn new(data: &'a [u8]) -> Self {
        let mut c = Choices::new(data);
        let config = RouterConfig {
            hold_ms: [0, 500, 5_000, 60_000][c.below(4)],
            hold_per_device: 1 + c.below(4),
            hold_max_bytes: [80, 300, 100_000][c.below(3)],
            cluster: c.odds(3),
        };
        let session_config = Arc::new(SessionConfig {
            actuator: Some(Credentials { username: "u".into(), password: "p".into() }),
            register_timeout_ms: 2_000,
        });
        World {
            c,
            now: Millis(0),
            config,
            session_config,
            router: Router::new(config),
            conns: Vec::new(),
            requests: VecDeque::new(),
            lookups: VecDeque::new(),
            ids: BTreeMap::new(),
            texts: 0,
            newest: BTreeMap::new(),
            stale: BTreeSet::new(),
            model: Model { ack_order: true, write_order: true, ..Model::default() },
            trace: None,
        }
    }

    /// Notes what happened, if a trace is kept.
    pub(crate) fn note(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>6} {}", self.now.0, what()));
        }
    }

    /// The router's settings.
    pub fn config(&self) -> RouterConfig {
        self.config
    }

    /// The router, to ask.
    pub fn router(&self) -> &Router<Ticket> {
        &self.router
    }

    /// Runs the steps the bytes choose, then lets everything settle and ends every session;
    /// returns the first broken rule.
    pub fn run(&mut self) -> Result<(), String> {
        for _ in 0..MAX_STEPS {
            if self.c.is_empty() || self.model.violation.is_some() {
                break;
            }
            self.step();
        }
        self.settle(false);
        self.settle(true);
        self.model.check_end();
        self.model.violation.clone().map_or(Ok(()), Err)
    }

    fn step(&mut self) {
        let n = self.conns.len();
        let pick = if n == 0 { 0 } else { self.c.below(n) };
        match self.c.below(20) {
            0 => self.connect(),
            1..=9 if n > 0 => self.conn_wake(pick),
            10..=12 => self.hub_one(),
            13 => self.hub_all(),
            14 => self.answer_lookup(),
            15 => {
                let ms = [1, 100, 600, 2_500, 70_000][self.c.below(5)];
                self.advance(ms);
            }
            16 if self.config.cluster => {
                let device = self.device();
                self.requests.push_back(Request::MovedAway(device));
            }
            17 if self.config.cluster => self.inbound(),
            _ => self.connect(),
        }
    }

    fn device(&mut self) -> DeviceId {
        DeviceId(DEVICES[self.c.below(DEVICES.len())].into())
    }

    fn connect(&mut self) {
        if self.conns.len() < MAX_SESSIONS {
            let cap = 1 + self.c.below(4);
            self.conns.push(Conn::new(Session::new(self.now, self.session_config.clone()), cap));
        }
    }

    /// An actuation forwarded here by another instance.
    fn inbound(&mut self) {
        let device = self.device();
        let body = self.new_body(&device);
        let id = self.model.accepted(device.clone(), None, false);
        self.ids.insert(body.as_str().into(), id);
        let ticket = Ticket { id, ack_to: None };
        self.requests.push_back(Request::Route(Parcel { device, body, ack: Some(ticket), hops: 1 }));
    }

    fn new_body(&mut self, device: &DeviceId) -> Body {
        self.texts += 1;
        let text = format!(r#"{{"content":{{"deviceId":"{device}"}},"n":{}}}"#, self.texts);
        Body::from_json_object(&text).expect("an object")
    }

    /// The clock jumps: the router's and every waiting session's timers fire.
    fn advance(&mut self, ms: u64) {
        self.now = self.now.plus(ms);
        self.router.handle_timeout(self.now);
        self.check_holds();
        for i in 0..self.conns.len() {
            let due = self.conns[i].session.poll_timeout().is_some_and(|t| t <= self.now);
            if due && self.conns[i].is_idle() {
                let now = self.now;
                self.conns[i].session.handle_timeout(now);
                self.drain(i);
            }
        }
    }

    /// Lets everything in flight arrive: requests, lookups, mail, the sockets' queues, store
    /// replies; with `end`, every session ends first.
    fn settle(&mut self, end: bool) {
        for _ in 0..64 {
            if end {
                for i in 0..self.conns.len() {
                    if self.conns[i].is_idle() && !self.conns[i].session.is_closed() {
                        let now = self.now;
                        self.conns[i].session.handle_input(now, Input::PeerGone);
                        self.drain(i);
                    }
                }
            }
            let busy = !self.requests.is_empty() || !self.lookups.is_empty() || self.conns.iter().any(|c| c.has_work());
            if !busy {
                return;
            }
            self.hub_all();
            while !self.lookups.is_empty() {
                self.answer_lookup();
            }
            for i in 0..self.conns.len() {
                for _ in 0..64 {
                    if !self.conns[i].has_work() {
                        break;
                    }
                    self.conn_settle(i);
                }
            }
        }
        self.model.violate(String::from("the world did not settle"));
    }

    fn hub_all(&mut self) {
        for _ in 0..256 {
            if self.requests.is_empty() {
                break;
            }
            self.hub_one();
        }
    }

    /// The hub handles its oldest request.
    fn hub_one(&mut self) {
        let Some(request) = self.requests.pop_front() else { return };
        let fact = match request {
            Request::Attach { session, device } => {
                self.conns[session].in_hub = true;
                self.newest.insert(device.clone(), session);
                Fact::Attach { session: SessionId(session as u64), device }
            }
            Request::Detach { session, undelivered } => {
                self.conns[session].in_hub = false;
                // Superseded before its detach came: its leftovers are out of line, and so is what
                // the router kept on its way to it (waiting for this detach).
                if !self.stale.insert(session) {
                    for parcel in &undelivered {
                        self.model.out_of_line(parcel.ack.map_or(usize::MAX, |t| t.id));
                    }
                    if let Some(device) = self.conns[session].device.clone() {
                        self.model.in_flight_out_of_line(&device);
                    }
                }
                Fact::Detach { session: SessionId(session as u64), undelivered }
            }
            Request::Route(parcel) => Fact::Route(parcel),
            Request::MovedAway(device) => {
                self.newest.remove(&device);
                self.model.held_out_of_line_behind_lookups(&device);
                Fact::MovedAway(device)
            }
        };
        self.fact(fact);
    }

    /// Feeds the router one fact and performs every command, as the hub task does.
    fn fact(&mut self, fact: Fact<Ticket>) {
        let parcels = match &fact {
            Fact::Detach { undelivered, .. } => undelivered.len(),
            _ => 1,
        };
        // What the router keeps undecided (waiting for a lookup ahead of it, or for an ending
        // session's detach) may all be decided by one fact.
        let undecided = self.model.tracked.iter().filter(|t| matches!(t.fate, Fate::Routing | Fate::Lookup)).count();
        self.note(|| format!("hub <- {fact:?}"));
        self.router.handle(self.now, fact);
        let bound = 8 + 2 * (self.config.hold_per_device + parcels + undecided);
        let mut performed = 0;
        while let Some(command) = self.router.poll_command() {
            performed += 1;
            if performed > bound {
                return self.model.violate(format!("one fact gave over {bound} commands"));
            }
            self.perform(command);
        }
        self.check_holds();
    }

    fn check_holds(&mut self) {
        self.model.check_holds(self.router.counts(), self.router.held());
    }

    /// The ticket of a parcel the router gives back without one (handed over from the hold).
    fn ticket(&mut self, parcel: &Parcel<Ticket>) -> Ticket {
        match parcel.ack {
            Some(ticket) => ticket,
            None => match self.ids.get(parcel.body.as_str()) {
                Some(&id) => Ticket { id, ack_to: None },
                None => {
                    self.model.violate(format!("the router made up {}", parcel.body.as_str()));
                    Ticket { id: usize::MAX, ack_to: None }
                }
            },
        }
    }

    fn perform(&mut self, command: Command<Ticket>) {
        self.note(|| format!("hub -> {command:?}"));
        match command {
            Command::RecordConnected { session, device } => {
                let i = session.0 as usize;
                if self.conns[i].device.as_ref() != Some(&device) {
                    self.model.violate(format!("binding of {device} recorded for session {i}"));
                }
                let stored = if self.c.odds(1) { Err(StoreFailed) } else { Ok(()) };
                self.conns[i].store_reply = Some(stored);
            }
            Command::RecordDisconnected(_) | Command::Forget(_) => {}
            Command::Supersede(session) => {
                let i = session.0 as usize;
                self.stale.insert(i);
                self.model.superseded(i);
                let conn = &mut self.conns[i];
                if conn.in_hub {
                    conn.in_hub = false;
                    conn.mail(Mail::Superseded);
                }
            }
            Command::Deliver { session, mut parcel, from_hold } => {
                let ticket = self.ticket(&parcel);
                parcel.ack = Some(ticket);
                self.delivered(session.0 as usize, parcel, from_hold);
            }
            Command::LookUp(mut parcel) => {
                let ticket = self.ticket(&parcel);
                parcel.ack = Some(ticket);
                self.model.moved(ticket.id, &[Fate::Routing, Fate::Held], Fate::Lookup, "look up");
                // The forwarder's queue is full: the hub task tells the router at once, as it
                // does; the router decides it in its turn.
                if self.c.odds(1) {
                    self.model.moved(ticket.id, &[Fate::Lookup], Fate::Routing, "not looked up");
                    self.router.handle(self.now, Fact::NotLookedUp(parcel));
                } else {
                    self.lookups.push_back(parcel);
                }
            }
            Command::Ack { to, device, outcome } => {
                self.model.router_acked(to.id, &outcome, to.ack_to.is_some());
                if let Some(sender) = to.ack_to {
                    self.conns[sender].mail(Mail::Routed { device, outcome });
                }
            }
        }
    }

    /// A `Deliver` command: to the session's mailbox, or given back.
    fn delivered(&mut self, i: usize, parcel: Parcel<Ticket>, from_hold: bool) {
        let id = parcel.ack.map_or(usize::MAX, |t| t.id);
        let from = if from_hold { Fate::Held } else { Fate::Routing };
        self.model.moved(id, &[from], Fate::Given(i), "deliver");
        let ok = self.newest.get(&parcel.device) == Some(&i)
            && !self.stale.contains(&i)
            && self.conns[i].device.as_ref() == Some(&parcel.device);
        if !ok {
            let why = format!("{} for {} delivered to session {i}, not the device's route", id, parcel.device);
            self.model.violate(why);
        }
        let conn = &mut self.conns[i];
        let full = !from_hold && conn.live_deliveries() > conn.cap;
        if conn.in_hub && conn.mail_open && !full {
            conn.mail(Mail::Deliver { device: parcel.device, body: parcel.body, ticket: parcel.ack, from_hold });
        } else {
            self.model.moved(id, &[Fate::Given(i)], Fate::Routing, "not taken");
            self.router.handle(self.now, Fact::NotTaken { session: SessionId(i as u64), parcel });
        }
    }

    /// The oldest lookup's verdict: forwarded, or route it here.
    fn answer_lookup(&mut self) {
        let Some(parcel) = self.lookups.pop_front() else { return };
        let id = parcel.ack.map_or(usize::MAX, |t| t.id);
        self.model.moved(id, &[Fate::Lookup], Fate::Routing, "verdict");
        let forwarded_to = self.c.odds(3).then(|| String::from("10.0.0.2:8080"));
        self.fact(Fact::Verdict { parcel, forwarded_to });
    }
}

/// Fuzz body: a world of sessions around one router, driven by the bytes; panics on the first
/// broken guarantee (see [`Model`]).
pub fn drive_router(data: &[u8]) {
    let mut world = World::new(data);
    if let Err(why) = world.run() {
        panic!("{why}");
    }
}
