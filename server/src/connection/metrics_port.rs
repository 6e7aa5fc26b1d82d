//! `--metrics-listen`: a second, plain-HTTP listener for `/metrics` (and `/health`, `/ready`),
//! e.g. on loopback, so that the public port need not show them.
//!
//! Its clients are as hostile as any: each connection gets one request, read with the same
//! bounded head reader and answered within [`DEADLINE`] of its accept, and at most
//! [`MAX_OPEN`] are served at once (more are closed at accept).

use std::cell::Cell;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::{Async, LocalExecutor};

use super::http::{self, Answer};
use crate::ops::metrics::Metrics;

/// A request's whole life, from its accept to the last byte of its answer.
const DEADLINE: Duration = Duration::from_secs(5);
/// Metrics connections served at once; a scraper needs one.
const MAX_OPEN: usize = 8;

/// Accepts on `listener` and answers each connection's one request, on `ex`; never returns.
pub async fn accept_loop(listener: Async<TcpListener>, ex: &LocalExecutor<'_>, metrics: Arc<Metrics>) {
    let open = Rc::new(Cell::new(0));
    loop {
        match listener.accept().await {
            Ok((stream, _)) if open.get() < MAX_OPEN => {
                let slot = Slot::take(&open);
                ex.spawn(answer(stream, metrics.clone(), slot)).detach();
            }
            // Over the cap: closed unanswered.
            Ok(_) => {}
            Err(e) => {
                Metrics::inc(&metrics.accept_errors);
                log::warn!("metrics: accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
        // An accept that is ready at once does not yield: a flood of connections to this port
        // must not keep the serving thread (the public listener yields every ACCEPT_BURST).
        futures_lite::future::yield_now().await;
    }
}

/// One request: `/metrics`, `/health`, `/ready` as on the public port; an upgrade is a 404 here.
async fn answer(mut stream: Async<std::net::TcpStream>, metrics: Arc<Metrics>, _slot: Slot) {
    let deadline = Instant::now() + DEADLINE;
    let Some(head) = http::read_head(&mut stream, deadline).await else { return };
    let answer = match http::classify(&head) {
        http::Request::Plain(answer) => answer,
        http::Request::Upgrade { .. } => Answer::NotFound,
    };
    super::within(deadline, http::respond(&mut stream, &answer, &metrics)).await;
}

/// One of the [`MAX_OPEN`] places, given back when its connection ends.
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(open: &Rc<Cell<usize>>) -> Slot {
        open.set(open.get() + 1);
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}
