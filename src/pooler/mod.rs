//! The pooler (issue 20, under construction): a PostgreSQL-aware port on every member, fed
//! by the same lease-bound routing as the proxy, that logs clients in itself and hands
//! their transactions to pooled server connections.
//!
//! Built so far (`[pooler] listen`, off by default): the server's side of the protocol
//! until login ([`wire`]), SCRAM-SHA-256 at both ends from a role's verifier ([`scram`]),
//! so that a client's login yields the key the pooler logs in to PostgreSQL with and no
//! password is stored, and sessions relayed to the primary ([`session`]). Not yet: reuse of
//! server connections (session and transaction pooling), TLS to clients and to PostgreSQL,
//! pause, visibility.

pub mod scram;
pub mod session;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
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

/// Accepts clients until `shutdown`, each served on its own task.
pub fn spawn(
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
