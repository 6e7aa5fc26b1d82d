//! Actuations on their way through a connection: fed to its session, queued on its socket,
//! or taken back.
//!
//! "Delivered" means written to the device's socket, not queued: each actuation frame is
//! remembered with the position in the output stream where it ends, and acknowledged once the
//! socket has taken the stream that far. Those the socket never takes are given back when the
//! connection ends, to be held for the device's next connection.
//!
//! Most connections are idle most of the time, so all of this lives in one box that exists
//! only while some actuation is on its way (8 bytes per idle connection, not 90).

use std::collections::VecDeque;

use iot_ws_core::{Body, DeviceId};

use crate::hub::{Address, Undelivered};

struct InFlight {
    /// Where the frame ends in the connection's output stream.
    end: u64,
    actuation: Undelivered,
}

#[derive(Default)]
struct Lists {
    /// Actuation frames on the socket's queue, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Of each actuation fed to the session, until the session sends it or hands it back:
    /// where its ack goes, and whether it came from the hold queue.
    due: VecDeque<(Option<Address>, bool)>,
    /// Cut from the queue (or never queued) when the connection gave up on its peer, oldest
    /// first; all newer than what is still in flight.
    taken_back: Vec<Undelivered>,
}

/// A connection's actuations in transit.
#[derive(Default)]
pub struct Transit(Option<Box<Lists>>);

impl Transit {
    fn lists(&mut self) -> &mut Lists {
        self.0.get_or_insert_with(Box::default)
    }

    /// An actuation was fed to the session: its ack address and whether it came from the hold
    /// queue wait for the session's verdict on it.
    pub fn fed(&mut self, ack_to: Option<Address>, from_hold: bool) {
        self.lists().due.push_back((ack_to, from_hold));
    }

    /// The session sent (or handed back) the oldest actuation fed to it: what was noted for it.
    pub fn next_due(&mut self) -> (Option<Address>, bool) {
        self.0.as_mut().and_then(|l| l.due.pop_front()).unwrap_or((None, false))
    }

    /// An actuation frame was queued, ending at stream position `end`.
    pub fn queued(&mut self, end: u64, device: DeviceId, body: Body, ack_to: Option<Address>) {
        self.lists().in_flight.push_back(InFlight { end, actuation: Undelivered { device, body, ack_to } });
    }

    /// The socket has taken the stream up to `written`: the actuations it now holds whole.
    pub fn written(&mut self, written: u64) -> impl Iterator<Item = Undelivered> + '_ {
        let in_flight = self.0.as_mut().map(|l| &mut l.in_flight);
        let n = in_flight.as_ref().map_or(0, |q| q.iter().take_while(|f| f.end <= written).count());
        in_flight.into_iter().flat_map(move |q| q.drain(..n)).map(|f| f.actuation)
    }

    /// The stream was cut at `end`: the actuations whose frames end past it are taken back.
    pub fn cut(&mut self, end: u64) {
        let Some(lists) = self.0.as_mut() else { return };
        let keep = lists.in_flight.iter().take_while(|f| f.end <= end).count();
        let cut: Vec<Undelivered> = lists.in_flight.drain(keep..).map(|f| f.actuation).collect();
        lists.taken_back.extend(cut);
    }

    /// An actuation that will not be written (newer than all taken back so far).
    pub fn take_back(&mut self, actuation: Undelivered) {
        self.lists().taken_back.push(actuation);
    }

    /// What was never written, oldest first: what stayed in the stream, then what was taken
    /// back from it.
    pub fn into_undelivered(self) -> Vec<Undelivered> {
        let Some(lists) = self.0 else { return Vec::new() };
        let mut all: Vec<Undelivered> = lists.in_flight.into_iter().map(|f| f.actuation).collect();
        all.extend(lists.taken_back);
        all
    }

    /// Gives the box back once nothing is in transit: most connections are idle.
    pub fn shrink(&mut self) {
        if self.0.as_ref().is_some_and(|l| l.in_flight.is_empty() && l.due.is_empty() && l.taken_back.is_empty()) {
            self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u32) -> Body {
        Body::from_json_object(&format!(r#"{{"n":{n}}}"#)).unwrap()
    }

    fn bodies(items: impl IntoIterator<Item = Undelivered>) -> Vec<Body> {
        items.into_iter().map(|u| u.body).collect()
    }

    fn dev() -> DeviceId {
        DeviceId("d".into())
    }

    #[test]
    fn an_actuation_is_delivered_only_once_its_whole_frame_is_written() {
        let mut t = Transit::default();
        t.queued(10, dev(), body(1), None);
        t.queued(20, dev(), body(2), None);
        assert!(bodies(t.written(9)).is_empty());
        assert_eq!(bodies(t.written(19)), [body(1)]);
        assert_eq!(bodies(t.written(20)), [body(2)]);
        t.shrink();
        assert!(t.0.is_none(), "nothing kept once nothing is in transit");
    }

    #[test]
    fn a_cut_takes_back_what_ends_past_it_and_the_end_gives_back_all_unwritten_in_order() {
        let mut t = Transit::default();
        for (end, n) in [(10, 1), (20, 2), (30, 3), (40, 4)] {
            t.queued(end, dev(), body(n), None);
        }
        t.cut(20);
        t.take_back(Undelivered { device: dev(), body: body(5), ack_to: None });
        assert_eq!(bodies(t.written(12)), [body(1)]);
        t.shrink();
        assert!(t.0.is_some(), "kept while anything is in transit");
        assert_eq!(bodies(t.into_undelivered()), [body(2), body(3), body(4), body(5)]);
    }

    #[test]
    fn what_is_noted_for_each_fed_actuation_comes_back_in_order() {
        let mut t = Transit::default();
        assert!(!t.next_due().1);
        t.fed(None, true);
        t.fed(None, false);
        assert!(t.next_due().1);
        assert!(!t.next_due().1);
        t.shrink();
        assert!(t.0.is_none());
    }
}
