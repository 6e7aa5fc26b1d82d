//! `serve`: binds, runs the executor thread, the hub task and one task per connection, and
//! stops gracefully on SIGTERM / SIGINT.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use iot_ws_core::SessionConfig;
use smol::{Async, LocalExecutor};

use crate::auth::TokenVerifier;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError};
use crate::connection::limits::Limits;
use crate::connection::live_config::LiveSessionConfig;
use crate::connection::{ws_config, Ctx};
use crate::hub::queue::hub_queue;
use crate::hub::{HubLimits, HubRequest, HubTask};
use crate::ops::census::{self, Owner};
use crate::ops::metrics::Metrics;
use crate::ops::{actuator_reload, notify};
use crate::store::Store;
use crate::tls::Certificate;

/// How long a graceful stop waits for connections to close and bindings to be written.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs the server until a signal stops it. Errors before binding are configuration errors.
pub fn serve(config: Config, verifier: TokenVerifier) -> anyhow::Result<()> {
    let certificate = match &config.tls {
        Some(files) => Some(Certificate::load(&files.cert, &files.key).map_err(ConfigError)?),
        None => None,
    };
    let listener = bind(config.listen).map_err(|e| ConfigError(format!("cannot listen on {}: {e}", config.listen)))?;
    let listener = Async::new(listener).map_err(|e| ConfigError(format!("cannot listen on {}: {e}", config.listen)))?;
    let local = listener.get_ref().local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let cannot = |e: std::io::Error| ConfigError(format!("cannot listen on {addr} (--metrics-listen): {e}"));
            Some(Async::new(bind(addr).map_err(cannot)?).map_err(cannot)?)
        }
        None => None,
    };
    let external_address = config.external_address(local);
    let metrics = Arc::new(Metrics::default());
    let db = config
        .database_url
        .as_ref()
        .map(|d| crate::db::connection::parse_config(&d.url, &d.origin))
        .transpose()
        .map_err(ConfigError)?;
    // The cluster first: it claims this instance's address on the database (see cluster/inbox.rs).
    let cluster = match &db {
        Some(db) => {
            Some(Cluster::start(db, &external_address, config.hold_secs, config.instance_lock_wait_secs, &metrics)?)
        }
        None => None,
    };
    let store = Arc::new(Store::start(db.as_ref(), &external_address, &metrics)?);
    let clock = Clock::start();
    let (hub_tx, hub_rx) = hub_queue();
    let limits = Limits::new(config.max_connections, config.max_pending, config.max_pending_per_address);
    metrics.set_limits(limits.clone());
    let ctx = Arc::new(Ctx {
        session_config: LiveSessionConfig::new(SessionConfig {
            actuator: config.actuator.clone(),
            register_timeout_ms: config.register_timeout_secs * 1_000,
        }),
        send_queue_bytes: config.send_queue_bytes,
        verifier,
        hub: hub_tx,
        metrics: metrics.clone(),
        metrics_here: metrics_listener.is_none(),
        ws_config: ws_config(config.max_message_bytes),
        next_session: AtomicU64::new(1),
        stop: Default::default(),
        clock,
        tls: certificate.clone().map(crate::tls::acceptor),
    });
    let reload = reloader(certificate, config.actuator_password_file.clone(), ctx.clone());
    let signals = crate::ops::signals::watch_with_reload(move || {
        notify::reloading();
        reload();
        notify::reloaded();
    })?;

    log::info!("{}", store.describe());
    if config.actuator.is_none() {
        log::warn!("actuations: no actuator credentials configured; every actuation is refused");
    }
    log::info!("bindings name this instance {external_address:?}");
    if let Some(files) = &config.tls {
        log::info!("TLS: wss:// and https:// only, certificate {}", files.cert.display());
    }
    if let Some(listener) = &metrics_listener {
        log::info!("metrics on http://{}/metrics", listener.get_ref().local_addr()?);
    }
    log::info!("listening on {local}");

    // One thread runs every connection and the hub: a message from one task to another is a
    // queue push, not a futex wake of another thread, and the reactor is polled by the same
    // thread when it has nothing else to do. The database, forwarding, inbox and signal threads
    // stay apart, behind channels. (Token verification runs inline: ring's RSA check is ~20 µs,
    // and a cached token skips it.)
    let ex = LocalExecutor::new();
    let hub_limits = HubLimits {
        hold_secs: config.hold_secs,
        hold_max_bytes: config.hold_max_bytes,
        send_queue_bytes: config.send_queue_bytes,
    };
    let hub_task = HubTask::new(store.clone(), cluster, metrics.clone(), hub_limits, clock);
    // From here on the serving thread never writes stdout or stderr itself (see ops/logging).
    crate::ops::logging::start()?;
    let hub_done = ex.spawn(census::owned(Owner::Hub, hub_task.run(hub_rx)));
    if let Some(every) = notify::watchdog_interval() {
        // From this thread: its turning is what the watchdog is to see.
        ex.spawn(async move {
            loop {
                notify::send("WATCHDOG=1");
                smol::Timer::after(every).await;
            }
        })
        .detach();
    }
    smol::block_on(ex.run(async {
        notify::send("READY=1");
        let accept = future::or(accept_loop(&listener, &ex, &ctx, &limits), async {
            match metrics_listener {
                Some(listener) => crate::connection::metrics_port::accept_loop(listener, &ex, metrics.clone()).await,
                None => future::pending().await,
            }
        });
        future::or(accept, async {
            let _ = signals.recv().await;
        })
        .await;
        notify::send("STOPPING=1");
        log::info!("stopping: closing connections");
        drop(listener);
        ctx.stop.trigger();
        wait_for_connections(&limits).await;
        // Every detach sent so far is handled before the store is flushed.
        let (done_tx, done_rx) = async_channel::bounded(1);
        let _ = ctx.hub.send(HubRequest::Barrier(done_tx)).await;
        let _ = done_rx.recv().await;
        store.flush(STOP_GRACE).await;
        drop(ctx);
        let _ = future::or(hub_done, smol::Timer::after(Duration::from_millis(100)).map_unit()).await;
    }));
    log::info!("stopped");
    crate::ops::logging::flush(STOP_GRACE);
    Ok(())
}

/// What SIGHUP does: reads the public keys again (new registrations are checked with them; keys
/// that do not load leave those in use), then the actuator's password if it came from a file
/// (every connection's next actuation is checked with it; a file that cannot be used leaves the
/// one in use), then the certificate (new handshakes get it; a pair that does not load leaves the
/// one in use), and says how each went.
fn reloader(
    certificate: Option<Arc<Certificate>>,
    password_file: Option<PathBuf>,
    ctx: Arc<Ctx>,
) -> impl Fn() + Send + 'static {
    move || {
        match ctx.verifier.reload() {
            Ok(keys) => log::info!("reload (SIGHUP): {keys} public key(s) in use"),
            Err(why) => log::warn!("reload (SIGHUP): public keys kept: {why}"),
        }
        let reread = actuator_reload::reload(&ctx.session_config, password_file.as_deref());
        if let Some(line) = reread.log_line() {
            log::log!(reread.level(), "{line}");
        }
        let Some(certificate) = &certificate else { return };
        let metrics = &ctx.metrics;
        match certificate.reload() {
            Ok(()) => {
                Metrics::inc(&metrics.tls_reloads_ok);
                log::info!("reload (SIGHUP): TLS certificate reloaded");
            }
            Err(why) => {
                Metrics::inc(&metrics.tls_reloads_failed);
                log::warn!("reload (SIGHUP): TLS certificate kept: {why}");
            }
        }
    }
}

/// Most connections waiting to be accepted. std's 128 is overrun when thousands of devices
/// reconnect at once after a restart, and each SYN dropped costs its device a 1 s retransmit.
const LISTEN_BACKLOG: i32 = 4096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std does: a restarted server can bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    // Accepted sockets inherit it (see `accept`): one syscall fewer per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

trait MapUnit {
    fn map_unit(self) -> impl std::future::Future<Output = ()>;
}

impl<F: std::future::Future> MapUnit for F {
    async fn map_unit(self) {
        self.await;
    }
}

/// Accepts, admits within the caps, and spawns. Yields every [`ACCEPT_BURST`] accepts so that
/// a connection storm does not keep the thread from the connections already open.
async fn accept_loop(listener: &Async<TcpListener>, ex: &LocalExecutor<'_>, ctx: &Arc<Ctx>, limits: &Arc<Limits>) {
    let mut burst = 0;
    loop {
        burst += 1;
        if burst >= ACCEPT_BURST {
            burst = 0;
            future::yield_now().await;
        }
        match accept(listener).await {
            Ok((stream, peer)) => {
                let accepted = Instant::now();
                match census::scope(Owner::Limits, || limits.admit(peer.ip())) {
                    Ok(slots) => match census::scope(Owner::Source, || Async::new_nonblocking(stream)) {
                        Ok(stream) => census::scope(Owner::Task, || {
                            let connection = crate::connection::serve_connection(stream, accepted, slots, ctx.clone());
                            ex.spawn(census::owned(Owner::Connection, connection)).detach();
                        }),
                        // The reactor cannot take it (out of memory): dropped, its slots freed.
                        Err(e) => log::warn!("cannot watch an accepted connection: {e}"),
                    },
                    Err(_) => crate::connection::limits::refuse(stream),
                }
            }
            Err(e) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                Metrics::inc(&ctx.metrics.accept_errors);
                log::warn!("accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The next connection, non-blocking from the start (`accept4` with `SOCK_NONBLOCK`) and with
/// Nagle off, which it inherits from the listener (see `bind`). std's `accept`, then
/// `Async::new` and `set_nodelay`, took two syscalls more per connection. The reactor is not
/// told of it here: a connection refused at once never is.
async fn accept(listener: &Async<TcpListener>) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    listener
        .read_with(|listener| {
            let (socket, peer) = socket2::SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
            let peer = peer.as_socket().ok_or_else(|| std::io::Error::other("a TCP peer without an IP address"))?;
            Ok((TcpStream::from(socket), peer))
        })
        .await
}

/// Connections accepted in a row before others get a turn.
const ACCEPT_BURST: u32 = 64;

async fn wait_for_connections(limits: &Limits) {
    let deadline = Instant::now() + STOP_GRACE;
    while limits.open() > 0 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read};

    #[test]
    fn an_accepted_connection_is_non_blocking_with_nagle_off_and_knows_its_peer() {
        let listener = Async::new(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
        let client = TcpStream::connect(listener.get_ref().local_addr().unwrap()).unwrap();
        let (mut accepted, peer) = smol::block_on(accept(&listener)).unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(accepted.nodelay().unwrap(), "inherited from the listener");
        // The client sent nothing: a blocking socket would wait here.
        assert_eq!(accepted.read(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    }
}
