//! One test per routing rule (see the list at the top of router.rs).

use super::*;
use alloc::vec;

/// Acks go to senders named by number.
type Sender = u32;

const HOLD_MS: u64 = 1_000;

fn config(cluster: bool) -> RouterConfig {
    RouterConfig { hold_ms: HOLD_MS, hold_per_device: 3, hold_max_bytes: 1_000, cluster }
}

fn dev(id: &str) -> DeviceId {
    DeviceId(id.into())
}

fn body(n: u32) -> Body {
    Body::from_json_object(&alloc::format!(r#"{{"n":{n}}}"#)).unwrap()
}

fn parcel(id: &str, n: u32, ack: Option<Sender>) -> Parcel<Sender> {
    Parcel::new(dev(id), body(n), ack)
}

/// A router with a fake clock; every step returns the commands it produced.
struct Harness {
    r: Router<Sender>,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        Harness { r: Router::new(config(false)), now: 0 }
    }
    fn cluster() -> Self {
        Harness { r: Router::new(config(true)), now: 0 }
    }
    fn fact(&mut self, fact: Fact<Sender>) -> Vec<Command<Sender>> {
        self.r.handle(Millis(self.now), fact);
        self.take()
    }
    fn attach(&mut self, session: u64, id: &str) -> Vec<Command<Sender>> {
        self.fact(Fact::Attach { session: SessionId(session), device: dev(id) })
    }
    fn detach(&mut self, session: u64, undelivered: Vec<Parcel<Sender>>) -> Vec<Command<Sender>> {
        self.fact(Fact::Detach { session: SessionId(session), undelivered })
    }
    fn route(&mut self, id: &str, n: u32, ack: Option<Sender>) -> Vec<Command<Sender>> {
        self.fact(Fact::Route(parcel(id, n, ack)))
    }
    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.r.handle_timeout(Millis(self.now));
    }
    fn take(&mut self) -> Vec<Command<Sender>> {
        core::iter::from_fn(|| self.r.poll_command()).take(64).collect()
    }
}

fn deliver(session: u64, id: &str, n: u32, ack: Option<Sender>, from_hold: bool) -> Command<Sender> {
    Command::Deliver { session: SessionId(session), parcel: parcel(id, n, ack), from_hold }
}

fn ack(to: Sender, id: &str, outcome: RouteOutcome) -> Command<Sender> {
    Command::Ack { to, device: dev(id), outcome }
}

#[test]
fn attach_records_the_binding_and_routes_to_the_session() {
    let mut h = Harness::new();
    assert_eq!(h.attach(1, "a"), [Command::RecordConnected { session: SessionId(1), device: dev("a") }]);
    assert_eq!(h.r.connected(), 1);
    assert_eq!(h.r.route_of(&dev("a")), Some(SessionId(1)));
    assert_eq!(h.route("a", 1, Some(7)), [deliver(1, "a", 1, Some(7), false)]);
}

#[test]
fn newer_registration_supersedes_the_older_session() {
    let mut h = Harness::new();
    h.attach(1, "a");
    assert_eq!(
        h.attach(2, "a"),
        [Command::RecordConnected { session: SessionId(2), device: dev("a") }, Command::Supersede(SessionId(1))]
    );
    assert_eq!(h.route("a", 1, None), [deliver(2, "a", 1, None, false)]);
    assert_eq!(h.r.connected(), 1);
}

#[test]
fn superseded_session_end_neither_clears_the_binding_nor_holds() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.attach(2, "a");
    // What the old session did not write follows the device to its new session.
    assert_eq!(h.detach(1, vec![parcel("a", 1, Some(7))]), [deliver(2, "a", 1, Some(7), false)]);
    assert_eq!(h.r.route_of(&dev("a")), Some(SessionId(2)));
}

#[test]
fn detach_clears_the_binding_and_holds_the_devices_actuations() {
    let mut h = Harness::new();
    h.attach(1, "a");
    assert_eq!(h.detach(1, vec![]), [Command::RecordDisconnected(dev("a"))]);
    assert_eq!(h.r.connected(), 0);
    assert_eq!(h.route("a", 1, Some(7)), [ack(7, "a", RouteOutcome::Held)]);
    assert_eq!(h.r.held(), 1);
    assert_eq!(h.r.counts().held, 1);
}

#[test]
fn held_actuations_are_handed_over_at_attach_after_the_binding_in_order() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.detach(1, vec![]);
    h.route("a", 1, None);
    h.route("a", 2, Some(7));
    assert_eq!(
        h.attach(2, "a"),
        [
            Command::RecordConnected { session: SessionId(2), device: dev("a") },
            deliver(2, "a", 1, None, true),
            deliver(2, "a", 2, None, true),
        ]
    );
    assert_eq!(h.r.held(), 0);
}

#[test]
fn a_sessions_leftovers_are_held_ahead_of_later_actuations_in_their_order() {
    let mut h = Harness::new();
    h.attach(1, "a");
    // The session stopped taking actuations: one is given back and held...
    let given_back = h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 3, None) });
    assert!(given_back.is_empty(), "{given_back:?}");
    // ...then it ends with two older ones unwritten.
    let done = h.detach(1, vec![parcel("a", 1, Some(7)), parcel("a", 2, Some(8))]);
    assert_eq!(
        done,
        [Command::RecordDisconnected(dev("a")), ack(7, "a", RouteOutcome::Held), ack(8, "a", RouteOutcome::Held),]
    );
    let handed = h.attach(2, "a");
    let order: Vec<_> = handed
        .iter()
        .filter_map(|c| match c {
            Command::Deliver { parcel, .. } => Some(parcel.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(order, [body(1), body(2), body(3)]);
}

#[test]
fn a_session_that_cannot_take_an_actuation_is_ending_and_what_follows_waits_for_its_detach() {
    let mut h = Harness::new();
    h.attach(1, "a");
    assert_eq!(h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 2, Some(7)) }), []);
    // Still its route (the session has not ended), but later actuations are not offered to
    // it: they wait, undecided, for its detach.
    assert_eq!(h.r.route_of(&dev("a")), Some(SessionId(1)));
    assert_eq!(h.route("a", 3, Some(7)), []);
    assert_eq!(h.r.held(), 0);
    // Its leftover (older) is held and acked first, then the two that waited.
    assert_eq!(
        h.detach(1, vec![parcel("a", 1, Some(7))]),
        [
            Command::RecordDisconnected(dev("a")),
            ack(7, "a", RouteOutcome::Held),
            ack(7, "a", RouteOutcome::Held),
            ack(7, "a", RouteOutcome::Held),
        ]
    );
    let handed: Vec<_> = h
        .attach(2, "a")
        .into_iter()
        .filter_map(|c| match c {
            Command::Deliver { parcel, .. } => Some(parcel.body),
            _ => None,
        })
        .collect();
    assert_eq!(handed, [body(1), body(2), body(3)]);
}

#[test]
fn what_waits_for_an_ending_session_is_bounded_as_the_hold_is() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 0, Some(7)) });
    h.route("a", 1, Some(7));
    h.route("a", 2, Some(7));
    // The device could hold 3: a fourth could never be held, so it is refused now, and its ack
    // waits in line behind the others'.
    assert_eq!(h.route("a", 3, Some(7)), []);
    assert_eq!(h.r.counts().hold_full, 1);
    let acks = h.detach(1, vec![]);
    let held = ack(7, "a", RouteOutcome::Held);
    assert_eq!(acks[1..], [held.clone(), held.clone(), held, ack(7, "a", RouteOutcome::NotConnected)]);
    // In bytes too: a body larger than the hold's total never waits.
    let mut h = Harness { r: Router::new(RouterConfig { hold_max_bytes: 5, ..config(false) }), now: 0 };
    h.attach(1, "a");
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 0, Some(7)) });
    // Refused when it came, not when the session ends.
    assert_eq!(h.r.counts().hold_full, 1);
    assert_eq!(h.detach(1, vec![])[1..], [ack(7, "a", RouteOutcome::NotConnected)]);
    assert_eq!(h.r.held(), 0);
}

#[test]
fn what_waited_for_a_detach_gives_its_bytes_back_to_the_next_ending_session() {
    // Room for one waiting body ({"n":1}: 7 bytes) at a time.
    let mut h = Harness { r: Router::new(RouterConfig { hold_max_bytes: 10, ..config(false) }), now: 0 };
    h.attach(1, "a");
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 1, Some(7)) });
    h.detach(1, vec![]);
    h.attach(2, "a");
    // The first body left the line at the detach (and the hold at the attach): room again.
    h.fact(Fact::NotTaken { session: SessionId(2), parcel: parcel("a", 2, Some(7)) });
    assert_eq!(h.r.counts().hold_full, 0);
    assert_eq!(h.detach(2, vec![]), [Command::RecordDisconnected(dev("a")), ack(7, "a", RouteOutcome::Held)]);
}

#[test]
fn in_a_cluster_what_waited_for_the_devices_own_session_is_held_at_its_detach() {
    let mut h = Harness::cluster();
    h.attach(1, "a");
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 1, Some(7)) });
    // The device was here until now: held for it here, not looked up elsewhere.
    assert_eq!(h.detach(1, vec![]), [Command::RecordDisconnected(dev("a")), ack(7, "a", RouteOutcome::Held)]);
    assert_eq!(h.r.held(), 1);
}

#[test]
fn a_refusal_that_waited_for_a_moved_session_is_acked_behind_what_it_waited_behind() {
    let mut h = Harness { r: Router::new(RouterConfig { hold_per_device: 1, ..config(true) }), now: 0 };
    h.attach(1, "a");
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 1, Some(7)) });
    // Beyond what the device could hold: refused now, its ack waiting behind the first's.
    assert_eq!(h.route("a", 2, Some(7)), []);
    h.fact(Fact::MovedAway(dev("a")));
    // The first follows the device (a lookup); the second's ack waits for that lookup.
    assert_eq!(h.detach(1, vec![]), [Command::LookUp(parcel("a", 1, Some(7)))]);
    let decided = h.fact(Fact::Verdict { parcel: parcel("a", 1, Some(7)), forwarded_to: Some("b:1".into()) });
    assert_eq!(
        decided,
        [ack(7, "a", RouteOutcome::Forwarded { server: "b:1".into() }), ack(7, "a", RouteOutcome::NotConnected)]
    );
}

#[test]
fn a_refusal_that_waited_for_the_devices_own_session_is_acked_at_its_detach_ahead_of_later_lookups() {
    let mut h = Harness { r: Router::new(RouterConfig { hold_per_device: 1, ..config(true) }), now: 0 };
    h.route("a", 0, Some(7));
    h.attach(1, "a");
    h.route("a", 1, Some(7));
    h.route("a", 2, Some(7));
    // The first lookup finds the device here; its session cannot take it.
    assert_eq!(
        h.fact(Fact::Verdict { parcel: parcel("a", 0, Some(7)), forwarded_to: None }),
        [deliver(1, "a", 0, Some(7), false)]
    );
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 0, Some(7)) });
    // The second could not be held beside it: refused, its ack waiting for the detach.
    assert_eq!(h.fact(Fact::Verdict { parcel: parcel("a", 1, Some(7)), forwarded_to: None }), []);
    // At the detach both are told, in their order, though the third is still being looked up.
    assert_eq!(
        h.detach(1, vec![]),
        [
            Command::RecordDisconnected(dev("a")),
            ack(7, "a", RouteOutcome::Held),
            ack(7, "a", RouteOutcome::NotConnected)
        ]
    );
    let third = h.fact(Fact::Verdict { parcel: parcel("a", 2, Some(7)), forwarded_to: None });
    assert_eq!(third, [ack(7, "a", RouteOutcome::NotConnected)]);
}

#[test]
fn a_stale_sessions_give_back_while_the_device_is_ending_is_held_for_it_in_order() {
    let mut h = Harness::new();
    h.attach(1, "a");
    assert_eq!(h.route("a", 1, Some(7)), [deliver(1, "a", 1, Some(7), false)]);
    h.attach(2, "a");
    assert_eq!(h.route("a", 2, Some(7)), [deliver(2, "a", 2, Some(7), false)]);
    // Session 2 cannot take its actuation: the device is between two sessions from now on...
    assert_eq!(h.fact(Fact::NotTaken { session: SessionId(2), parcel: parcel("a", 2, Some(7)) }), []);
    // ...so the superseded session's give-back is held for it, not refused.
    let stale = h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 1, Some(7)) });
    assert_eq!(stale, [ack(7, "a", RouteOutcome::Held)]);
    assert_eq!(h.detach(2, vec![]), [Command::RecordDisconnected(dev("a")), ack(7, "a", RouteOutcome::Held)]);
    let handed = h.attach(3, "a");
    assert_eq!(handed[1..], [deliver(3, "a", 1, None, true), deliver(3, "a", 2, None, true)]);
}

#[test]
fn past_its_bound_an_ending_session_lets_acks_go_at_once() {
    let mut h = Harness { r: Router::new(RouterConfig { hold_per_device: 0, ..config(false) }), now: 0 };
    h.attach(1, "a");
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 0, Some(7)) });
    for n in 1..ENDING_ACKS as u32 {
        assert_eq!(h.route("a", n, Some(7)), []);
    }
    assert_eq!(h.route("a", 0, Some(7)), [ack(7, "a", RouteOutcome::NotConnected)]);
    h.r.handle(Millis(h.now), Fact::Detach { session: SessionId(1), undelivered: vec![] });
    let acks = core::iter::from_fn(|| h.r.poll_command()).filter(|c| matches!(c, Command::Ack { .. })).count();
    assert_eq!(acks, ENDING_ACKS);
}

#[test]
fn a_superseded_ending_session_sends_what_waited_to_the_new_one() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 1, None) });
    h.attach(2, "a");
    assert_eq!(h.detach(1, vec![]), [deliver(2, "a", 1, None, false)]);
}

#[test]
fn a_stale_session_that_cannot_take_does_not_make_the_device_away() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.attach(2, "a");
    // Session 1 was superseded: its refusal says nothing about session 2.
    let commands = h.fact(Fact::NotTaken { session: SessionId(1), parcel: parcel("a", 1, Some(7)) });
    assert_eq!(commands, [ack(7, "a", RouteOutcome::NotConnected)]);
    assert_eq!(h.r.counts().not_connected, 1);
}

#[test]
fn a_device_never_seen_is_not_connected() {
    let mut h = Harness::new();
    assert_eq!(h.route("a", 1, Some(7)), [ack(7, "a", RouteOutcome::NotConnected)]);
    assert_eq!(h.route("a", 2, None), []);
    assert_eq!(h.r.counts().not_connected, 2);
    assert_eq!(h.r.held(), 0);
}

#[test]
fn hold_limits_refuse_beyond_the_count_per_device() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.detach(1, vec![]);
    for n in 0..3 {
        assert_eq!(h.route("a", n, Some(7)), [ack(7, "a", RouteOutcome::Held)]);
    }
    assert_eq!(h.route("a", 3, Some(7)), [ack(7, "a", RouteOutcome::NotConnected)]);
    assert_eq!(h.r.counts(), RouteCounts { held: 3, hold_full: 1, ..RouteCounts::default() });
}

#[test]
fn a_device_not_back_within_the_hold_time_is_gone() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.detach(1, vec![]);
    h.route("a", 1, None);
    h.route("a", 2, None);
    assert_eq!(h.r.poll_timeout(), Some(Millis(HOLD_MS)));
    h.advance(HOLD_MS - 1);
    assert_eq!(h.r.held(), 2);
    h.advance(1);
    assert_eq!(h.r.held(), 0);
    assert_eq!(h.r.counts().dropped_after_hold, 2);
    assert_eq!(h.route("a", 3, Some(7)), [ack(7, "a", RouteOutcome::NotConnected)]);
    // Nothing is handed over when it finally comes back.
    assert_eq!(h.attach(2, "a"), [Command::RecordConnected { session: SessionId(2), device: dev("a") }]);
}

#[test]
fn time_never_goes_backwards() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.now = 500;
    h.detach(1, vec![]);
    h.r.handle_timeout(Millis(10));
    h.route("a", 1, None);
    assert_eq!(h.r.held(), 1);
    h.r.handle_timeout(Millis(500 + HOLD_MS));
    assert_eq!(h.r.held(), 0);
}

#[test]
fn in_a_cluster_a_device_not_here_is_looked_up() {
    let mut h = Harness::cluster();
    assert_eq!(h.route("a", 1, Some(7)), [Command::LookUp(parcel("a", 1, Some(7)))]);
    let forwarded = h.fact(Fact::Verdict { parcel: parcel("a", 1, Some(7)), forwarded_to: Some("b:1".into()) });
    assert_eq!(forwarded, [ack(7, "a", RouteOutcome::Forwarded { server: "b:1".into() })]);
    assert_eq!(h.r.counts().forwarded, 1);
}

#[test]
fn in_a_cluster_a_device_here_is_delivered_without_lookup() {
    let mut h = Harness::cluster();
    h.attach(1, "a");
    assert_eq!(h.route("a", 1, None), [deliver(1, "a", 1, None, false)]);
}

#[test]
fn a_verdict_of_nowhere_routes_here() {
    let mut h = Harness::cluster();
    h.route("a", 1, Some(7));
    let refused = h.fact(Fact::Verdict { parcel: parcel("a", 1, Some(7)), forwarded_to: None });
    assert_eq!(refused, [ack(7, "a", RouteOutcome::NotConnected)]);
}

#[test]
fn while_a_lookup_is_in_flight_later_actuations_follow_it() {
    let mut h = Harness::cluster();
    h.route("a", 1, None);
    // The device attaches here before the verdict: its next actuation must not overtake.
    h.attach(1, "a");
    assert_eq!(h.route("a", 2, None), [Command::LookUp(parcel("a", 2, None))]);
    assert_eq!(
        h.fact(Fact::Verdict { parcel: parcel("a", 1, None), forwarded_to: None }),
        [deliver(1, "a", 1, None, false)]
    );
    assert_eq!(
        h.fact(Fact::Verdict { parcel: parcel("a", 2, None), forwarded_to: None }),
        [deliver(1, "a", 2, None, false)]
    );
    // Every lookup answered: straight to the session again.
    assert_eq!(h.route("a", 3, None), [deliver(1, "a", 3, None, false)]);
}

#[test]
fn hops_travel_with_the_actuation_to_its_lookup() {
    let mut h = Harness::cluster();
    let inbound = Parcel { hops: 1, ..parcel("a", 1, None) };
    assert_eq!(h.fact(Fact::Route(inbound.clone())), [Command::LookUp(inbound)]);
}

#[test]
fn a_device_that_moved_away_is_superseded_without_clearing_and_its_holds_follow_it() {
    let mut h = Harness::cluster();
    h.attach(1, "a");
    h.detach(1, vec![]);
    // Held here (the lookup found no other instance).
    h.route("a", 1, None);
    h.fact(Fact::Verdict { parcel: parcel("a", 1, None), forwarded_to: None });
    h.attach(2, "a");
    h.detach(2, vec![]);
    h.route("a", 2, None);
    h.fact(Fact::Verdict { parcel: parcel("a", 2, None), forwarded_to: None });
    assert_eq!(h.r.held(), 1);
    h.attach(3, "b");
    let moved = h.fact(Fact::MovedAway(dev("a")));
    assert_eq!(moved, [Command::Forget(dev("a")), Command::LookUp(parcel("a", 2, None))]);
    assert_eq!(h.r.held(), 0);
    // A session still here for the device is superseded, and its end clears nothing.
    let moved = h.fact(Fact::MovedAway(dev("b")));
    assert_eq!(moved, [Command::Supersede(SessionId(3)), Command::Forget(dev("b"))]);
    assert_eq!(h.detach(3, vec![]), []);
    assert_eq!(h.r.connected(), 0);
}

#[test]
fn no_ack_is_sent_to_a_sender_that_did_not_ask() {
    let mut h = Harness::new();
    h.attach(1, "a");
    h.detach(1, vec![]);
    assert_eq!(h.route("a", 1, None), []);
    assert_eq!(h.route("b", 1, None), []);
    assert_eq!(h.r.counts(), RouteCounts { held: 1, not_connected: 1, ..RouteCounts::default() });
}

#[test]
fn without_a_hold_time_nothing_is_held() {
    let mut h = Harness { r: Router::new(RouterConfig { hold_ms: 0, ..config(false) }), now: 0 };
    h.attach(1, "a");
    h.detach(1, vec![parcel("a", 1, Some(7))]);
    assert_eq!(h.route("a", 2, Some(7)), [ack(7, "a", RouteOutcome::NotConnected)]);
    assert_eq!(h.r.poll_timeout(), None);
}

#[test]
fn an_actuation_the_host_could_not_look_up_waits_for_the_lookups_before_it() {
    let mut h = Harness::cluster();
    h.route("a", 1, Some(7));
    h.route("a", 2, Some(7));
    assert_eq!(h.route("a", 3, Some(7)), [Command::LookUp(parcel("a", 3, Some(7)))]);
    // The host's queue is full for the third: it is decided only after the first two.
    assert_eq!(h.fact(Fact::NotLookedUp(parcel("a", 3, Some(7)))), []);
    let first = h.fact(Fact::Verdict { parcel: parcel("a", 1, Some(7)), forwarded_to: Some("b:1".into()) });
    assert_eq!(first, [ack(7, "a", RouteOutcome::Forwarded { server: "b:1".into() })]);
    let rest = h.fact(Fact::Verdict { parcel: parcel("a", 2, Some(7)), forwarded_to: None });
    assert_eq!(rest, [ack(7, "a", RouteOutcome::NotConnected), ack(7, "a", RouteOutcome::NotConnected)]);
    // Nothing out any more: a device attached here is delivered to directly.
    h.attach(1, "a");
    assert_eq!(h.route("a", 4, None), [deliver(1, "a", 4, None, false)]);
}

#[test]
fn an_actuation_not_looked_up_with_nothing_before_it_is_routed_at_once() {
    let mut h = Harness::cluster();
    h.route("a", 1, Some(7));
    assert_eq!(h.fact(Fact::NotLookedUp(parcel("a", 1, Some(7)))), [ack(7, "a", RouteOutcome::NotConnected)]);
    // Another device's lookups do not hold it back.
    h.route("b", 1, None);
    h.route("a", 2, Some(7));
    assert_eq!(h.fact(Fact::NotLookedUp(parcel("a", 2, Some(7)))), [ack(7, "a", RouteOutcome::NotConnected)]);
}

#[test]
fn a_lookup_refused_among_several_asked_at_once_keeps_its_own_place() {
    let mut h = Harness::cluster();
    h.attach(1, "a");
    h.attach(2, "a");
    // The superseded session gives back two: both are looked up, asked in one go.
    h.fact(Fact::MovedAway(dev("a")));
    h.r.handle(
        Millis(0),
        Fact::Detach { session: SessionId(1), undelivered: vec![parcel("a", 1, Some(7)), parcel("a", 2, Some(7))] },
    );
    // The host takes the first lookup and cannot ask about it; the second is still to poll.
    assert_eq!(h.r.poll_command(), Some(Command::LookUp(parcel("a", 1, Some(7)))));
    h.r.handle(Millis(0), Fact::NotLookedUp(parcel("a", 1, Some(7))));
    let rest = h.take();
    // Decided at once (nothing before it), not behind the second.
    assert_eq!(rest, [Command::LookUp(parcel("a", 2, Some(7))), ack(7, "a", RouteOutcome::NotConnected)]);
}
