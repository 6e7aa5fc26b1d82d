//! What every part of a run shares: the target, the server process, the token minter, the
//! executor the clients run on.

use std::sync::Arc;
use std::time::Duration;

use smol::Executor;

use crate::device::{Fleet, Launch, Recorder, Spec, Started};
use crate::net::Target;
use crate::proc::ServerProc;
use crate::sender::Actuator;
use crate::tokens::Minter;

pub struct Bench {
    pub target: Target,
    pub server: Option<ServerProc>,
    pub minter: Option<Minter>,
    pub actuator: Actuator,
    pub ex: Arc<Executor<'static>>,
    pub concurrency: usize,
    /// Distinguishes this run's device ids from earlier runs' against the same server.
    pub run: String,
    next_index: std::sync::atomic::AtomicUsize,
}

impl Bench {
    pub fn new(target: Target, server: Option<ServerProc>, minter: Option<Minter>, actuator: Actuator) -> Bench {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Bench {
            target,
            server,
            minter,
            actuator,
            ex: Arc::new(Executor::new()),
            concurrency: 256,
            run: format!("{:x}{:x}", std::process::id(), now.as_millis() % 0xfff_ffff),
            next_index: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Runs the client executor on `threads` threads of its own.
    pub fn start_threads(&self, threads: usize) {
        for i in 0..threads.max(1) {
            let ex = self.ex.clone();
            let _ = std::thread::Builder::new()
                .name(format!("bench-{i}"))
                .spawn(move || smol::block_on(ex.run(futures_lite::future::pending::<()>())));
        }
    }

    /// `n` devices of `phase` with freshly minted tokens.
    pub fn specs(&self, phase: &str, n: usize) -> Result<Vec<Spec>, String> {
        let minter = self.minter.as_ref().ok_or("--private-key is required to mint device tokens")?;
        let ids: Vec<String> = (0..n).map(|i| format!("bench-{}-{phase}-{i}", self.run)).collect();
        let t0 = std::time::Instant::now();
        let tokens = minter.mint_all(&ids, &self.run);
        if n >= 1000 {
            println!("  (minted {n} tokens in {:.1} s)", t0.elapsed().as_secs_f64());
        }
        Ok(ids.into_iter().zip(tokens).map(|(id, token)| Spec { id, token }).collect())
    }

    /// Starts a fleet; its client numbers follow the previous fleet's (fresh source ports).
    pub async fn fleet(&self, specs: &[Spec]) -> Started {
        let first_index = self.next_index.fetch_add(specs.len(), std::sync::atomic::Ordering::Relaxed);
        let launch = Launch { ex: &self.ex, target: &self.target, concurrency: self.concurrency, first_index };
        Fleet::start(&launch, specs, Recorder::new(specs.len())).await
    }

    /// A client number for a one-off connection.
    pub fn next_index(&self) -> usize {
        self.next_index.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops a fleet and waits (bounded) until the server has closed its connections.
    pub async fn dismiss(&self, fleet: Fleet) {
        fleet.drop_all();
        if !self.target.wait_connections_at_most(0, Duration::from_secs(30)).await {
            println!("  (the server still reports open connections after 30 s)");
        }
    }

    /// Server CPU time now, if a PID was given.
    pub fn cpu(&self) -> Option<Duration> {
        self.server.and_then(|s| s.cpu())
    }
}

/// CPU microseconds per operation between two readings.
pub fn cpu_per(before: Option<Duration>, after: Option<Duration>, ops: u64) -> Option<f64> {
    let (b, a) = (before?, after?);
    (ops > 0).then(|| a.saturating_sub(b).as_secs_f64() * 1e6 / ops as f64)
}
