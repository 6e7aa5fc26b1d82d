//! Real sessions and one real router, wired as the server wires them
//! ([`iot_ws_core::world`]), against a model of the README's guarantees: every accepted
//! actuation ends exactly once (written to its device's socket, refused or forwarded with an
//! ack, or held and then handed over or dropped and counted); every sender that asked hears
//! exactly one ack; a device gets each sender's actuations in the order they were routed, and
//! each sender hears its acks for one device in that order; nothing is sent after a close;
//! each input, each fact gives a bounded number of outputs; only a device's current session
//! is given its actuations, and a superseded session writes none.
#![cfg(not(target_arch = "wasm32"))]

use iot_ws_core::world::{Fate, World};
use proptest::prelude::*;

/// Bytes for a world: a few hundred choices, about a hundred steps.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..1_200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_096, ..ProptestConfig::default() })]

    /// The guarantees hold whatever the sessions, the router's settings, the store, the
    /// lookups and the clock do.
    #[test]
    fn sessions_and_router_keep_the_readmes_guarantees(data in bytes()) {
        let mut world = World::new(&data);
        let result = world.run();
        prop_assert_eq!(result, Ok(()), "config {:?}", world.config());
    }
}

/// Deterministic bytes (xorshift), so that the coverage check below does not depend on luck.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The world is not vacuous: over a few hundred runs, actuations end every way there is.
#[test]
fn the_world_reaches_every_outcome() {
    let mut ends = [0u64; 5];
    let (mut dropped, mut forwarded) = (0, 0);
    for seed in 0..300 {
        let data = pseudo_random(seed, 1_200);
        let mut world = World::new(&data);
        assert_eq!(world.run(), Ok(()), "seed {seed}");
        for t in &world.model.tracked {
            let at = match t.fate {
                Fate::Written => 0,
                Fate::Refused => 1,
                Fate::Forwarded => 2,
                Fate::Held => 3,
                _ => 4,
            };
            ends[at] += 1;
        }
        dropped += world.router().counts().dropped_after_hold;
        forwarded += world.router().counts().forwarded;
    }
    eprintln!("written, refused, forwarded, held/dropped, other: {ends:?}; dropped {dropped}, forwarded {forwarded}");
    assert!(ends[..4].iter().all(|&n| n > 0), "{ends:?}");
    assert!(dropped > 0 && forwarded > 0);
}

/// Replays the bytes in the file named by `WORLD_CASE` (hex or raw) and prints the trace.
#[test]
#[ignore = "a tool: WORLD_CASE=path cargo test --features fuzzing --test world_properties -- --ignored"]
fn replay_world_case() {
    let Ok(path) = std::env::var("WORLD_CASE") else { return };
    let data = std::fs::read(path).expect("readable");
    let mut world = World::new(&data);
    world.trace = Some(Vec::new());
    let result = world.run();
    for line in world.trace.take().unwrap_or_default() {
        eprintln!("{line}");
    }
    eprintln!("config {:?}: {result:?}", world.config());
}

/// The router fuzz target's committed seeds pass (crashes found later go here too).
#[test]
fn router_fuzz_seeds_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/router");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the router corpus") {
        let path = entry.expect("an entry").path();
        if path.file_name().is_some_and(|f| f.to_string_lossy().starts_with("seed-")) {
            iot_ws_core::world::drive_router(&std::fs::read(&path).expect("readable"));
            n += 1;
        }
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}
