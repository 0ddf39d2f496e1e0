//! The proxy's listeners and connections: plain L4, one task per client. A routing task keeps
//! the table ([`routes`](super::routes)) on a watch channel; writer connections watch it and
//! are cut the moment the writer they were sent to is no longer the writer of the same
//! lease epoch, so no client stays connected to a deposed primary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::routes::{routes, Balance, Inputs, Routes, Target};
use super::stats::{Port, Stats};
use super::ProxyConfig;
use crate::cluster::NodeId;
use crate::lease::LeaseClock;
use crate::peers::{LocalStatus, PeerStatuses};
use crate::raft::RaftHandle;

/// How long connecting to a backend PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client may stay silent after connecting before it is closed without a backend
/// (see [`relay`]); libpq sends its first packet at once.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffers per direction: large enough for bulk results, allocated once per connection.
const BUFFER: usize = 64 * 1024;
/// How often routes are recomputed without any other change (the lease ages on our clock).
const TICK: Duration = Duration::from_millis(100);

/// What the proxy reads; built by the daemon.
pub struct Deps {
    pub handle: RaftHandle,
    pub lease_clock: LeaseClock,
    pub peers: watch::Receiver<Arc<PeerStatuses>>,
    pub local: watch::Receiver<LocalStatus>,
}

/// Both ports, bound before anything starts so that a taken port fails startup. Kept as std
/// sockets until the proxy's own runtime registers them.
pub struct Listeners {
    writer: std::net::TcpListener,
    reader: std::net::TcpListener,
}

/// Binds the writer and reader ports.
pub async fn bind(config: &ProxyConfig) -> anyhow::Result<Listeners> {
    let writer = TcpListener::bind(config.writer_listen)
        .await
        .with_context(|| {
            format!(
                "binding the proxy writer port {} ([proxy] writer_listen)",
                config.writer_listen
            )
        })?
        .into_std()?;
    let reader = TcpListener::bind(config.reader_listen)
        .await
        .with_context(|| {
            format!(
                "binding the proxy reader port {} ([proxy] reader_listen)",
                config.reader_listen
            )
        })?
        .into_std()?;
    Ok(Listeners { writer, reader })
}

/// Shared by the connections of both ports.
struct Shared {
    config: ProxyConfig,
    routes: watch::Receiver<Routes>,
    /// Open reader connections per backend, for least-connections.
    reader_load: Mutex<BTreeMap<NodeId, usize>>,
    /// Rotates among equally loaded readers, so short connections spread too.
    reader_turn: AtomicUsize,
    active: [AtomicUsize; 2],
    stats: Arc<Stats>,
}

/// Starts the routing task on the daemon's runtime, and both accept loops with their
/// connections on a single-threaded runtime of their own (one OS thread): relaying is many
/// tiny reads and writes, and keeping every wake-up on one thread avoids the cross-thread
/// hand-offs and idle-worker spinning of the shared work-stealing scheduler, which on a small
/// host cost more CPU than the copying itself. Everything stops with `shutdown`. Returns
/// the routing table, which the pooler follows too.
pub fn spawn(
    config: ProxyConfig,
    listeners: Listeners,
    deps: Deps,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<watch::Receiver<Routes>> {
    let (tx, rx) = watch::channel(Routes::default());
    tasks.spawn(maintain_routes(
        deps,
        config.policy.clone(),
        tx,
        stats.clone(),
        shutdown.clone(),
    ));
    let shared = Arc::new(Shared {
        config,
        routes: rx.clone(),
        reader_load: Mutex::new(BTreeMap::new()),
        reader_turn: AtomicUsize::new(0),
        active: [AtomicUsize::new(0), AtomicUsize::new(0)],
        stats,
    });
    let runtime = match shared.config.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    }
    .enable_all()
    .thread_name("pgquorum-proxy")
    .build()
    .context("starting the proxy's runtime")?;
    let connections = TaskTracker::new();
    let thread = std::thread::Builder::new().name("pgquorum-proxy".into());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    thread
        .spawn(move || {
            runtime.block_on(async move {
                for (listener, port) in [
                    (listeners.writer, Port::Writer),
                    (listeners.reader, Port::Reader),
                ] {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(error = %e, ?port, "proxy: registering the port");
                            continue;
                        }
                    };
                    connections.spawn(accept(
                        listener,
                        port,
                        shared.clone(),
                        shutdown.clone(),
                        connections.clone(),
                    ));
                }
                shutdown.cancelled().await;
                connections.close();
                connections.wait().await;
            });
            let _ = done_tx.send(());
        })
        .context("starting the proxy's thread")?;
    // The daemon waits for its tasks on shutdown; this one ends when the proxy's thread has.
    tasks.spawn(async move {
        let _ = done_rx.await;
    });
    Ok(rx)
}

/// Recomputes the routing table whenever an input changes (and every [`TICK`], as the lease
/// ages on our clock), publishing it only when it differs; a writer change is logged.
async fn maintain_routes(
    deps: Deps,
    policy: super::Policy,
    tx: watch::Sender<Routes>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut view = deps.handle.view();
    let mut peers = deps.peers.clone();
    let mut local = deps.local.clone();
    loop {
        let current = view.borrow_and_update().clone();
        let config = &current.state.config;
        let local_status = local.borrow_and_update().as_ref().map(|(s, _)| s.clone());
        let peer_statuses = peers.borrow_and_update().clone();
        let statuses = peer_statuses.known_statuses(
            local_status.as_ref(),
            config.status_horizon(),
            Instant::now(),
        );
        let lease = current.state.lease;
        let inputs = Inputs {
            lease,
            lease_alive: lease.is_some() && deps.lease_clock.unchanged_for() < config.ttl,
            members: &current.state.members,
            statuses: &statuses,
        };
        let previous = tx.borrow().clone();
        let next = routes(&inputs, &policy, &previous);
        if next != previous {
            if next.writer != previous.writer {
                stats.writer_changed();
                let name = |t: &Option<Target>| {
                    t.as_ref().map_or("none".to_string(), |t| {
                        current
                            .state
                            .member(t.node)
                            .map_or(t.node.to_string(), |m| m.name.clone())
                    })
                };
                tracing::info!(
                    from = %name(&previous.writer),
                    to = %name(&next.writer),
                    epoch = ?next.epoch.map(|e| e.0),
                    "proxy: writer route changed"
                );
            }
            if next.readers != previous.readers {
                let names: Vec<String> = next
                    .readers
                    .iter()
                    .map(|t| {
                        current
                            .state
                            .member(t.node)
                            .map_or(t.node.to_string(), |m| m.name.clone())
                    })
                    .collect();
                tracing::info!(readers = ?names, "proxy: reader routes changed");
            }
            tx.send_replace(next);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = view.changed() => {}
            _ = peers.changed() => {}
            _ = local.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

async fn accept(
    listener: TcpListener,
    port: Port,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (client, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, ?port, "proxy: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let slot = &shared.active[match port {
                Port::Writer => 0,
                Port::Reader => 1,
            }];
            if slot.fetch_add(1, Ordering::Relaxed) >= shared.config.max_connections {
                slot.fetch_sub(1, Ordering::Relaxed);
                let message = format!(
                    "pgquorum proxy: too many connections (max_connections = {})",
                    shared.config.max_connections
                );
                shared.stats.refused(port);
                refuse(client, "53300", &message).await;
                return;
            }
            match port {
                Port::Writer => writer(client, &shared, shutdown).await,
                Port::Reader => reader(client, &shared, shutdown).await,
            }
            slot.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A writer connection: to the current writer, waiting up to `primary_wait` for one; cut
/// as soon as that member stops being the writer of the same epoch.
async fn writer(client: TcpStream, shared: &Shared, shutdown: CancellationToken) {
    let mut routes = shared.routes.clone();
    let wait = shared.config.primary_wait;
    let found = tokio::time::timeout(wait, async {
        loop {
            let current = routes.borrow_and_update().clone();
            if let Some(target) = current.writer {
                return Some((target, current.epoch));
            }
            if routes.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    let Ok(Some((target, epoch))) = found else {
        let message = format!(
            "pgquorum proxy: no primary is available (waited {}); the cluster may be failing \
             over, see `pgquorum list`",
            humantime::format_duration(wait)
        );
        shared.stats.refused(Port::Writer);
        refuse(client, "57P03", &message).await;
        return;
    };
    let deposed = async {
        loop {
            if routes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let current = routes.borrow_and_update();
            if current.writer.as_ref() != Some(&target) || current.epoch != epoch {
                return;
            }
        }
    };
    relay(
        client,
        &target,
        Port::Writer,
        &shared.stats,
        deposed,
        shutdown,
    )
    .await;
}

/// A reader connection: to the reader with the fewest open connections, or the next in
/// turn (`reader_balance`).
async fn reader(client: TcpStream, shared: &Shared, shutdown: CancellationToken) {
    let readers = shared.routes.borrow().readers.clone();
    let target = {
        let load = shared.reader_load.lock().expect("reader load poisoned");
        let turn = shared.reader_turn.fetch_add(1, Ordering::Relaxed);
        pick_reader(&readers, &load, turn, shared.config.policy.balance).cloned()
    };
    let Some(target) = target else {
        let message = "pgquorum proxy: no replica within the lag limit and no primary to fall \
                       back to";
        shared.stats.refused(Port::Reader);
        refuse(client, "57P03", message).await;
        return;
    };
    let change = |delta: isize| {
        let mut load = shared.reader_load.lock().expect("reader load poisoned");
        let entry = load.entry(target.node).or_insert(0);
        *entry = entry.saturating_add_signed(delta);
    };
    change(1);
    let never = std::future::pending::<()>();
    relay(
        client,
        &target,
        Port::Reader,
        &shared.stats,
        never,
        shutdown,
    )
    .await;
    change(-1);
}

/// The reader for a new connection: by `balance`, with `turn` (a counter bumped per
/// connection) breaking ties among the least loaded.
fn pick_reader<'a>(
    readers: &'a [Target],
    load: &BTreeMap<NodeId, usize>,
    turn: usize,
    balance: Balance,
) -> Option<&'a Target> {
    let candidates: Vec<&Target> = match balance {
        Balance::RoundRobin => readers.iter().collect(),
        Balance::LeastConnections => {
            let load_of = |t: &Target| load.get(&t.node).copied().unwrap_or(0);
            let least = readers.iter().map(load_of).min();
            readers
                .iter()
                .filter(|t| Some(load_of(t)) == least)
                .collect()
        }
    };
    (!candidates.is_empty()).then(|| candidates[turn % candidates.len()])
}

/// TCP keepalive on both legs, so a peer that vanished without a FIN (a host lost, a cut
/// link) is noticed within about a minute and its slot freed: idle 30 s, then a probe every
/// 10 s, given up after 3.
fn keepalive(stream: &TcpStream) {
    let settings = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&settings) {
        tracing::debug!(error = %e, "proxy: setting TCP keepalive");
    }
}

/// Connects to `target` and copies both ways until either side closes, `cut` resolves (the
/// client's socket is then reset, so it sees an error at once) or the daemon stops.
async fn relay(
    mut client: TcpStream,
    target: &Target,
    port: Port,
    stats: &Stats,
    cut: impl std::future::Future<Output = ()>,
    shutdown: CancellationToken,
) {
    // A PostgreSQL client speaks first (its startup packet or SSLRequest). Until it has, no
    // backend is dialled: idle connections must not take PostgreSQL's connection slots, nor
    // those its superusers and this daemon keep in reserve.
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, client.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return,
        Err(_) => {
            stats.refused(port);
            return;
        }
    }
    let server = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.addr)).await;
    let mut server = match server {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            stats.refused(port);
            let message = format!("pgquorum proxy: cannot reach {}: {e}", target.addr);
            refuse(client, "08006", &message).await;
            return;
        }
        Err(_) => {
            stats.refused(port);
            let message = format!(
                "pgquorum proxy: {} did not accept the connection within {CONNECT_TIMEOUT:?}",
                target.addr
            );
            refuse(client, "08006", &message).await;
            return;
        }
    };
    for stream in [&client, &server] {
        let _ = stream.set_nodelay(true);
        keepalive(stream);
    }
    stats.opened(port, target.node);
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER);
    let (copied, cut_off) = tokio::select! {
        copied = copy => (copied.unwrap_or_default(), false),
        _ = cut => ((0, 0), true),
        _ = shutdown.cancelled() => ((0, 0), true),
    };
    stats.closed(port, target.node, copied.0, copied.1);
    if cut_off {
        // A reset, not a clean close: the client learns at once that its session is gone.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Answers a client we will not serve with a PostgreSQL error, so that it reads a reason
/// ("FATAL: pgquorum proxy: no primary is available ...") instead of a bare disconnect: reads
/// its startup packet (declining SSL/GSS encryption first), sends an ErrorResponse, closes.
async fn refuse(mut client: TcpStream, code: &str, message: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // SSLRequest and GSSENCRequest are answered 'N'; the startup packet that follows is
        // read and ignored. At most two requests precede it.
        for _ in 0..3 {
            let mut head = [0u8; 8];
            client.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let request = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if request == 80_877_103 || request == 80_877_104 {
                client.write_all(b"N").await?;
                continue;
            }
            let rest = len.saturating_sub(8).min(10_000);
            let mut skip = vec![0u8; rest];
            client.read_exact(&mut skip).await?;
            break;
        }
        client.write_all(&error_response(code, message)).await?;
        client.shutdown().await
    })
    .await;
}

/// A PostgreSQL `ErrorResponse` message, severity FATAL.
fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (kind, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(kind);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_are_picked_by_load_or_in_turn() {
        let target = |id: u64| Target {
            node: NodeId(id),
            addr: format!("10.0.0.{id}:5432"),
        };
        let readers = [target(2), target(3)];
        let load: BTreeMap<NodeId, usize> = [(NodeId(2), 5), (NodeId(3), 1)].into();
        // (balance, turn, want)
        let cases = [
            (Balance::LeastConnections, 0, Some(3)),
            (Balance::LeastConnections, 1, Some(3)),
            (Balance::RoundRobin, 0, Some(2)),
            (Balance::RoundRobin, 1, Some(3)),
            (Balance::RoundRobin, 2, Some(2)),
        ];
        for (balance, turn, want) in cases {
            let got = pick_reader(&readers, &load, turn, balance).map(|t| t.node.0);
            assert_eq!(got, want, "{balance:?} turn {turn}");
        }
        // Equal load: ties go in turn.
        let even = BTreeMap::new();
        let picks: Vec<u64> = (0..4)
            .map(|turn| {
                pick_reader(&readers, &even, turn, Balance::LeastConnections)
                    .unwrap()
                    .node
                    .0
            })
            .collect();
        assert_eq!(picks, [2, 3, 2, 3]);
        assert!(pick_reader(&[], &even, 0, Balance::RoundRobin).is_none());
    }

    #[test]
    fn an_error_response_is_a_well_formed_postgresql_message() {
        let message = error_response("57P03", "no primary");
        assert_eq!(message[0], b'E');
        let len = u32::from_be_bytes([message[1], message[2], message[3], message[4]]) as usize;
        assert_eq!(
            len,
            message.len() - 1,
            "the length counts itself, not the type byte"
        );
        assert_eq!(
            &message[5..],
            b"SFATAL\0VFATAL\0C57P03\0Mno primary\0\0".as_slice()
        );
    }
}
