//! The pooler (issue 20, under construction): a PostgreSQL-aware port on every member, fed
//! by the same lease-bound routing as the proxy, that logs clients in itself and hands
//! their transactions to pooled server connections.
//!
//! Built so far (`[pooler] listen`, off by default): the server's side of the protocol
//! until login ([`wire`]), SCRAM-SHA-256 at both ends from a role's verifier ([`scram`]),
//! so that a client's login yields the key the pooler logs in to PostgreSQL with and no
//! password is stored ([`session`]); pools of server connections per database and role
//! ([`pool`], [`server`]) handed out per session or per transaction ([`relay`]), with
//! named prepared statements following their client ([`statements`], [`track`]). Not yet:
//! TLS to clients and to PostgreSQL, pause for switchovers, reader pools.

pub mod negotiate;
pub mod pool;
pub mod relay;
pub mod scram;
pub mod server;
pub mod session;
pub mod statements;
pub mod track;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `[pooler]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolerConfig {
    pub listen: SocketAddr,
    /// The reader pooled port, whose pools go to the replicas, if any.
    pub reader_listen: Option<SocketAddr>,
    pub auth_timeout: Duration,
    /// At most this many clients at once (PgBouncer's `max_client_conn`).
    pub max_client_conn: usize,
    pub limits: pool::Limits,
}

/// A reason to end a client's connection (or, as an ERROR, one request), told to it as a
/// PostgreSQL ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub code: String,
    pub message: String,
}

impl Fatal {
    pub fn new(code: &str, message: impl Into<String>) -> Fatal {
        Fatal {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn owned(code: String, message: String) -> Fatal {
        Fatal { code, message }
    }
}

impl From<wire::WireError> for Fatal {
    fn from(e: wire::WireError) -> Fatal {
        Fatal::new(e.code(), e.to_string())
    }
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Fatal {
        Fatal::new("08006", format!("connection failure: {e}"))
    }
}

/// Where a client's cancel request goes: the server connection it holds now, if any.
#[derive(Default)]
pub struct CancelSlot {
    /// Whether it holds one, and that connection's address and key. The address stays
    /// between transactions: set and cleared per transaction, it costs no allocation.
    target: Mutex<(bool, String, u32, u32)>,
}

impl CancelSlot {
    pub fn set(&self, server: Option<&server::Server>) {
        let mut target = self.target.lock().expect("cancel lock poisoned");
        target.0 = server.is_some();
        if let Some(s) = server {
            if target.1 != s.target.addr {
                target.1.clone_from(&s.target.addr);
            }
            (target.2, target.3) = s.key;
        }
    }

    pub fn get(&self) -> Option<(String, u32, u32)> {
        let target = self.target.lock().expect("cancel lock poisoned");
        target.0.then(|| (target.1.clone(), target.2, target.3))
    }
}

/// The keys the pooler gave its clients (BackendKeyData), to their slots.
#[derive(Default)]
pub struct Cancels {
    slots: Mutex<HashMap<(u32, u32), Arc<CancelSlot>>>,
}

impl Cancels {
    /// A new key and its slot.
    pub fn register(&self) -> ((u32, u32), Arc<CancelSlot>) {
        let mut slots = self.slots.lock().expect("cancels lock poisoned");
        loop {
            let key = (rand::random::<u32>() & 0x7fff_ffff, rand::random::<u32>());
            if let std::collections::hash_map::Entry::Vacant(entry) = slots.entry(key) {
                let slot = Arc::new(CancelSlot::default());
                entry.insert(slot.clone());
                return (key, slot);
            }
        }
    }

    pub fn remove(&self, key: (u32, u32)) {
        self.slots
            .lock()
            .expect("cancels lock poisoned")
            .remove(&key);
    }

    pub fn get(&self, key: (u32, u32)) -> Option<Arc<CancelSlot>> {
        self.slots
            .lock()
            .expect("cancels lock poisoned")
            .get(&key)
            .cloned()
    }
}

/// The pooled ports, bound.
pub struct Listeners {
    pub writer: TcpListener,
    pub reader: Option<TcpListener>,
}

/// Binds the pooled ports, before anything starts, so that a taken port fails startup.
pub async fn bind(config: &PoolerConfig) -> anyhow::Result<Listeners> {
    let bind = |addr: SocketAddr, key: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the pooler port {addr} ([pooler] {key})"))
    };
    let writer = bind(config.listen, "listen").await?;
    let reader = match config.reader_listen {
        Some(addr) => Some(bind(addr, "reader_listen").await?),
        None => None,
    };
    Ok(Listeners { writer, reader })
}

/// What the pooler runs on.
pub struct Inputs {
    pub listeners: Listeners,
    pub postgres: Arc<crate::postgres::Postgres>,
    /// The proxy's routing table, which the pools follow.
    pub routes: tokio::sync::watch::Receiver<crate::proxy::Routes>,
    /// The cluster state, for planned switchovers.
    pub view: tokio::sync::watch::Receiver<Arc<crate::raft::ClusterView>>,
    /// TLS for clients that ask for it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Starts the pooler on a thread of its own. Returns its pools, for visibility.
///
/// Like PgBouncer, the pooler relays on one thread with one event loop: a transaction's
/// four socket operations then cost no wake-up of another thread, and the runtime's workers
/// (Raft, the HA loop, the API) are not preempted by relaying. The daemon's shutdown waits
/// for the thread to finish its sessions.
pub fn start(
    config: &PoolerConfig,
    inputs: Inputs,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<pool::Pools>> {
    let pools = Arc::new(pool::Pools::new(
        config.limits.clone(),
        inputs.routes,
        inputs.view,
    ));
    // One limit on clients, one table of cancel keys and one lookup for both ports.
    let roles = Arc::new(crate::postgres::roles::RoleLookup::new(
        inputs.postgres.clone(),
    ));
    let clients = Arc::new(tokio::sync::Semaphore::new(config.max_client_conn));
    let cancels = Arc::new(Cancels::default());
    let deps = |side| session::Deps {
        roles: roles.clone(),
        pools: pools.clone(),
        side,
        auth_timeout: config.auth_timeout,
        clients: clients.clone(),
        max_client_conn: config.max_client_conn,
        cancels: cancels.clone(),
        tls: inputs.tls.clone(),
    };
    let (writer, reader) = (deps(pool::Side::Writer), deps(pool::Side::Reader));
    // The listeners move to the pooler's own reactor.
    let handing = |l: TcpListener| {
        l.into_std()
            .context("handing a pooler port to the pooler's thread")
    };
    let mut ports = vec![(handing(inputs.listeners.writer)?, writer)];
    if let Some(listener) = inputs.listeners.reader {
        ports.push((handing(listener)?, reader));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the pooler's event loop")?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("pgquorum-pooler".into())
        .spawn(move || {
            runtime.block_on(async move {
                let sessions = TaskTracker::new();
                let mut accepting = Vec::new();
                for (listener, deps) in ports {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accepting.push(accept(
                            listener,
                            Arc::new(deps),
                            shutdown.clone(),
                            sessions.clone(),
                        )),
                        Err(e) => tracing::error!(error = %e, "pooler: registering its port"),
                    }
                }
                futures_util::future::join_all(accepting).await;
                sessions.close();
                sessions.wait().await;
            });
            let _ = done.send(());
        })
        .context("starting the pooler's thread")?;
    // Err when the thread ended without a word (it panicked): nothing is left to wait for.
    tasks.spawn(async move {
        let _ = finished.await;
    });
    Ok(pools)
}

/// Accepts clients until `shutdown`, each served on its own task.
async fn accept(
    listener: TcpListener,
    deps: Arc<session::Deps>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    sessions.spawn(session::serve(stream, deps.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "pooler: accepting a connection"),
            },
        }
    }
}
