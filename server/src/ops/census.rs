//! Heap census, for the bench only: who holds the live heap, by owner (issue 14, item 1).
//!
//! Built with `--features heap-census`, the server's global allocator counts every live
//! allocation under the owner the allocating code named ([`scope`], [`owned`]), and
//! `GET /metrics` shows the totals (`iot_ws_heap_bytes{owner="…"}`). The bench's `census` mode
//! reads them before and after opening N connections: the difference over N is what one
//! connection costs each owner. An allocation stays its first owner's when it grows or moves
//! on (a device id parsed by the session and kept by the hub is the session's).
//!
//! Without the feature every function here is the identity and the server's allocator is the
//! system's: nothing of this is in a shipped binary.

/// Who made an allocation. `Other` is whatever ran outside every scope: the executor's queues,
/// the reactor's timer map, the threads behind channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[cfg_attr(not(feature = "heap-census"), allow(dead_code))] // `Other` is the census's default
pub enum Owner {
    Other = 0,
    /// The accepted socket's reactor registration (`Async::new`).
    Source,
    /// The admission caps' per-address counts and pending slots.
    Limits,
    /// The spawned task: its header and the connection's future.
    Task,
    /// The TLS handshake, the HTTP head and the upgrade, while they run.
    Handshake,
    /// The connection's own code outside the finer scopes below.
    Connection,
    /// async-tungstenite and tungstenite: the WebSocket's state and its buffers.
    WebSocket,
    /// The socket's queues (`connection/socket.rs`): output not yet written, input read ahead.
    Buffers,
    /// The core's session: what `handle_input` keeps (the device id, its outputs).
    Session,
    /// The connection's mailbox and the mail in it.
    Mailbox,
    /// The connection's timer, registered with the reactor.
    Timer,
    /// The hub task: the router's tables, the hold queue, the store's batches.
    Hub,
    /// The verified tokens' cache (auth/token_cache.rs): one entry per device seen.
    TokenCache,
}

#[cfg(feature = "heap-census")]
pub use counting::{owned, render, scope, Counting};

#[cfg(not(feature = "heap-census"))]
mod identity {
    use super::Owner;

    #[inline(always)]
    pub fn scope<R>(_owner: Owner, work: impl FnOnce() -> R) -> R {
        work()
    }

    #[inline(always)]
    pub fn owned<F: std::future::Future>(_owner: Owner, future: F) -> F {
        future
    }

    #[inline(always)]
    pub fn render(_out: &mut String) {}
}

#[cfg(not(feature = "heap-census"))]
pub use identity::{owned, render, scope};

#[cfg(feature = "heap-census")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::fmt::Write;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
    use std::task::{Context, Poll};

    use super::Owner;

    const OWNERS: [(Owner, &str); 13] = [
        (Owner::Other, "other"),
        (Owner::Source, "reactor_source"),
        (Owner::Limits, "limits"),
        (Owner::Task, "task"),
        (Owner::Handshake, "handshake"),
        (Owner::Connection, "connection"),
        (Owner::WebSocket, "websocket"),
        (Owner::Buffers, "socket_buffers"),
        (Owner::Session, "session"),
        (Owner::Mailbox, "mailbox"),
        (Owner::Timer, "timer"),
        (Owner::Hub, "hub"),
        (Owner::TokenCache, "token_cache"),
    ];

    /// Per owner: bytes asked for, what glibc's malloc takes for them, and how many.
    struct Tally {
        bytes: AtomicI64,
        malloc_bytes: AtomicI64,
        allocations: AtomicI64,
    }

    #[allow(clippy::declare_interior_mutable_const)] // a template for the array below
    const ZERO: Tally =
        Tally { bytes: AtomicI64::new(0), malloc_bytes: AtomicI64::new(0), allocations: AtomicI64::new(0) };
    static TALLY: [Tally; OWNERS.len()] = [ZERO; OWNERS.len()];

    thread_local! {
        static CURRENT: Cell<u8> = const { Cell::new(Owner::Other as u8) };
    }

    /// The chunk glibc's malloc uses for `size` bytes on a 64-bit target: the size plus its
    /// 8-byte header, rounded up to 16, at least 32. What RSS pays, before fragmentation.
    fn malloc_chunk(size: usize) -> i64 {
        (((size + 8 + 15) & !15).max(32)) as i64
    }

    fn count(owner: u8, size: usize, sign: i64) {
        let tally = &TALLY[usize::from(owner).min(OWNERS.len() - 1)];
        tally.bytes.fetch_add(sign * size as i64, Relaxed);
        tally.malloc_bytes.fetch_add(sign * malloc_chunk(size), Relaxed);
        tally.allocations.fetch_add(sign, Relaxed);
    }

    /// Runs `work` with its allocations counted under `owner` (nested scopes win).
    pub fn scope<R>(owner: Owner, work: impl FnOnce() -> R) -> R {
        let outer = CURRENT.with(|c| c.replace(owner as u8));
        let result = work();
        CURRENT.with(|c| c.set(outer));
        result
    }

    /// `future`, with what each of its polls allocates counted under `owner`.
    pub fn owned<F: Future>(owner: Owner, future: F) -> impl Future<Output = F::Output> {
        Owned { owner, future: Box::pin(future) }
    }

    struct Owned<F> {
        owner: Owner,
        future: Pin<Box<F>>,
    }

    impl<F: Future> Future for Owned<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            let owner = self.owner;
            scope(owner, || self.future.as_mut().poll(cx))
        }
    }

    /// The census as metrics lines.
    pub fn render(out: &mut String) {
        for (name, pick) in [("iot_ws_heap_bytes", 0), ("iot_ws_heap_malloc_bytes", 1), ("iot_ws_heap_allocations", 2)]
        {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (i, (_, owner)) in OWNERS.iter().enumerate() {
                let tally = &TALLY[i];
                let value = [&tally.bytes, &tally.malloc_bytes, &tally.allocations][pick].load(Relaxed);
                let _ = writeln!(out, "{name}{{owner=\"{owner}\"}} {value}");
            }
        }
    }

    /// The system allocator, with a 16-byte header before each block (or the alignment, if
    /// larger) holding its owner and size.
    pub struct Counting;

    const HEADER: usize = 16;

    fn with_header(layout: Layout) -> Option<(Layout, usize)> {
        let header = HEADER.max(layout.align());
        let layout = Layout::from_size_align(layout.size().checked_add(header)?, layout.align().max(HEADER)).ok()?;
        Some((layout, header))
    }

    // SAFETY: every block is the system's, `header` bytes past its start; the header is written
    // before the block is handed out and read back only for blocks this allocator handed out.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let Some((full, header)) = with_header(layout) else { return std::ptr::null_mut() };
            let base = System.alloc(full);
            if base.is_null() {
                return base;
            }
            let owner = CURRENT.try_with(Cell::get).unwrap_or(Owner::Other as u8);
            let block = base.add(header);
            block.sub(HEADER).write(owner);
            count(owner, layout.size(), 1);
            block
        }

        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            let Some((full, header)) = with_header(layout) else { return };
            count(block.sub(HEADER).read(), layout.size(), -1);
            System.dealloc(block.sub(header), full);
        }

        unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let Some((full, header)) = with_header(layout) else { return std::ptr::null_mut() };
            let owner = block.sub(HEADER).read();
            let base = System.realloc(block.sub(header), full, new_size + header);
            if base.is_null() {
                return base;
            }
            count(owner, layout.size(), -1);
            count(owner, new_size, 1);
            base.add(header)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn bytes(owner: Owner) -> i64 {
            TALLY[owner as usize].bytes.load(Relaxed)
        }

        #[test]
        fn an_allocation_counts_for_its_scope_until_freed_and_keeps_its_owner_when_it_grows() {
            // Owner::Timer is allocated nowhere else in the unit tests.
            let before = bytes(Owner::Timer);
            let mut v: Vec<u8> = scope(Owner::Timer, || Vec::with_capacity(1000));
            assert_eq!(bytes(Owner::Timer) - before, 1000);
            v.reserve_exact(3000);
            assert_eq!(bytes(Owner::Timer) - before, v.capacity() as i64);
            drop(v);
            assert_eq!(bytes(Owner::Timer), before);
        }

        #[test]
        fn malloc_chunks_are_glibcs() {
            assert_eq!(malloc_chunk(1), 32);
            assert_eq!(malloc_chunk(24), 32);
            assert_eq!(malloc_chunk(25), 48);
            assert_eq!(malloc_chunk(1000), 1008);
        }
    }
}
