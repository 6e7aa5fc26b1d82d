//! What passes between connections and the hub: the requests connections send it, and the mail
//! it sends them (actuations, acks, "superseded").

use async_channel::Sender;
use iot_ws_core::{Body, DeviceId, RouteOutcome, SessionId};

use crate::hub::mailbox::{Letter, MailSender};
use crate::hub::queue::Weighed;
use crate::store::StoreReply;

/// A connection, as the hub and senders address it: its mailbox's sending end.
pub type Address = MailSender<Mail>;

/// What the hub tells a connection.
pub enum Mail {
    /// An actuation for the connection's device. Its sender hears "Delivered" (at `ack_to`)
    /// from the device's connection once the frame is written to the socket. `from_hold`: one
    /// held while the device was away, handed over at its registration.
    Deliver {
        device: DeviceId,
        body: Body,
        ack_to: Option<Address>,
        from_hold: bool,
    },
    Superseded,
    Routed {
        device: DeviceId,
        outcome: RouteOutcome,
    },
}

impl Letter for Mail {
    /// What the mail adds to the connection's unsent output, as `--send-queue-bytes` counts
    /// it. Actuations handed over from the hold queue at a registration do not count: the
    /// connection takes them as its socket makes room (they were bounded when held), and a
    /// device returning to a long backlog must not be closed for it.
    fn bytes(&self) -> usize {
        match self {
            Mail::Deliver { body, from_hold: false, .. } => body.as_str().len(),
            _ => 0,
        }
    }

    /// Actuations wait for room on the socket; a supersede or an ack is taken ahead of them.
    fn waits_for_room(&self) -> bool {
        matches!(self, Mail::Deliver { .. })
    }
}

/// An actuation a connection was given and did not write before it ended.
pub struct Undelivered {
    pub device: DeviceId,
    pub body: Body,
    pub ack_to: Option<Address>,
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

impl Weighed for HubRequest {
    /// The actuation bytes it carries, as the hub's queue counts them.
    fn bytes(&self) -> usize {
        match self {
            HubRequest::Route { body, .. } => body.as_str().len(),
            _ => 0,
        }
    }
}

/// What a connection asks of the hub.
pub enum HubRequest {
    /// Answers once every earlier request is handled.
    Barrier(Sender<()>),
    /// Make `session` the device's route and record the binding; the store's answer goes to
    /// `reply`.
    Attach { session: SessionId, device: DeviceId, mailbox: Address, reply: Sender<StoreReply> },
    /// The session ended or its device is gone; `undelivered` is what it was given and did not
    /// write, oldest first.
    Detach { session: SessionId, undelivered: Vec<Undelivered> },
    /// Route an actuation; the outcome goes to `ack_to` when the sender asked for one.
    Route { device: DeviceId, body: Body, ack_to: Option<Address> },
}
