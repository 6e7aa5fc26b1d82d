//! The hub's state machine: which connection gets each actuation, and what happens when none can.
//!
//! [`Session`](crate::Session) decides what one connection does; the router decides what joins
//! them. The host feeds it [`Fact`]s (a session attached or detached, an actuation to route, the
//! answer to a lookup, time passing) and performs the [`Command`]s it drains, as it does for a
//! session. It performs no I/O whatsoever, so the same rules run in the server's hub task, in a
//! property test beside real sessions, and in a fuzz target.
//!
//! The rules, in one place:
//!
//! - **Attach**: a session whose token verified becomes its device's route, and the host records
//!   the binding ([`Command::RecordConnected`]). A newer registration supersedes the older
//!   session of the same device ([`Command::Supersede`]); only the newest one receives.
//! - **Held actuations** of a device that left recently are handed to its new session at attach,
//!   oldest first, after the binding is recorded ([`Command::Deliver`] with `from_hold`).
//! - **Detach**: when the device's current session ends, the device is away: its actuations are
//!   held for the hold time, its binding cleared ([`Command::RecordDisconnected`]), and what the
//!   session was given but did not write is held first, in its order (it is older than anything
//!   held since). A session that was superseded (or moved away) is not the device's route: what
//!   it did not write is routed again, to wherever the device is now.
//! - **Route**: an actuation goes to the device's session here. A session whose host cannot take
//!   it ([`Fact::NotTaken`]: its queue is full, or it is ending) is ending: that actuation and
//!   every later one for the device wait for the session's detach, and are held (or refused)
//!   then, behind what the session gives back (which is older). So the device gets them in
//!   order and each sender hears its acks for a device in order. What waits is bounded as the
//!   hold is (its count per device, its byte total): an actuation beyond that could not be
//!   held anyway and is refused, its ack waiting in line with the others (up to
//!   [`ENDING_ACKS`] in all per session; past that, a sender flooding a device whose
//!   connection is ending hears at once, out of order).
//! - **Hold or refuse**: a device that is away has its actuations held, within a count per device
//!   and a byte total; beyond them, or for a device never seen, the sender hears
//!   "not connected". A device not back within the hold time is gone: what was held is dropped and
//!   counted.
//! - **Other instances** (when [`RouterConfig::cluster`]): an actuation for a device not here is
//!   looked up ([`Command::LookUp`]) and either forwarded to the device's instance or routed here
//!   as above once the host has the [`Fact::Verdict`]. While any actuation of a device is being
//!   looked up, its later ones are looked up too, even if it attached here meanwhile, so a
//!   device's actuations (and their acks) never overtake each other. One the host could not
//!   ask about ([`Fact::NotLookedUp`]) is routed here in its turn, once those before it are
//!   decided.
//! - **Moved away**: a device that registered with another instance is no longer this instance's:
//!   its session here is superseded without clearing the binding (the row is the other
//!   instance's), and what was held here follows it there.
//! - **Acks**: every routed actuation whose sender asked for one gets exactly one
//!   [`Command::Ack`] with its outcome, except those handed to a session: the session's host acks
//!   them once written (or gives them back).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use crate::held::{HeldActuations, Hold};
use crate::hub::{Hub, SessionId};
use crate::message::{Body, DeviceId, RouteOutcome};
use crate::time::Millis;

/// An actuation on its way, with where its ack goes (`A` is the host's handle on the sender).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parcel<A> {
    /// The device it is for.
    pub device: DeviceId,
    /// Its body, raw.
    pub body: Body,
    /// Where its outcome goes, when its sender asked for one.
    pub ack: Option<A>,
    /// How many times another instance forwarded it here already.
    pub hops: u8,
}

impl<A> Parcel<A> {
    /// A new actuation from a sender of this instance.
    pub fn new(device: DeviceId, body: Body, ack: Option<A>) -> Self {
        Parcel { device, body, ack, hops: 0 }
    }
}

/// A fact the host observed, fed to [`Router::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact<A> {
    /// A session's token verified: make it the device's route and record the binding.
    Attach {
        /// The session.
        session: SessionId,
        /// Its device.
        device: DeviceId,
    },
    /// A session ended (its [`Output::Detach`](crate::Output)); `undelivered` is what it was
    /// given and did not write, oldest first.
    Detach {
        /// The session.
        session: SessionId,
        /// Its leftovers, oldest first.
        undelivered: Vec<Parcel<A>>,
    },
    /// An actuation to route.
    Route(Parcel<A>),
    /// The host could not hand this [`Command::Deliver`] to its session (full or ending).
    NotTaken {
        /// The session it was for.
        session: SessionId,
        /// The actuation, given back.
        parcel: Parcel<A>,
    },
    /// The answer to a [`Command::LookUp`], in the order they were asked: forwarded to that
    /// instance, or `None` to route it here.
    Verdict {
        /// The actuation looked up.
        parcel: Parcel<A>,
        /// The instance it was forwarded to, named by its external address.
        forwarded_to: Option<String>,
    },
    /// The host could not ask about the [`Command::LookUp`] it polled last (its queue is
    /// full): the actuation is routed here, after the device's lookups still out. Feed it
    /// before polling the next command.
    NotLookedUp(Parcel<A>),
    /// The device registered with another instance.
    MovedAway(DeviceId),
}

/// A command for the host, drained with [`Router::poll_command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<A> {
    /// Record that the device is connected here, and tell `session` the result (its
    /// [`Input::BindingStored`](crate::Input)).
    RecordConnected {
        /// The registering session.
        session: SessionId,
        /// Its device.
        device: DeviceId,
    },
    /// Record that the device is no longer connected here.
    RecordDisconnected(DeviceId),
    /// The device's binding belongs to another instance now: stop writing it.
    Forget(DeviceId),
    /// Tell the session it is superseded (its [`Input::Superseded`](crate::Input)).
    Supersede(SessionId),
    /// Hand the actuation to the session (its [`Input::Deliver`](crate::Input)), which acks it
    /// once written; or feed [`Fact::NotTaken`] at once if it cannot take it.
    Deliver {
        /// The session.
        session: SessionId,
        /// The actuation.
        parcel: Parcel<A>,
        /// Held while the device was away and handed over at its attach: the session takes it
        /// as its socket makes room, and it never counts as the session falling behind.
        from_hold: bool,
    },
    /// Find the device's instance and forward the actuation there; feed the [`Fact::Verdict`].
    LookUp(Parcel<A>),
    /// Tell the sender what became of its actuation.
    Ack {
        /// The sender.
        to: A,
        /// The actuation's device.
        device: DeviceId,
        /// What became of it.
        outcome: RouteOutcome,
    },
}

/// What the router keeps for devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// How long a departed device's actuations are held, in milliseconds (0: none are).
    pub hold_ms: u64,
    /// Most actuations held for one device.
    pub hold_per_device: usize,
    /// All held actuations together, in body bytes.
    pub hold_max_bytes: usize,
    /// Whether other instances may hold devices (a shared bindings table): actuations for a
    /// device not here are looked up before being held or refused.
    pub cluster: bool,
}

/// What became of actuations the router decided on, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCounts {
    /// Held for a device that is away.
    pub held: u64,
    /// Refused: the device is not away (never seen, or its hold time is over).
    pub not_connected: u64,
    /// Refused: the device's hold queue, or the byte total, is full.
    pub hold_full: u64,
    /// Dropped from the hold queue: the device did not come back in time.
    pub dropped_after_hold: u64,
    /// Forwarded to another instance.
    pub forwarded: u64,
}

/// Most actuations and acks waiting for one ending session's detach.
pub const ENDING_ACKS: usize = 1_024;

/// What waits for an ending session's detach.
#[derive(Clone, Debug)]
enum Waiting<A> {
    /// To be held (or refused) then.
    Parcel(Parcel<A>),
    /// Refused already (beyond the hold's bounds): only its ack waits, to keep its place.
    Refused(A, DeviceId),
}

impl<A> Waiting<A> {
    fn bytes(&self) -> usize {
        match self {
            Waiting::Parcel(parcel) => parcel.body.as_str().len(),
            Waiting::Refused(..) => 0,
        }
    }
}

/// A place in a device's line of lookups.
#[derive(Clone, Debug)]
enum Turn<A> {
    /// The host is asking where the device is.
    Out,
    /// The host could not ask: routed here when its turn comes.
    Route(Parcel<A>),
    /// Refused already: only its ack waits for its turn.
    Refuse(A),
}

/// The hub: routing table, held actuations and lookups in flight. See the module's rules.
#[derive(Clone, Debug)]
pub struct Router<A> {
    hub: Hub,
    held: HeldActuations,
    cluster: bool,
    /// Devices with actuations being looked up, oldest first, each lookup with its number, and
    /// what waits behind them for its turn.
    in_lookup: BTreeMap<DeviceId, VecDeque<(u64, Turn<A>)>>,
    /// The number of the next lookup.
    next_lookup: u64,
    /// The numbers of the `LookUp` commands not yet polled, in order.
    unpolled_lookups: VecDeque<u64>,
    /// The device and number of the `LookUp` command polled last.
    polled_lookup: Option<(DeviceId, u64)>,
    /// Sessions that could not take an actuation, with what waits for their detach, in order.
    ending: BTreeMap<SessionId, Vec<Waiting<A>>>,
    /// Body bytes waiting in `ending`, over all sessions.
    ending_bytes: usize,
    hold_per_device: usize,
    hold_max_bytes: usize,
    counts: RouteCounts,
    now: Millis,
    commands: VecDeque<Command<A>>,
}

impl<A> Router<A> {
    /// A router with no device attached, starting at time 0.
    pub fn new(config: RouterConfig) -> Self {
        Router {
            hub: Hub::new(),
            held: HeldActuations::new(config.hold_ms, config.hold_per_device, config.hold_max_bytes),
            cluster: config.cluster,
            in_lookup: BTreeMap::new(),
            next_lookup: 0,
            unpolled_lookups: VecDeque::new(),
            polled_lookup: None,
            ending: BTreeMap::new(),
            ending_bytes: 0,
            hold_per_device: config.hold_per_device,
            hold_max_bytes: config.hold_max_bytes,
            counts: RouteCounts::default(),
            now: Millis(0),
            commands: VecDeque::new(),
        }
    }

    /// Feeds one fact observed at `now`. Then drain [`poll_command`](Router::poll_command).
    pub fn handle(&mut self, now: Millis, fact: Fact<A>) {
        self.now = self.now.max(now);
        match fact {
            Fact::Attach { session, device } => self.attach(session, device),
            Fact::Detach { session, undelivered } => self.detach(session, undelivered),
            Fact::Route(parcel) => self.route(parcel),
            Fact::NotTaken { session, parcel } => self.not_taken(session, parcel),
            Fact::Verdict { parcel, forwarded_to } => self.decided(parcel, forwarded_to),
            Fact::NotLookedUp(parcel) => self.not_looked_up(parcel),
            Fact::MovedAway(device) => self.moved_away(device),
        }
    }

    /// Tells the router that `now` has come: devices whose hold time is over are forgotten.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = self.now.max(now);
        let dropped = self.held.expire(self.now);
        self.counts.dropped_after_hold += dropped as u64;
    }

    /// The next command for the host; call after every `handle*` until it returns `None`.
    pub fn poll_command(&mut self) -> Option<Command<A>> {
        let command = self.commands.pop_front()?;
        if let Command::LookUp(parcel) = &command {
            let number = self.unpolled_lookups.pop_front().unwrap_or(u64::MAX);
            self.polled_lookup = Some((parcel.device.clone(), number));
        }
        Some(command)
    }

    /// When [`handle_timeout`](Router::handle_timeout) must be called next, if ever (possibly
    /// earlier: waking early is harmless).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.held.poll_timeout()
    }

    /// How many devices are attached here.
    pub fn connected(&self) -> usize {
        self.hub.len()
    }

    /// The device's current session here, if it is attached.
    pub fn route_of(&self, device: &DeviceId) -> Option<SessionId> {
        self.hub.route(device)
    }

    /// How many actuations are held, over all devices.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// What became of the actuations decided here so far.
    pub fn counts(&self) -> RouteCounts {
        self.counts
    }

    fn attach(&mut self, session: SessionId, device: DeviceId) {
        self.commands.push_back(Command::RecordConnected { session, device: device.clone() });
        if let Some(displaced) = self.hub.register(session, device.clone()) {
            self.commands.push_back(Command::Supersede(displaced));
        }
        // Behind the binding's record: the device hears its 200 before them.
        for body in self.held.arrived(&device) {
            let parcel = Parcel::new(device.clone(), body, None);
            self.commands.push_back(Command::Deliver { session, parcel, from_hold: true });
        }
    }

    fn detach(&mut self, session: SessionId, undelivered: Vec<Parcel<A>>) {
        // Newer than what it gave back: they go after.
        let waiting = self.ending.remove(&session).unwrap_or_default();
        self.ending_bytes -= waiting.iter().map(Waiting::bytes).sum::<usize>();
        let current = self.hub.remove(session);
        match &current {
            Some(device) => {
                self.held.departed(self.now, device.clone());
                self.commands.push_back(Command::RecordDisconnected(device.clone()));
                self.hold_first(undelivered);
            }
            // Superseded or moved: its actuations follow the device to its current session.
            None => {
                for parcel in undelivered {
                    self.route(parcel);
                }
            }
        }
        for waited in waiting {
            match waited {
                Waiting::Parcel(parcel) if current.is_some() => {
                    let hold = self.held.hold(self.now, &parcel.device, parcel.body.clone());
                    self.settle(parcel, hold);
                }
                Waiting::Parcel(parcel) => self.route(parcel),
                Waiting::Refused(to, device) if current.is_some() => {
                    self.commands.push_back(Command::Ack { to, device, outcome: RouteOutcome::NotConnected })
                }
                // Behind the parcels just routed again, which may be in the device's lookups.
                Waiting::Refused(to, device) => self.refused(to, device),
            }
        }
    }

    /// A session's unwritten actuations are older than anything held for its device since it
    /// stopped taking them: they go first, in their order.
    fn hold_first(&mut self, undelivered: Vec<Parcel<A>>) {
        let mut holds: Vec<Hold> = undelivered
            .iter()
            .rev()
            .map(|parcel| self.held.hold_first(self.now, &parcel.device, parcel.body.clone()))
            .collect();
        holds.reverse();
        for (parcel, hold) in undelivered.into_iter().zip(holds) {
            self.settle(parcel, hold);
        }
    }

    /// Delivers here, or asks where the device is.
    fn route(&mut self, parcel: Parcel<A>) {
        // Alone, the lookup in `route_here` is the only one: one map search per actuation.
        let ask = || self.hub.route(&parcel.device).is_none() || self.in_lookup.contains_key(&parcel.device);
        if self.cluster && ask() {
            let number = self.next_lookup;
            self.next_lookup += 1;
            self.in_lookup.entry(parcel.device.clone()).or_default().push_back((number, Turn::Out));
            self.unpolled_lookups.push_back(number);
            self.commands.push_back(Command::LookUp(parcel));
            return;
        }
        self.route_here(parcel);
    }

    /// The verdict on the device's oldest lookup out; then the actuations behind it that the
    /// host could not ask about have their turn.
    fn decided(&mut self, parcel: Parcel<A>, forwarded_to: Option<String>) {
        let device = parcel.device.clone();
        if let Some(waiting) = self.in_lookup.get_mut(&device) {
            if let Some(at) = waiting.iter().position(|(_, turn)| matches!(turn, Turn::Out)) {
                waiting.remove(at);
            }
        }
        match forwarded_to {
            Some(server) => {
                self.counts.forwarded += 1;
                self.ack(parcel, RouteOutcome::Forwarded { server });
            }
            None => self.route_here(parcel),
        }
        self.take_turns(&device);
    }

    /// The host could not ask about the lookup it polled last: it waits for those before it.
    fn not_looked_up(&mut self, parcel: Parcel<A>) {
        let device = parcel.device.clone();
        let polled = self.polled_lookup.take().filter(|(d, _)| *d == device).map(|(_, number)| number);
        let slot = polled.and_then(|number| {
            self.in_lookup.get_mut(&device)?.iter_mut().find(|(n, turn)| *n == number && matches!(turn, Turn::Out))
        });
        let Some((_, slot)) = slot else {
            // Not a lookup the router is waiting for: routed here as it is.
            self.route_here(parcel);
            return;
        };
        *slot = Turn::Route(parcel);
        self.take_turns(&device);
    }

    /// Decides, in order, what waits at the front of the device's line of lookups; stops at
    /// the first lookup still out.
    fn take_turns(&mut self, device: &DeviceId) {
        while let Some(waiting) = self.in_lookup.get_mut(device) {
            if matches!(waiting.front(), Some((_, Turn::Out))) {
                return;
            }
            match waiting.pop_front() {
                None => {
                    self.in_lookup.remove(device);
                    return;
                }
                Some((_, Turn::Route(parcel))) => self.route_here(parcel),
                Some((_, Turn::Refuse(to))) => self.commands.push_back(Command::Ack {
                    to,
                    device: device.clone(),
                    outcome: RouteOutcome::NotConnected,
                }),
                Some((_, Turn::Out)) => unreachable!("checked above"),
            }
        }
    }

    /// A refusal decided earlier, told now: behind the device's lookups if it has any.
    fn refused(&mut self, to: A, device: DeviceId) {
        match self.in_lookup.get_mut(&device) {
            Some(line) => line.push_back((u64::MAX, Turn::Refuse(to))),
            None => self.commands.push_back(Command::Ack { to, device, outcome: RouteOutcome::NotConnected }),
        }
    }

    /// Hands the actuation to the device's session here, or holds it, or refuses it.
    fn route_here(&mut self, parcel: Parcel<A>) {
        match self.hub.route(&parcel.device) {
            Some(session) if self.ending.contains_key(&session) => self.wait_for_detach(session, parcel),
            Some(session) => self.commands.push_back(Command::Deliver { session, parcel, from_hold: false }),
            None => {
                let hold = self.held.hold(self.now, &parcel.device, parcel.body.clone());
                self.settle(parcel, hold);
            }
        }
    }

    /// The device's session is ending (it stopped taking actuations, or fell too far behind):
    /// the device is between two sessions from now on, and its session's own leftovers will go
    /// ahead of what is held from here.
    fn not_taken(&mut self, session: SessionId, parcel: Parcel<A>) {
        if self.hub.route(&parcel.device) != Some(session) {
            // A stale session's refusal says nothing about the device's current one.
            let hold = self.held.hold(self.now, &parcel.device, parcel.body.clone());
            self.settle(parcel, hold);
            return;
        }
        if !self.held.is_away(&parcel.device) {
            self.held.departed(self.now, parcel.device.clone());
        }
        self.ending.entry(session).or_default();
        self.wait_for_detach(session, parcel);
    }

    /// Keeps an actuation for the device of an ending session until its detach, within the
    /// hold's own bounds (it could not be held beyond them); beyond them it is refused now, its
    /// ack waiting in line.
    fn wait_for_detach(&mut self, session: SessionId, parcel: Parcel<A>) {
        let size = parcel.body.as_str().len();
        let room = self.ending_bytes + size <= self.hold_max_bytes;
        let Some(waiting) = self.ending.get_mut(&session) else { return self.route_here(parcel) };
        let parcels = waiting.iter().filter(|w| matches!(w, Waiting::Parcel(_))).count();
        if room && parcels < self.hold_per_device {
            self.ending_bytes += size;
            waiting.push(Waiting::Parcel(parcel));
            return;
        }
        self.counts.hold_full += 1;
        let Some(to) = parcel.ack else { return };
        if waiting.len() < ENDING_ACKS {
            waiting.push(Waiting::Refused(to, parcel.device));
        } else {
            self.commands.push_back(Command::Ack { to, device: parcel.device, outcome: RouteOutcome::NotConnected });
        }
    }

    /// The device registered with another instance. Its session here is stale: superseded, its
    /// binding left alone. What was held for it here follows it there.
    fn moved_away(&mut self, device: DeviceId) {
        if let Some(session) = self.hub.route(&device) {
            self.hub.remove(session);
            self.commands.push_back(Command::Supersede(session));
        }
        self.commands.push_back(Command::Forget(device.clone()));
        for body in self.held.arrived(&device) {
            self.route(Parcel::new(device.clone(), body, None));
        }
    }

    /// Counts a hold attempt and tells the sender.
    fn settle(&mut self, parcel: Parcel<A>, hold: Hold) {
        let outcome = self.count(hold);
        self.ack(parcel, outcome);
    }

    /// Counts a hold attempt; returns what its sender hears.
    fn count(&mut self, hold: Hold) -> RouteOutcome {
        match hold {
            Hold::Held => {
                self.counts.held += 1;
                RouteOutcome::Held
            }
            Hold::NotAway => {
                self.counts.not_connected += 1;
                RouteOutcome::NotConnected
            }
            Hold::Full => {
                self.counts.hold_full += 1;
                RouteOutcome::NotConnected
            }
        }
    }

    fn ack(&mut self, parcel: Parcel<A>, outcome: RouteOutcome) {
        if let Some(to) = parcel.ack {
            self.commands.push_back(Command::Ack { to, device: parcel.device, outcome });
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
