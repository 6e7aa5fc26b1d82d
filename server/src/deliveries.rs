//! Actuations queued on a connection's socket and not yet taken by it.
//!
//! "Delivered" means written to the device's socket, not queued: each actuation frame is
//! remembered with the position in the output stream where it ends, and acknowledged once the
//! socket has taken the stream that far. Those the socket never takes are given back when the
//! connection ends, to be held for the device's next connection.

use std::collections::VecDeque;

use iot_ws_core::{Body, DeviceId};

use crate::hub_task::Undelivered;
use crate::mailbox::MailSender;

struct InFlight {
    /// Where the frame ends in the connection's output stream.
    end: u64,
    actuation: Undelivered,
}

/// The actuations in a connection's output queue, oldest first.
#[derive(Default)]
pub struct Deliveries(VecDeque<InFlight>);

impl Deliveries {
    /// An actuation frame was queued, ending at stream position `end`.
    pub fn queued(&mut self, end: u64, device: DeviceId, body: Body, ack_to: Option<MailSender>) {
        self.0.push_back(InFlight { end, actuation: Undelivered { device, body, ack_to } });
    }

    /// The socket has taken the stream up to `written`: the actuations it now holds whole.
    pub fn written(&mut self, written: u64) -> impl Iterator<Item = Undelivered> + '_ {
        let n = self.0.iter().take_while(|f| f.end <= written).count();
        self.0.drain(..n).map(|f| f.actuation)
    }

    /// The actuations whose frames end past `end` (the stream was cut there), oldest first.
    pub fn cut(&mut self, end: u64) -> Vec<Undelivered> {
        let keep = self.0.iter().take_while(|f| f.end <= end).count();
        self.0.drain(keep..).map(|f| f.actuation).collect()
    }

    /// What the socket never took, oldest first.
    pub fn into_undelivered(self) -> impl Iterator<Item = Undelivered> {
        self.0.into_iter().map(|f| f.actuation)
    }

    /// Gives back the queue's memory once it is empty: most connections are idle.
    pub fn shrink(&mut self) {
        if self.0.is_empty() && self.0.capacity() > 0 {
            self.0 = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u32) -> Body {
        Body::from_json_object(&format!(r#"{{"n":{n}}}"#)).unwrap()
    }

    fn ns(items: impl IntoIterator<Item = Undelivered>) -> Vec<String> {
        items.into_iter().map(|u| u.body.as_str().to_string()).collect()
    }

    #[test]
    fn an_actuation_is_delivered_only_once_its_whole_frame_is_written() {
        let mut d = Deliveries::default();
        d.queued(10, DeviceId("d".into()), body(1), None);
        d.queued(20, DeviceId("d".into()), body(2), None);
        assert!(ns(d.written(9)).is_empty());
        assert_eq!(ns(d.written(19)), [body(1).as_str()]);
        assert_eq!(ns(d.written(20)), [body(2).as_str()]);
        d.shrink();
        assert_eq!(d.0.capacity(), 0);
    }

    #[test]
    fn a_cut_gives_back_what_ends_past_it_and_the_end_gives_back_the_rest_in_order() {
        let mut d = Deliveries::default();
        for (end, n) in [(10, 1), (20, 2), (30, 3), (40, 4)] {
            d.queued(end, DeviceId("d".into()), body(n), None);
        }
        assert_eq!(ns(d.cut(20)), [body(3).as_str(), body(4).as_str()]);
        assert_eq!(ns(d.written(12)), [body(1).as_str()]);
        assert_eq!(ns(d.into_undelivered()), [body(2).as_str()]);
    }
}
