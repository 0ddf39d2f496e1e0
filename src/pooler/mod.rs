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
    target: Mutex<Option<(String, u32, u32)>>,
}

impl CancelSlot {
    pub fn set(&self, server: Option<&server::Server>) {
        let target = server.map(|s| (s.target.addr.clone(), s.key.0, s.key.1));
        *self.target.lock().expect("cancel lock poisoned") = target;
    }

    pub fn get(&self) -> Option<(String, u32, u32)> {
        self.target.lock().expect("cancel lock poisoned").clone()
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

/// Binds the pooled port, before anything starts, so that a taken port fails startup.
pub async fn bind(config: &PoolerConfig) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "binding the pooler port {} ([pooler] listen)",
            config.listen
        )
    })
}

/// What the pooler runs on.
pub struct Inputs {
    pub listener: TcpListener,
    pub postgres: Arc<crate::postgres::Postgres>,
    /// The proxy's routing table, which the pools follow.
    pub routes: tokio::sync::watch::Receiver<crate::proxy::Routes>,
    /// The cluster state, for planned switchovers.
    pub view: tokio::sync::watch::Receiver<Arc<crate::raft::ClusterView>>,
    /// TLS for clients that ask for it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Starts the pooler. Returns its pools, for visibility.
pub fn start(
    config: &PoolerConfig,
    inputs: Inputs,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Arc<pool::Pools> {
    let pools = Arc::new(pool::Pools::new(
        config.limits.clone(),
        inputs.routes,
        inputs.view,
    ));
    let deps = session::Deps {
        postgres: inputs.postgres,
        pools: pools.clone(),
        auth_timeout: config.auth_timeout,
        clients: Arc::new(tokio::sync::Semaphore::new(config.max_client_conn)),
        max_client_conn: config.max_client_conn,
        cancels: Default::default(),
        tls: inputs.tls,
    };
    spawn(inputs.listener, deps, shutdown, tasks);
    pools
}

/// Accepts clients until `shutdown`, each served on its own task.
fn spawn(
    listener: TcpListener,
    deps: session::Deps,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let deps = Arc::new(deps);
    let connections = tasks.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(session::serve(stream, deps.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "pooler: accepting a connection"),
                },
            }
        }
    });
}
