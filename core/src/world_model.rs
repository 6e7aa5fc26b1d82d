//! The README's guarantees, as a model beside the [`World`](super::World): what became of each
//! accepted actuation, which acks its sender heard, and in what order things reached devices.
//!
//! Every actuation a session routes gets an id (its body is unique, so it is recognised by its
//! body wherever the router drops its ticket: handed over from the hold queue). Each id moves
//! through these states, and any other move is a violation:
//!
//! ```text
//! Routing --(Deliver)--> Given --(written)--> Written            (ends)
//!    |  ^                  |
//!    |  +---(given back)---+   (not taken, not written, undelivered)
//!    +--(LookUp)--> Lookup --(verdict)--> Routing
//!    +--(ack Held)--> Held --(handed over at attach)--> Given
//!    |                  +--(moved away: looked up again)--> Lookup
//!    |                  +--(hold time over: dropped, counted) (ends)
//!    +--(ack NotConnected)--> Refused                             (ends)
//!    +--(ack Forwarded)--> Forwarded                              (ends)
//! ```

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::message::{DeviceId, RouteOutcome};
use crate::router::RouteCounts;

/// Where an actuation is, as far as the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// With the router (or in the hub's queue on its way there).
    Routing,
    /// Being looked up on another instance.
    Lookup,
    /// Handed to session `n`: its mailbox, the session, or its socket's queue.
    Given(usize),
    /// In the router's hold queue (or dropped from it: the counts say how many).
    Held,
    /// Written to a device's socket.
    Written,
    /// Refused: "Device not connected" (or the hold queue was full).
    Refused,
    /// Forwarded to another instance.
    Forwarded,
}

impl Fate {
    fn is_end(self) -> bool {
        matches!(self, Fate::Written | Fate::Refused | Fate::Forwarded)
    }
}

/// One accepted actuation.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// Its device.
    pub device: DeviceId,
    /// The session that routed it (`None`: forwarded here by another instance).
    pub sender: Option<usize>,
    /// Whether its sender asked for an ack.
    pub asked: bool,
    /// Where it is.
    pub fate: Fate,
    /// Acks its sender heard for it.
    pub acks: u32,
    /// A superseded session had been handed it: the old connection writes it (or gives it back,
    /// to follow the device to its new session) independently of what reaches the new one
    /// meanwhile, the README's one exception to the order per device; the order checks leave
    /// it out.
    pub out_of_line: bool,
}

/// The model: every actuation's fate, and what reached devices and senders in which order.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Every accepted actuation, by id (ids follow routing order).
    pub tracked: Vec<Tracked>,
    /// Holds the router acknowledged, all told.
    pub holds: u64,
    /// Per session (socket), the actuations written to it, in order: (sender, id). Per
    /// socket, not per device: a superseded connection may still write what it was given
    /// while the new one writes newer actuations (two sockets, no order between them).
    pub written: BTreeMap<usize, Vec<(Option<usize>, usize)>>,
    /// Per sender and device, the ids whose acks it heard, in order, each with whether it
    /// heard "Forwarded".
    pub acked: BTreeMap<(usize, DeviceId), Vec<(usize, bool)>>,
    /// The first broken rule, if any.
    pub violation: Option<String>,
    /// Whether acks must reach each sender in routing order per device (on by default).
    pub ack_order: bool,
    /// Whether each socket must get each sender's actuations in routing order (on by default).
    pub write_order: bool,
}

impl Model {
    /// Session `session` is superseded: what it was handed and has not written is out of line
    /// from now on (see [`Tracked::out_of_line`]).
    pub fn superseded(&mut self, session: usize) {
        for t in self.tracked.iter_mut().filter(|t| t.fate == Fate::Given(session)) {
            t.out_of_line = true;
        }
    }

    /// A superseded session of `device` ended: what of the device the router still has (kept
    /// on its way to that session) is out of line too.
    pub fn in_flight_out_of_line(&mut self, device: &DeviceId) {
        for t in self.tracked.iter_mut().filter(|t| t.fate == Fate::Routing && t.device == *device) {
            t.out_of_line = true;
        }
    }

    /// `device` registered with another instance while later actuations of it were being
    /// looked up: what was held for it here follows it through a lookup of its own, asked after
    /// theirs, so it may reach the device after them (the README's second order exception).
    pub fn held_out_of_line_behind_lookups(&mut self, device: &DeviceId) {
        if !self.tracked.iter().any(|t| t.fate == Fate::Lookup && t.device == *device) {
            return;
        }
        for t in self.tracked.iter_mut().filter(|t| t.fate == Fate::Held && t.device == *device) {
            t.out_of_line = true;
        }
    }

    /// A superseded session gave `id` back (see [`Tracked::out_of_line`]).
    pub fn out_of_line(&mut self, id: usize) {
        if let Some(t) = self.tracked.get_mut(id) {
            t.out_of_line = true;
        }
    }

    /// Records a broken rule (the first one is kept).
    pub fn violate(&mut self, why: String) {
        if self.violation.is_none() {
            self.violation = Some(why);
        }
    }

    /// A session routed a new actuation: its id.
    pub fn accepted(&mut self, device: DeviceId, sender: Option<usize>, asked: bool) -> usize {
        self.tracked.push(Tracked { device, sender, asked, fate: Fate::Routing, acks: 0, out_of_line: false });
        self.tracked.len() - 1
    }

    /// Moves `id` to `to` if it is in one of `from`; else records a violation.
    pub fn moved(&mut self, id: usize, from: &[Fate], to: Fate, what: &str) {
        let Some(t) = self.tracked.get_mut(id) else {
            return self.violate(format!("{what}: unknown actuation {id}"));
        };
        let was = t.fate;
        if from.contains(&was) {
            t.fate = to;
            if to == Fate::Held {
                self.holds += 1;
            }
        } else {
            self.violate(format!("{what}: actuation {id} was {was:?}, expected one of {from:?}"));
        }
    }

    /// The router decided on `id` with an ack (`to_sender`: the sender asked and is owed one).
    pub fn router_acked(&mut self, id: usize, outcome: &RouteOutcome, to_sender: bool) {
        let to = match outcome {
            RouteOutcome::Held => Fate::Held,
            RouteOutcome::NotConnected => Fate::Refused,
            RouteOutcome::Forwarded { .. } => Fate::Forwarded,
            RouteOutcome::Delivered => return self.violate(format!("router acked {id} Delivered")),
        };
        self.moved(id, &[Fate::Routing], to, "router ack");
        if to_sender {
            self.sender_heard(id, to == Fate::Forwarded);
        }
    }

    /// Session `session`, whose device is `device`, wrote `id` to its socket.
    pub fn wrote(&mut self, id: usize, session: usize, device: Option<&DeviceId>, to_sender: bool) {
        let Some(t) = self.tracked.get(id) else { return self.violate(format!("wrote unknown {id}")) };
        if device != Some(&t.device) {
            let want = t.device.clone();
            return self.violate(format!("{id} for {want} written by session {session} of {device:?}"));
        }
        let entry = (t.sender, id);
        self.moved(id, &[Fate::Given(session)], Fate::Written, "written");
        self.written.entry(session).or_default().push(entry);
        if to_sender {
            self.sender_heard(id, false);
        }
    }

    fn sender_heard(&mut self, id: usize, forwarded: bool) {
        let t = &mut self.tracked[id];
        t.acks += 1;
        let (acks, asked, sender, device) = (t.acks, t.asked, t.sender, t.device.clone());
        if !asked || acks > 1 {
            self.violate(format!("actuation {id} (asked: {asked}) acked {acks} times"));
        }
        if let Some(sender) = sender {
            self.acked.entry((sender, device)).or_default().push((id, forwarded));
        }
    }

    /// After each step of the hub: every hold the router counted is one the model saw, and
    /// what it holds (or dropped) is what the model thinks is held.
    pub fn check_holds(&mut self, counts: RouteCounts, held_now: usize) {
        if counts.held != self.holds {
            self.violate(format!("router counted {} holds, acked {}", counts.held, self.holds));
        }
        let in_hold = self.tracked.iter().filter(|t| t.fate == Fate::Held).count() as u64;
        if in_hold != held_now as u64 + counts.dropped_after_hold {
            let dropped = counts.dropped_after_hold;
            self.violate(format!(
                "{in_hold} actuations held per the model; router: {held_now} held + {dropped} dropped"
            ));
        }
    }

    /// Once everything has settled: each actuation ended exactly once (written, refused,
    /// forwarded, or held / dropped after hold), each sender that asked heard exactly one ack,
    /// and devices got each sender's actuations in the order they were routed, as senders got
    /// their acks.
    pub fn check_end(&mut self) {
        for (id, t) in self.tracked.iter().enumerate() {
            if !(t.fate.is_end() || t.fate == Fate::Held) {
                let why = format!("actuation {id} for {} still {:?} after settling", t.device, t.fate);
                self.violation.get_or_insert(why);
            }
            if t.asked && t.acks != 1 {
                let why = format!("actuation {id} for {} asked for an ack and heard {}", t.device, t.acks);
                self.violation.get_or_insert(why);
            }
        }
        self.check_order();
    }

    fn check_order(&mut self) {
        if !self.write_order {
            return self.check_ack_order();
        }
        for (session, writes) in &self.written {
            let mut last: BTreeMap<Option<usize>, usize> = BTreeMap::new();
            for &(sender, id) in writes {
                if sender.is_none() || self.tracked[id].out_of_line {
                    continue;
                }
                if let Some(&before) = last.get(&sender) {
                    if before > id {
                        let why = format!("session {session} wrote {id} after {before}, both from {sender:?}");
                        self.violation.get_or_insert(why);
                    }
                }
                last.insert(sender, id);
            }
        }
        self.check_ack_order();
    }

    fn check_ack_order(&mut self) {
        if !self.ack_order {
            return;
        }
        for ((sender, device), ids) in &self.acked {
            // Those forwarded to another instance and those decided here are two lines: when
            // the device moves between instances while its actuations are on their way, an
            // ack from there may overtake one from here (the README says so).
            let line = |forwarded: bool| -> Vec<usize> {
                let tracked = &self.tracked;
                ids.iter().filter(|&&(id, f)| !tracked[id].out_of_line && f == forwarded).map(|&(id, _)| id).collect()
            };
            let (here, there) = (line(false), line(true));
            let broken = here.windows(2).chain(there.windows(2)).find(|p| p[0] > p[1]).map(|p| [p[0], p[1]]);
            if let Some(pair) = broken {
                let why = format!("session {sender} heard the ack of {} after that of {} ({device})", pair[1], pair[0]);
                self.violation.get_or_insert(why);
            }
        }
    }
}
