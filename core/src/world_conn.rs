//! The connections of the [`World`]: each drives its [`Session`] as server/src/connection/ does.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Fate, Request, Ticket, World, DEVICES, MAX_OUTPUTS_PER_INPUT};
use crate::message::{Body, DeviceId, Reply, RouteOutcome};
use crate::refusal::StoreFailed;
use crate::router::Parcel;
use crate::session::{Input, Output, Session};
use crate::TokenRejected;

/// What the hub tells a connection.
#[derive(Clone, Debug)]
pub(super) enum Mail {
    Deliver { device: DeviceId, body: Body, ticket: Option<Ticket>, from_hold: bool },
    Superseded,
    Routed { device: DeviceId, outcome: RouteOutcome },
}

/// One connection: its session, mailbox, socket queue, and what the hub knows of it.
#[derive(Clone, Debug)]
pub(super) struct Conn {
    pub(super) session: Session,
    /// The device it asked to attach (`StoreBinding`); attached from then on.
    pub(super) device: Option<DeviceId>,
    /// Waiting for its binding's store reply: the connection does nothing else meanwhile.
    awaiting_store: bool,
    pub(super) store_reply: Option<Result<(), StoreFailed>>,
    mailbox: VecDeque<Mail>,
    /// Closed when the connection ends: mail to it is refused (the hub gets `NotTaken`).
    pub(super) mail_open: bool,
    /// The hub's mailbox table has it (from its attach to its supersede or detach).
    pub(super) in_hub: bool,
    /// Live deliveries its mailbox may hold before the connection is given up on.
    pub(super) cap: usize,
    /// The ticket of each actuation fed to the session, until it writes or hands it back.
    due: VecDeque<Ticket>,
    /// Actuation frames queued on the socket, not yet written.
    socket: VecDeque<(Ticket, Body)>,
    gave_up: bool,
    superseded: bool,
    finished: bool,
    /// The session said its routing ended (`Output::Detach`): the hub hears of it at the end.
    detach: bool,
}

impl Conn {
    pub(super) fn new(session: Session, cap: usize) -> Self {
        Conn {
            session,
            device: None,
            awaiting_store: false,
            store_reply: None,
            mailbox: VecDeque::new(),
            mail_open: true,
            in_hub: false,
            cap,
            due: VecDeque::new(),
            socket: VecDeque::new(),
            gave_up: false,
            detach: false,
            superseded: false,
            finished: false,
        }
    }

    pub(super) fn mail(&mut self, mail: Mail) {
        if self.mail_open {
            self.mailbox.push_back(mail);
        }
    }

    /// Actuations in the mailbox that count against its bound (not those from the hold).
    pub(super) fn live_deliveries(&self) -> usize {
        self.mailbox.iter().filter(|m| matches!(m, Mail::Deliver { from_hold: false, .. })).count()
    }

    /// Not blocked on its store reply, and not over.
    pub(super) fn is_idle(&self) -> bool {
        !self.awaiting_store && !self.finished
    }

    /// Something left to do before it can be left alone.
    pub(super) fn has_work(&self) -> bool {
        !self.finished
            && ((self.awaiting_store && self.store_reply.is_some())
                || (!self.awaiting_store && (!self.mailbox.is_empty() || !self.socket.is_empty())))
    }
}

impl World<'_> {
    /// Connection `i` wakes for whatever the bytes choose.
    pub(super) fn conn_wake(&mut self, i: usize) {
        if self.conns[i].finished {
            return;
        }
        if self.conns[i].awaiting_store {
            return self.store_reply(i);
        }
        if self.conns[i].live_deliveries() > self.conns[i].cap {
            return self.give_up(i);
        }
        match self.c.below(16) {
            0..=2 => self.text(i, Text::Register),
            3..=6 => self.text(i, Text::Actuation),
            7 => self.text(i, Text::Other),
            8..=10 => {
                let room = self.c.odds(6);
                self.take_mail(i, room);
            }
            11..=13 => self.write(i),
            14 => {
                let input = if self.c.odds(6) { Input::PeerGone } else { Input::Shutdown };
                self.peer_input(i, input);
            }
            _ => self.give_up(i),
        }
    }

    /// Connection `i` does what is left for it, in order: store reply, mail, writes.
    pub(super) fn conn_settle(&mut self, i: usize) {
        if self.conns[i].awaiting_store {
            self.store_reply(i)
        } else if self.conns[i].live_deliveries() > self.conns[i].cap {
            self.give_up(i)
        } else if !self.conns[i].mailbox.is_empty() {
            self.take_mail(i, true)
        } else {
            self.write(i)
        }
    }

    fn store_reply(&mut self, i: usize) {
        let Some(stored) = self.conns[i].store_reply.take() else { return };
        self.conns[i].awaiting_store = false;
        let now = self.now;
        self.conns[i].session.handle_input(now, Input::BindingStored(stored));
        self.drain(i);
    }

    fn text(&mut self, i: usize, what: Text) {
        let device = DEVICES[self.c.below(DEVICES.len())];
        let text = match what {
            Text::Register => format!(r#"{{"type":"device","deviceId":"{device}","deviceToken":"t"}}"#),
            Text::Actuation => {
                let body = self.new_body(&DeviceId(device.into()));
                let ack = self.c.odds(4);
                let creds = r#"{"username":"u","password":"p"}"#;
                format!(r#"{{"type":"actuation","credentials":{creds},"body":{},"ack":{ack}}}"#, body.as_str())
            }
            Text::Other => match self.c.below(6) {
                0..=3 => String::from(r#"{"type":"ping"}"#),
                4 => String::from("not json"),
                _ => String::from(r#"{"type":"actuation","credentials":{"username":"u","password":"x"},"body":{}}"#),
            },
        };
        self.peer_input(i, Input::Text(&text));
    }

    fn peer_input(&mut self, i: usize, input: Input<'_>) {
        self.note(|| format!("s{i} <- {input:?}"));
        let now = self.now;
        self.conns[i].session.handle_input(now, input);
        self.drain(i);
    }

    /// Takes the next mail: the oldest, or (no room on the socket) the oldest that is not an
    /// actuation.
    fn take_mail(&mut self, i: usize, room: bool) {
        let conn = &mut self.conns[i];
        let at = if room { Some(0) } else { conn.mailbox.iter().position(|m| !matches!(m, Mail::Deliver { .. })) };
        let Some(mail) = at.and_then(|at| conn.mailbox.remove(at)) else { return };
        self.note(|| format!("s{i} <- mail {mail:?}"));
        let conn = &mut self.conns[i];
        let now = self.now;
        let input = match mail {
            Mail::Deliver { device, body, ticket, .. } => {
                let ticket = ticket.expect("every delivery carries its ticket");
                conn.due.push_back(ticket);
                conn.session.handle_input(now, Input::Deliver { device, body });
                return self.drain(i);
            }
            Mail::Superseded => {
                conn.superseded = true;
                Input::Superseded
            }
            Mail::Routed { device, outcome } => {
                let open = !conn.session.is_closed();
                conn.session.handle_input(now, Input::Routed { device: device.clone(), outcome: outcome.clone() });
                let ack = Output::Send(Reply::Ack { device, status: outcome });
                let heard = conn.session.poll_output();
                if open && heard.as_ref() != Some(&ack) {
                    self.model.violate(format!("session {i} answered {heard:?} to its ack {ack:?}"));
                }
                if !open && heard.is_some() {
                    self.model.violate(format!("closed session {i} said {heard:?}"));
                }
                return self.drain(i);
            }
        };
        conn.session.handle_input(now, input);
        self.drain(i);
    }

    /// The socket takes the oldest queued actuation frame: written, and acked "Delivered".
    fn write(&mut self, i: usize) {
        let Some((ticket, _)) = self.conns[i].socket.pop_front() else { return };
        self.note(|| format!("s{i} wrote {ticket:?}"));
        let device = self.conns[i].device.clone();
        self.model.wrote(ticket.id, i, device.as_ref(), ticket.ack_to.is_some());
        if let Some(sender) = ticket.ack_to {
            let device = self.model.tracked[ticket.id].device.clone();
            self.conns[sender].mail(Mail::Routed { device, outcome: RouteOutcome::Delivered });
        }
    }

    /// The connection gives up on its peer: its unwritten frames are cut, then it ends.
    fn give_up(&mut self, i: usize) {
        self.conns[i].gave_up = true;
        self.peer_input(i, Input::PeerGone);
    }

    /// Performs the session's outputs, as connection/output.rs does, within a bound.
    pub(super) fn drain(&mut self, i: usize) {
        let mut closed = false;
        for n in 0.. {
            if n > MAX_OUTPUTS_PER_INPUT {
                return self.model.violate(format!("session {i}: over {MAX_OUTPUTS_PER_INPUT} outputs for one input"));
            }
            let Some(output) = self.conns[i].session.poll_output() else { break };
            self.note(|| format!("s{i} -> {output:?}"));
            match output {
                Output::Send(_) if closed => self.model.violate(format!("session {i} sent {output:?} after its close")),
                Output::Send(Reply::Actuation(body)) => self.queue_actuation(i, body),
                Output::Send(_) => {}
                Output::Close(_) => closed = true,
                Output::VerifyToken { .. } => {
                    let verdict = if self.c.odds(1) { Err(TokenRejected::Expired) } else { Ok(()) };
                    let now = self.now;
                    self.conns[i].session.handle_input(now, Input::TokenChecked(verdict));
                }
                Output::StoreBinding { device } => {
                    let conn = &mut self.conns[i];
                    conn.device = Some(device.clone());
                    conn.awaiting_store = true;
                    self.requests.push_back(Request::Attach { session: i, device });
                    // The connection waits for its store reply before it does anything else.
                    return;
                }
                Output::Detach { .. } => self.conns[i].detach = true,
                Output::Route { device, body, ack } => {
                    let id = self.model.accepted(device.clone(), Some(i), ack);
                    self.ids.insert(body.as_str().into(), id);
                    let ticket = Ticket { id, ack_to: ack.then_some(i) };
                    self.requests.push_back(Request::Route(Parcel::new(device, body, Some(ticket))));
                }
                Output::Undelivered { device, body } => {
                    let Some(ticket) = self.conns[i].due.pop_front() else {
                        return self.model.violate(format!("session {i} handed back {body:?}, never given"));
                    };
                    self.model.moved(ticket.id, &[Fate::Given(i)], Fate::Routing, "undelivered");

                    self.requests.push_back(Request::Route(Parcel::new(device, body, Some(ticket))));
                }
            }
        }
        if self.conns[i].session.is_closed() && !self.conns[i].finished {
            self.finish(i);
        }
    }

    fn queue_actuation(&mut self, i: usize, body: Body) {
        let conn = &mut self.conns[i];
        let Some(ticket) = conn.due.pop_front() else {
            return self.model.violate(format!("session {i} wrote {body:?}, never given"));
        };
        if conn.superseded {
            self.model.violate(format!("session {i} wrote {} after its supersede", ticket.id));
        }
        conn.socket.push_back((ticket, body));
    }

    /// The connection ends (connection/closing.rs): the last frames may go (not when given up on),
    /// then what was not written and what the mailbox held go back to the hub, oldest first.
    fn finish(&mut self, i: usize) {
        self.note(|| format!("s{i} ends"));
        self.conns[i].finished = true;
        self.conns[i].mail_open = false;
        if !self.conns[i].gave_up {
            let last = self.c.below(self.conns[i].socket.len() + 1);
            for _ in 0..last {
                self.write(i);
            }
        }
        let conn = &mut self.conns[i];
        let mut back: Vec<Parcel<Ticket>> = Vec::new();
        let device = conn.device.clone().unwrap_or_else(|| DeviceId("?".into()));
        for (ticket, body) in conn.socket.drain(..) {
            back.push(Parcel::new(device.clone(), body, Some(ticket)));
        }
        for mail in conn.mailbox.drain(..) {
            if let Mail::Deliver { device, body, ticket, .. } = mail {
                back.push(Parcel::new(device, body, ticket));
            }
        }
        let (attached, detach) = (conn.device.is_some(), conn.detach);
        for parcel in &back {
            let id = parcel.ack.map_or(usize::MAX, |t| t.id);
            self.model.moved(id, &[Fate::Given(i)], Fate::Routing, "given back at the end");
        }
        if attached != detach {
            self.model.violate(format!("session {i} ended: attached {attached}, detached {detach}"));
        }
        if detach {
            self.requests.push_back(Request::Detach { session: i, undelivered: back });
        } else {
            self.requests.extend(back.into_iter().map(Request::Route));
        }
    }
}

#[derive(Clone, Copy)]
enum Text {
    Register,
    Actuation,
    Other,
}
