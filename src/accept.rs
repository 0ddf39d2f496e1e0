//! Accepting connections on the ports anyone on the network can reach before any
//! authentication: the peer port (7400) and the REST port (8008). Each has a cap on the
//! connections open at once, so that a flood of idle connections cannot take the file
//! descriptors this member needs for its own Raft, status and PostgreSQL connections (a lease
//! it cannot renew costs a failover); over the cap a connection is closed at once. A failing
//! `accept` (out of descriptors, say) is retried with a back-off instead of a busy loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The first wait after a failed `accept`; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often refusals over the cap are logged (with their count).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// A listener with a cap on the connections open at once.
pub struct Gate {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    max: usize,
    port: &'static str,
    refused: u64,
    last_report: Option<Instant>,
}

/// One accepted connection; it counts against the cap until `permit` is dropped.
pub struct Admitted {
    pub tcp: TcpStream,
    pub remote: SocketAddr,
    pub permit: OwnedSemaphorePermit,
}

impl Gate {
    /// `port` names the port in log lines ("peer", "REST").
    pub fn new(listener: TcpListener, max: usize, port: &'static str) -> Gate {
        Gate {
            listener,
            permits: Arc::new(Semaphore::new(max)),
            max,
            port,
            refused: 0,
            last_report: None,
        }
    }

    /// The next connection under the cap. Connections over it are closed as they arrive;
    /// `accept` errors are logged and retried after a growing pause.
    pub async fn accept(&mut self) -> Admitted {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.listener.accept().await {
                Ok((tcp, remote)) => match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        return Admitted {
                            tcp,
                            remote,
                            permit,
                        }
                    }
                    Err(_) => {
                        drop(tcp);
                        self.note_refusal();
                    }
                },
                Err(e) => {
                    tracing::warn!(port = self.port, error = %e, retry_in = ?backoff, "accepting a connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn note_refusal(&mut self) {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_report
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                port = self.port,
                max = self.max,
                refused = self.refused,
                "connection limit reached: closing new connections at once"
            );
            self.last_report = Some(now);
        }
    }
}
