use super::*;
use std::net::Ipv4Addr;

fn host(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

fn evicted(slot: &PendingSlot) -> bool {
    futures_lite::future::block_on(futures_lite::future::poll_once(slot.evicted())).is_some()
}

#[test]
fn admits_up_to_each_cap_and_counts_refusals_by_reason() {
    let limits = Limits::new(3, 2, 2);
    let a = limits.admit(host(1)).unwrap();
    let b = limits.admit(host(1)).unwrap();
    assert_eq!(limits.admit(host(1)).unwrap_err(), Refused::PendingPerAddress);
    // One stops being pending (it registered): room for another pending one.
    drop(a.1);
    let c = limits.admit(host(1)).unwrap();
    assert_eq!((limits.open(), limits.pending()), (3, 2));
    assert_eq!(limits.admit(host(1)).unwrap_err(), Refused::PendingPerAddress);
    drop(b.1);
    assert_eq!(limits.admit(host(1)).unwrap_err(), Refused::Limit);
    let counts = |l: &Limits| {
        (l.refused_limit.load(Relaxed), l.refused_pending.load(Relaxed), l.refused_pending_per_address.load(Relaxed))
    };
    assert_eq!(counts(&limits), (1, 0, 2));
    drop((a.0, b.0, c));
    assert_eq!((limits.open(), limits.pending()), (0, 0));
    assert!(lock(&limits.table).by_address.is_empty(), "no address kept once none is pending");
    assert!(lock(&limits.table).by_count.is_empty());
}

#[test]
fn the_pending_cap_refuses_when_nobody_holds_more_than_the_newcomer() {
    let limits = Limits::new(100, 2, 10);
    let _a = limits.admit(host(1)).unwrap();
    let _b = limits.admit(host(2)).unwrap();
    // host 3 has none, the heaviest has one: evicting would not be fairer.
    assert_eq!(limits.admit(host(3)).unwrap_err(), Refused::Pending);
    assert_eq!(limits.refused_pending.load(Relaxed), 1);
}

#[test]
fn one_address_gets_its_share_of_pending_slots_and_others_still_get_in() {
    let limits = Limits::new(100, 10, 2);
    let mine: Vec<_> = (0..2).map(|_| limits.admit(host(1)).unwrap()).collect();
    assert_eq!(limits.admit(host(1)).unwrap_err(), Refused::PendingPerAddress);
    // The same host over IPv6 as an IPv4-mapped address is the same address.
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    assert_eq!(limits.admit(mapped).unwrap_err(), Refused::PendingPerAddress);
    let other = limits.admit(host(2)).unwrap();
    assert_eq!(limits.refused_pending_per_address.load(Relaxed), 2);
    // One count per address, the current one: the table stays as small as the addresses.
    assert_eq!(lock(&limits.table).by_count.iter().copied().collect::<Vec<_>>(), [(1, host(2)), (2, host(1))]);
    drop(mine);
    assert!(limits.admit(host(1)).is_ok());
    drop(other);
}

#[test]
fn a_full_house_evicts_the_oldest_pending_connection_of_the_busiest_address_for_a_newcomer() {
    let limits = Limits::new(100, 4, 10);
    let flood: Vec<_> = (0..3).map(|_| limits.admit(host(1)).unwrap()).collect();
    let lone = limits.admit(host(2)).unwrap();
    let device = limits.admit(host(3)).unwrap();
    // host 1 held 3, the newcomer none: host 1's oldest goes.
    assert!(evicted(&flood[0].1) && !evicted(&flood[1].1) && !evicted(&flood[2].1));
    assert!(!evicted(&lone.1) && !evicted(&device.1));
    assert_eq!((limits.pending(), limits.evicted.load(Relaxed)), (4, 1));
    // Another newcomer: host 1 holds 2, still more than 0 + 1.
    let second = limits.admit(host(4)).unwrap();
    assert!(evicted(&flood[1].1));
    // Now every address holds one: nobody to evict fairly.
    assert_eq!(limits.admit(host(5)).unwrap_err(), Refused::Pending);
    // An evicted slot's end does not count twice.
    drop(flood);
    assert_eq!(limits.pending(), 3);
    drop((lone, device, second));
    assert_eq!((limits.open(), limits.pending()), (0, 0));
    assert!(lock(&limits.table).by_count.is_empty());
}

#[test]
fn the_connection_cap_evicts_too_but_never_for_the_busiest_address_itself() {
    let limits = Limits::new(3, 100, 10);
    let flood: Vec<_> = (0..3).map(|_| limits.admit(host(1)).unwrap()).collect();
    assert_eq!(limits.admit(host(1)).unwrap_err(), Refused::Limit);
    assert!(limits.admit(host(2)).is_ok());
    assert!(evicted(&flood[0].1));
}

#[test]
fn a_refused_client_reads_503() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // As the server accepts it: non-blocking.
    let (accepted, _) = listener.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    refuse(accepted);
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nserver at capacity.\n"), "{answer}");
}

#[test]
fn the_caps_print_their_pending_connections_without_going_round_through_them() {
    // Each pending entry holds the limits, whose table holds the entry: a derived `Debug`
    // would print forever.
    let limits = Limits::new(10, 10, 10);
    let (_open, pending) = limits.admit(host(7)).unwrap();
    let printed = format!("{limits:?}");
    assert!(printed.contains("peer: 192.0.2.7") && printed.contains("evicted: false"), "{printed}");
    assert!(format!("{pending:?}").contains("192.0.2.7"));
}
