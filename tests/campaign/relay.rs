//! A userspace TCP relay that puts a one-way delay, jitter and cuts on one path between
//! hosts: the "three regions" simulation on a kernel without netem. Owns the listening
//! socket, every relayed connection and the tokio runtime (on a thread of its own) that runs
//! them, so the synchronous test harness can use it; knows nothing of what it carries.
//!
//! ```text
//!                       ┌─ reader ─► queue, due = read + delay + jitter ─► writer ─┐
//!   client ─► listen ───┤            (at most BUFFER_LIMIT bytes)                  ├─► upstream
//!                       └─ writer ◄─ queue ◄────────────────────────────── reader ◄┘
//! ```
//!
//! # Rules
//! - Each direction of each connection is a FIFO of chunks. A chunk read at `t` is written
//!   to the other side no earlier than `t + delay + j`, with `j` drawn uniformly from
//!   `[0, jitter]` per chunk; due times never decrease within a direction (a chunk drawn
//!   earlier than its predecessor waits for it), so bytes are never reordered and jitter only
//!   ever adds delay. A small exchange's round trip is therefore at least `2 × delay`.
//! - End of stream (a half-close) is queued like data and propagated with `shutdown(Write)`
//!   after the delayed data; the other direction keeps flowing until it ends too.
//! - An error reading one side (a reset) is queued like data and, once due, resets both sides;
//!   an error writing one side resets both at once.
//! - **Memory is bounded**: at most [`BUFFER_LIMIT`] bytes are queued per direction per
//!   connection. The reader reserves room before it reads, so when the queue is full the
//!   relay stops reading, the kernel buffers fill, and the sender's writes block: TCP's own
//!   backpressure. A connection thus holds at most `2 × (BUFFER_LIMIT + READ_CHUNK)` bytes
//!   (8.1 MiB), and only while a receiver lags; the limit allows `BUFFER_LIMIT / delay` of
//!   throughput per connection (40 MiB/s at 100 ms one way), far above a campaign's load.
//! - Both legs have `TCP_NODELAY`, so the relay adds no Nagle delay of its own.
//! - [`Link`] changes apply to chunks read and connections accepted from then on. Refusing
//!   accepts the connection and resets it at once (`SO_LINGER` 0), so the client sees its
//!   first read or write fail with `ECONNRESET`, not `ECONNREFUSED`. [`RelayHandle::cut`] also
//!   resets every open connection.
//! - The upstream connection is opened when the client's is accepted, without delay; if it
//!   fails, the client is reset one round trip (`2 × delay`) after it connected. The client's
//!   own handshake is answered at once by the local kernel, so a new connection's first
//!   exchange costs one round trip less than over a real WAN.
//! - Dropping the [`RelayHandle`] closes the listener, resets every connection and joins the
//!   thread.
//!
//! Limits: the relay terminates TCP, so the sender's kernel sees acknowledgements from the
//! relay, not from the far host: a cut upstream is noticed by application timeouts and
//! keepalives (gRPC pings, `wal_sender_timeout`), not by TCP retransmission timeouts
//! (`tcp_user_timeout`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::Rng as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bytes queued at most per direction per connection (read from one side, not yet written to
/// the other).
pub const BUFFER_LIMIT: usize = 4 << 20;

/// The most one read takes from a socket; room for it is reserved in the queue first.
const READ_CHUNK: usize = 64 << 10;

/// How long dropping a handle waits for connections to be reset before abandoning them.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Pause after a failed `accept` (out of file descriptors and the like), so the loop does not
/// spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// A due time this far ahead stands for "never" when a delay would overflow `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the path between two hosts does to traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// One way: a round trip through the relay costs twice this.
    pub delay: Duration,
    /// Extra delay per chunk, uniform in `[0, jitter]`; never reorders bytes.
    pub jitter: Duration,
    /// Reset new connections as soon as they are accepted; open ones are kept.
    pub drop_new_connections: bool,
}

impl Link {
    /// A link with this one-way delay, no jitter, accepting connections.
    pub fn delayed(delay: Duration) -> Link {
        Link {
            delay,
            ..Link::default()
        }
    }

    /// This link with `jitter` added.
    pub fn with_jitter(self, jitter: Duration) -> Link {
        Link { jitter, ..self }
    }

    /// The one-way delay of one chunk: `delay` plus a uniform draw from `[0, jitter]`.
    fn sample_delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.delay;
        }
        let jitter = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        self.delay
            .saturating_add(Duration::from_nanos(rand::rng().random_range(0..=jitter)))
    }
}

/// Counters since the relay started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections relayed (accepted while new connections were allowed).
    pub accepted: u64,
    /// Connections reset on arrival because new connections were dropped.
    pub refused: u64,
    /// Connections open now.
    pub open: u64,
    /// The most bytes ever queued in one direction of one connection; never above
    /// [`BUFFER_LIMIT`].
    pub peak_queued: usize,
    /// Reads from clients that returned data, over all connections: each is one chunk with
    /// its own delay draw.
    pub client_chunks: u64,
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the relay's listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the runtime of the relay {listen} -> {upstream}: {source}")]
    Runtime {
        listen: SocketAddr,
        upstream: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Starts relays; a running one is controlled through its [`RelayHandle`].
pub struct Relay;

impl Relay {
    /// Binds `listen` (port 0 picks a free port: see [`RelayHandle::local_addr`]) and relays
    /// every connection accepted there to `upstream` through `link`, on a runtime thread of
    /// its own. Returns once the listener is bound, so a client may connect at once. Fails if
    /// the address cannot be bound or the thread not started.
    pub fn spawn(
        listen: SocketAddr,
        upstream: SocketAddr,
        link: Link,
    ) -> Result<RelayHandle, Error> {
        Self::spawn_marked(listen, upstream, link, None)
    }

    /// Like [`Relay::spawn`], with every upstream connection's packets carrying firewall
    /// mark `mark` (`SO_MARK`, needs CAP_NET_ADMIN), so that a NAT rule that sends a host's
    /// traffic to this relay can let the relay's own traffic pass.
    pub fn spawn_marked(
        listen: SocketAddr,
        upstream: SocketAddr,
        link: Link,
        mark: Option<u32>,
    ) -> Result<RelayHandle, Error> {
        let bind = |source| Error::Bind {
            addr: listen,
            source,
        };
        let runtime = |source| Error::Runtime {
            listen,
            upstream,
            source,
        };
        // std's bind sets SO_REUSEADDR, so a relay can be restarted on the same port while old
        // connections are in TIME_WAIT.
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let local_addr = std_listener.local_addr().map_err(bind)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(runtime)?;
        let listener = {
            let _entered = rt.enter();
            TcpListener::from_std(std_listener).map_err(runtime)?
        };
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                link,
                epoch: stop.child_token(),
            }),
            stop: stop.clone(),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_queued: AtomicUsize::new(0),
            client_chunks: AtomicU64::new(0),
            mark,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("relay:{}", local_addr.port()))
                .spawn(move || rt.block_on(serve(listener, upstream, shared)))
                .map_err(runtime)?
        };
        Ok(RelayHandle {
            local_addr,
            upstream,
            shared,
            thread: Some(thread),
        })
    }
}

/// A running relay. Cheap to query from any thread; dropping it stops the relay (see the
/// module doc).
pub struct RelayHandle {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl RelayHandle {
    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address connections are relayed to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The link now.
    pub fn link(&self) -> Link {
        self.shared.control().link
    }

    /// Replaces the link: the delay and jitter apply to chunks read from now on (queued ones
    /// keep their due time, and order is kept if the delay shrinks), `drop_new_connections`
    /// to connections accepted from now on. Open connections are never reset by `set`.
    pub fn set(&self, link: Link) {
        self.shared.control().link = link;
    }

    /// Cuts the link: refuses new connections (as `drop_new_connections`) and resets every
    /// open one, both sides. Returns at once: the refusal applies to every connection
    /// accepted after it, the resets follow within moments on the relay's thread.
    pub fn cut(&self) {
        let mut control = self.shared.control();
        control.link.drop_new_connections = true;
        control.epoch.cancel();
        control.epoch = self.shared.stop.child_token();
    }

    /// Undoes [`cut`](Self::cut): new connections are relayed again. Connections reset by the
    /// cut stay reset; clients reconnect.
    pub fn heal(&self) {
        self.shared.control().link.drop_new_connections = false;
    }

    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            accepted: s.accepted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            open: s.open.load(Ordering::Relaxed),
            peak_queued: s.peak_queued.load(Ordering::Relaxed),
            client_chunks: s.client_chunks.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// State shared by the handle and the relay's tasks.
struct Shared {
    control: Mutex<Control>,
    /// Cancelled when the handle is dropped; every epoch is its child.
    stop: CancellationToken,
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
    peak_queued: AtomicUsize,
    client_chunks: AtomicU64,
    /// `SO_MARK` of upstream connections.
    mark: Option<u32>,
}

/// The link and the current epoch, behind one lock so that a connection accepted while a cut
/// happens either sees the cut's refusal or holds the epoch the cut cancels.
struct Control {
    link: Link,
    /// Held by every connection accepted since the last cut; the cut cancels it.
    epoch: CancellationToken,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        // Nothing panics while holding the lock; a poisoned one still holds a valid Link.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Decrements the open-connection gauge when a connection task ends, however it ends.
struct OpenConnection<'a>(&'a Shared);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accept loop; returns when the handle is dropped, after resetting every connection
/// (within [`STOP_GRACE`]).
async fn serve(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            tokio::select! {
                _ = shared.stop.cancelled() => break,
                _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
            }
        };
        let (refuse, epoch) = {
            let control = shared.control();
            (control.link.drop_new_connections, control.epoch.clone())
        };
        if refuse {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            reset(&client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        shared.open.fetch_add(1, Ordering::Relaxed);
        tracker.spawn(relay_connection(client, upstream, shared.clone(), epoch));
    }
    // New connections are refused by the kernel from here on.
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(STOP_GRACE, tracker.wait()).await;
}

/// Connects to `upstream`, marking the socket's packets with `mark` if set.
async fn connect(upstream: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let socket = match upstream {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(mark) = mark {
        socket2::SockRef::from(&socket).set_mark(mark)?;
    }
    socket.connect(upstream).await
}

/// A connection is over; `Reset` means it must end with a reset of both sides.
#[derive(Debug)]
struct Reset;

/// Relays one connection until both directions have ended, or resets both sides on a reset,
/// a write error or the end of `epoch` (a cut, or the relay stopping).
async fn relay_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    epoch: CancellationToken,
) {
    let _open = OpenConnection(&shared);
    let accepted_at = Instant::now();
    let connected = tokio::select! {
        _ = epoch.cancelled() => None,
        connected = connect(upstream, shared.mark) => connected.ok(),
    };
    let Some(mut server) = connected else {
        // As over the delayed path, the client hears of the failure a round trip later.
        let round_trip = shared.control().link.delay.saturating_mul(2);
        tokio::select! {
            _ = epoch.cancelled() => {}
            _ = wait_until(due_after(accepted_at, round_trip)) => {}
        }
        reset(&client);
        return;
    };
    // Best effort: a failure leaves Nagle on, which only adds latency.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let outcome = {
        let (from_client, to_client) = client.split();
        let (from_server, to_server) = server.split();
        tokio::select! {
            _ = epoch.cancelled() => Err(Reset),
            done = async {
                tokio::try_join!(
                    pump(from_client, to_server, &shared, Some(&shared.client_chunks)),
                    pump(from_server, to_client, &shared, None),
                )
            } => done.map(|_| ()),
        }
    };
    if outcome.is_err() {
        reset(&client);
        reset(&server);
    }
}

/// What one direction's queue carries.
enum Item {
    /// Bytes, and their room in the queue (released once written).
    Data(Vec<u8>, OwnedSemaphorePermit),
    /// The source half-closed: shut down the write side.
    Eof,
    /// The source failed: reset the connection.
    Reset,
}

/// One direction: reads `from`, delays, writes `to`, counting the chunks read in `chunks`.
/// Returns `Ok` once end of stream has been propagated, `Err` when the connection must be
/// reset.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    shared: &Shared,
    chunks: Option<&AtomicU64>,
) -> Result<(), Reset> {
    let room = Arc::new(Semaphore::new(BUFFER_LIMIT));
    let (queue, mut queued) = mpsc::unbounded_channel::<(Instant, Item)>();
    let read = async {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut last_due = Instant::now();
        loop {
            let mut reserved = room
                .clone()
                .acquire_many_owned(READ_CHUNK as u32)
                .await
                .expect("the semaphore is never closed");
            let read = from.read(&mut buf).await;
            let link = shared.control().link;
            let due = next_due(Instant::now(), link.sample_delay(), last_due);
            last_due = due;
            let item = match read {
                Ok(0) => Item::Eof,
                Ok(n) => {
                    let permit = reserved.split(n).expect("n <= READ_CHUNK permits reserved");
                    drop(reserved);
                    let queued_now = BUFFER_LIMIT - room.available_permits();
                    shared.peak_queued.fetch_max(queued_now, Ordering::Relaxed);
                    if let Some(chunks) = chunks {
                        chunks.fetch_add(1, Ordering::Relaxed);
                    }
                    Item::Data(buf[..n].to_vec(), permit)
                }
                Err(_) => Item::Reset,
            };
            let last = !matches!(item, Item::Data(..));
            // A closed queue means the writer failed and the connection is being reset.
            if queue.send((due, item)).is_err() || last {
                return Ok::<(), Reset>(());
            }
        }
    };
    let write = async {
        while let Some((due, item)) = queued.recv().await {
            wait_until(due).await;
            match item {
                Item::Data(bytes, _room) => to.write_all(&bytes).await.map_err(|_| Reset)?,
                Item::Eof => {
                    // The peer may already be gone; the other direction will tell.
                    let _ = to.shutdown().await;
                    return Ok(());
                }
                Item::Reset => return Err(Reset),
            }
        }
        Ok(())
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// The due time of a chunk read at `now` with one-way `delay`: never before the previous
/// chunk's (`last_due`), so a direction never reorders.
fn next_due(now: Instant, delay: Duration, last_due: Instant) -> Instant {
    due_after(now, delay).max(last_due)
}

/// `at + delay`, or [`FAR_FUTURE`] from `at` if that overflows.
fn due_after(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

/// Sleeps until `due` has passed (never returns early, whatever the timer's rounding).
async fn wait_until(due: Instant) {
    while Instant::now() < due {
        tokio::time::sleep_until(due).await;
    }
}

/// Closes `stream` with a reset (`SO_LINGER` 0) when its last handle is dropped.
fn reset(stream: &TcpStream) {
    // Best effort: without it the close is a FIN, which a peer also notices.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
#[path = "relay/tests.rs"]
mod tests;
