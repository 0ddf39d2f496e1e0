//! What every handler can use.

use std::sync::Arc;

use tokio::sync::watch;

use crate::lease::LeaseClock;
use crate::peers::{LocalStatus, PeerStatuses};
use crate::raft::RaftHandle;
use crate::secret::Secret;

/// What every handler can use.
#[derive(Clone)]
pub struct AppState {
    pub handle: RaftHandle,
    pub lease_clock: LeaseClock,
    pub admin_token: Secret<String>,
    /// The CAs this member signs with and trusts (join tokens pin its current one).
    pub authority: Arc<crate::tls::Authority>,
    pub name: String,
    /// This member's own status (None for a witness, or before the first HA cycle).
    pub local_status: watch::Receiver<LocalStatus>,
    /// The other members' statuses with the instant each answer arrived.
    pub peer_statuses: watch::Receiver<Arc<PeerStatuses>>,
    /// The proxy's counters, when it runs.
    pub proxy_stats: Option<Arc<crate::proxy::stats::Stats>>,
    /// The pooler's pools, when it runs.
    pub pools: Option<Arc<crate::pooler::pool::Pools>>,
    /// The configured VIP (`address/prefix`) and, in netlink mode, whether this member's
    /// interface carries it.
    pub vip: Option<String>,
    pub vip_handle: Option<crate::vip::Vip>,
    /// `[api] allowlist` (see [`super::allowlist`]).
    pub allowlist: Arc<Vec<crate::net::Network>>,
    /// Rotates this member's node certificate (`POST /admin/certificate/rotate`).
    pub rotator: Arc<crate::rotate::Rotator>,
    /// When this member's certificates expire, for `/metrics`.
    pub expiries: Arc<crate::tls::Expiries>,
    /// This member's PostgreSQL (`None` for a witness), for `pgbackrest info`.
    pub postgres: Option<Arc<crate::postgres::Postgres>>,
}
