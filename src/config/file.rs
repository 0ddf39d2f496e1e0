//! The config file as written ([`FileConfig`]): every key optional, unknown keys refused.
//! [`super::NodeConfig::parse`] validates it and applies the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The file as written. Every key is optional; see the `NodeConfig` fields for defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub peer: ListenSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub log: LogSection,
    /// Absent: this member runs no PostgreSQL (a Raft-only witness).
    pub postgresql: Option<PostgresqlSection>,
    /// Patroni's member tags.
    #[serde(default)]
    pub tags: TagsSection,
    /// The writer/reader proxy.
    #[serde(default)]
    pub proxy: ProxySection,
    /// The PostgreSQL-aware pooled port (under construction; off unless `listen` is set).
    #[serde(default)]
    pub pooler: PoolerSection,
    /// Role-change hooks.
    #[serde(default)]
    pub hooks: HooksSection,
    /// The floating VIP.
    #[serde(default)]
    pub vip: crate::vip::VipSection,
}

/// `[hooks]`: commands run on role changes (see `crate::hooks`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// Runs before this member is promoted; a non-zero exit aborts the promotion.
    pub pre_promote: Option<String>,
    /// Runs after this member's PostgreSQL changes role.
    pub on_role_change: Option<String>,
    /// How long a hook may run (default 30 s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// `[proxy]`: the built-in writer/reader TCP proxy (on unless `enabled = false`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub enabled: Option<bool>,
    pub writer_listen: Option<SocketAddr>,
    pub reader_listen: Option<SocketAddr>,
    /// Client connections per port; more are refused with a PostgreSQL error.
    pub max_connections: Option<usize>,
    /// How long a new writer connection waits for a primary when there is none.
    #[serde(default, with = "humantime_serde")]
    pub primary_wait: Option<Duration>,
    /// Bytes of WAL a replica may have left to replay and still take reader connections.
    pub reader_max_lag: Option<u64>,
    /// How far behind in time a replica's replay may be and still take reader connections.
    #[serde(default, with = "humantime_serde")]
    pub reader_max_lag_time: Option<Duration>,
    /// With no replica within the lag limit, send readers to the primary.
    pub reader_fallback_to_primary: Option<bool>,
    /// `"least-connections"` (default) or `"round-robin"`.
    pub reader_balance: Option<crate::proxy::Balance>,
    /// Threads relaying connections (default 1: one thread relays tens of thousands of
    /// round trips a second; more for hosts with many cores and heavy proxied traffic).
    pub threads: Option<usize>,
}

/// `[pooler]`: the pooled port (see `crate::pooler`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolerSection {
    pub listen: Option<SocketAddr>,
    /// A second pooled port whose pools go to the replicas, as the proxy's reader port
    /// (same lag limits); off by default.
    pub reader_listen: Option<SocketAddr>,
    /// How long a client may take to log in (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub auth_timeout: Option<Duration>,
    /// `session` (default, as PgBouncer's) or `transaction`.
    pub pool_mode: Option<crate::pooler::pool::Mode>,
    /// Server connections per database and role (default 20).
    pub pool_size: Option<usize>,
    /// Clients at once (default 1000).
    pub max_client_conn: Option<usize>,
    /// How long a request may wait for a server connection, or for a primary (default
    /// 120 s, PgBouncer's).
    #[serde(default, with = "humantime_serde")]
    pub query_wait_timeout: Option<Duration>,
    /// How long new transactions are held while a switchover is due (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub pause_timeout: Option<Duration>,
    /// Idle server connections older than this are closed (default 10 min).
    #[serde(default, with = "humantime_serde")]
    pub server_idle_timeout: Option<Duration>,
}

/// `[tags]`: like Patroni's. Kept apart from `cluster::Tags` so that the file refuses unknown
/// keys while the replicated type stays readable across versions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsSection {
    /// Never promote this member.
    pub nofailover: Option<bool>,
    /// Keep this member out of reader load balancing.
    pub noloadbalance: Option<bool>,
    /// Higher wins among equally advanced candidates; 0 means never promote.
    pub failover_priority: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresqlSection {
    pub bin_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub os_user: Option<String>,
    pub tls: Option<bool>,
    pub backrest_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub name: Option<String>,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    pub listen: Option<SocketAddr>,
    /// The address other members (or clients) use to reach this one; defaults to `listen`.
    pub advertise: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    /// Addresses or networks allowed to call the unsafe endpoints (Patroni's
    /// `restapi.allowlist`); empty or absent: any (the bearer token still applies).
    pub allowlist: Option<Vec<String>>,
    /// HTTPS with a certificate from the cluster CA (default true); false: plain HTTP.
    pub tls: Option<bool>,
    /// Client certificates, as Patroni's `restapi.verify_client` (default `none`).
    pub verify_client: Option<crate::tls::VerifyClient>,
}

/// `[tls]`: the certificates of the services this member offers clients (its REST API
/// and PostgreSQL), which it issues from the cluster CA and renews while it runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// How long each such certificate is valid (default 90 days); it is renewed two thirds
    /// of the way through.
    #[serde(default, with = "humantime_serde")]
    pub server_certificate_lifetime: Option<Duration>,
    /// How long the node certificates this member issues (at init, to joiners, and to
    /// itself when it rotates) are valid (default 365 days); a member rotates its own two
    /// thirds of the way through.
    #[serde(default, with = "humantime_serde")]
    pub node_certificate_lifetime: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    pub profile: Option<Profile>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub election_timeout_min: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub election_timeout_max: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub propose_timeout: Option<Duration>,
    pub snapshot_every: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<LogFormat>,
    /// A tracing filter such as `info` or `pgquorum=debug`; `RUST_LOG` overrides it.
    pub level: Option<String>,
}

/// Timing presets. `lan`: members within a few milliseconds of each other. `wan`: members
/// in different regions, up to ~100 ms round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Lan,
    Wan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}
