//! The writer/reader TCP proxy every member runs (DESIGN §5): the writer port always reaches
//! the current primary, the reader port the replicas within a lag limit. Routing follows the
//! committed cluster state through the watch channel, never a polling health check.
//!
//! ```text
//!  view, peer statuses, lease clock ─► routes() ─► watch<Routes> ─► writer / reader connections
//! ```

pub mod routes;
pub mod server;
pub mod stats;

pub use routes::{routes, Balance, Inputs, Policy, Routes, Target};

use std::net::SocketAddr;
use std::time::Duration;

/// The validated `[proxy]` section.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Default `0.0.0.0:5000`.
    pub writer_listen: SocketAddr,
    /// Default `0.0.0.0:5001`.
    pub reader_listen: SocketAddr,
    /// Default 1000 per port.
    pub max_connections: usize,
    /// Default 10 s.
    pub primary_wait: Duration,
    /// Reader lag limits (default 16 MiB and 10 s), fallback on, least-connections.
    pub policy: Policy,
    /// Threads relaying connections; default 1.
    pub threads: usize,
}
