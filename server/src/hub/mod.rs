//! The hub: one task on the serving thread that owns routing. It drives the core's `Router`
//! (where every routing rule lives: supersede, hold, hand over, look up, forward, ack) and
//! carries its facts in and its commands out: connections' requests arrive on a queue bounded in
//! count and bytes (queue.rs); mail goes to each connection's mailbox (mailbox.rs, generic over
//! what it carries); binding writes go to the store, lookups to the cluster.

mod driver;
mod mail;
pub mod mailbox;
pub mod queue;

pub use driver::HubTask;
pub use mail::{Address, HubLimits, HubRequest, Mail, Undelivered};
