//! The node's configuration file (TOML): what this host is called, where it keeps its state,
//! where it listens, and its Raft timings.
//!
//! Two levels: [`FileConfig`] mirrors the file (every key optional, unknown keys refused),
//! [`NodeConfig`] is the validated result with defaults applied. Cluster-wide settings (ttl,
//! loop_wait, PostgreSQL parameters) are not here: they live in Raft (`cluster::DynamicConfig`).
//! Loading never binds a port, so `pgquorum config check` can run next to a live daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::raft::Timings;

/// Where packages put the config file.
pub const DEFAULT_PATH: &str = "/etc/pgquorum/pgquorum.toml";

/// A config error: always names the key (or file) and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}; pass the config file with --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Default `[tls] server_certificate_lifetime`: renewed at 60 days, so a renewal that keeps
/// failing leaves a month to notice it.
const DEFAULT_SERVER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// The shortest lifetimes accepted (tests use them to watch renewals happen); a node
/// certificate's rotation waits for every member to confirm, so it needs longer.
const MIN_SERVER_CERT_LIFETIME: Duration = Duration::from_secs(10);
const MIN_NODE_CERT_LIFETIME: Duration = Duration::from_secs(30);

mod file;
pub use file::*;

impl Profile {
    /// The timings of this profile.
    ///
    /// LAN: heartbeat 100 ms (in openraft 0.9 it is also the AppendEntries timeout, so it
    /// must exceed a round trip plus an fsync), elections after 400–800 ms. A follower
    /// campaigns only after the leader lease (= election_timeout_max) plus a random election
    /// timeout, so a dead leader is replaced in about 1.2–1.6 s.
    ///
    /// WAN (100 ms round trip): heartbeat 500 ms (5× RTT), elections 1.5–3 s (15–30× RTT):
    /// etcd's and openraft's guidance; replacement in about 4.5–6 s.
    pub fn timings(self) -> Timings {
        match self {
            Profile::Lan => Timings {
                heartbeat_interval: Duration::from_millis(100),
                election_timeout_min: Duration::from_millis(400),
                election_timeout_max: Duration::from_millis(800),
                propose_timeout: Duration::from_secs(5),
                snapshot_every: 1000,
            },
            Profile::Wan => Timings {
                heartbeat_interval: Duration::from_millis(500),
                election_timeout_min: Duration::from_millis(1500),
                election_timeout_max: Duration::from_millis(3000),
                propose_timeout: Duration::from_secs(10),
                snapshot_every: 1000,
            },
        }
    }
}

/// The validated configuration of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where it was loaded from, for messages.
    pub path: PathBuf,
    /// This member's name, unique in the cluster (default: the host name).
    pub name: String,
    /// Identity, certificates and the Raft store (default `/var/lib/pgquorum`).
    pub state_dir: PathBuf,
    /// Peer gRPC: listen address (default `0.0.0.0:7400`) and advertised `host:port`.
    pub peer_listen: SocketAddr,
    pub peer_advertise: String,
    /// REST API: listen address (default `0.0.0.0:8008`) and advertised `host:port`.
    pub api_listen: SocketAddr,
    pub api_advertise: String,
    /// `[api] allowlist`: who may call the unsafe endpoints; empty: anyone with the token.
    pub api_allowlist: Vec<crate::net::Network>,
    /// `[api] tls`: HTTPS (true, the default) or plain HTTP.
    pub api_tls: bool,
    /// `[api] verify_client`; `None` unless `api_tls`.
    pub api_verify_client: crate::tls::VerifyClient,
    /// `[tls] server_certificate_lifetime`: of the API's and PostgreSQL's certificates.
    pub server_cert_lifetime: Duration,
    /// `[tls] node_certificate_lifetime`.
    pub node_cert_lifetime: Duration,
    pub timings: Timings,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The PostgreSQL this member supervises; `None` for a witness.
    pub postgresql: Option<PostgresqlConfig>,
    /// This member's tags, published in the cluster state.
    pub tags: crate::cluster::Tags,
    /// The writer/reader proxy; `None` when disabled.
    pub proxy: Option<ProxyConfig>,
    /// `[pooler]`; `None` without `listen`.
    pub pooler: Option<crate::pooler::PoolerConfig>,
    /// `[hooks]`; all unset by default.
    pub hooks: crate::hooks::HooksConfig,
    /// `[vip]`; `None` without an address or with mode off.
    pub vip: Option<crate::vip::VipConfig>,
}

impl NodeConfig {
    /// The names a node certificate carries besides its node name: the advertised peer
    /// host.
    pub fn node_cert_sans(&self) -> Vec<String> {
        let host = crate::net::host_of(&self.peer_advertise);
        if host.is_empty() {
            Vec::new()
        } else {
            vec![host.to_string()]
        }
    }
}

pub use crate::proxy::ProxyConfig;

/// The validated `[postgresql]` section.
#[derive(Debug, Clone)]
pub struct PostgresqlConfig {
    /// Server binaries; default: the newest `/usr/lib/postgresql/*/bin` or `/usr/pgsql-*/bin`.
    pub bin_dir: Option<PathBuf>,
    /// Default `<state_dir>/pgdata`.
    pub data_dir: PathBuf,
    /// Default `127.0.0.1:5432`.
    pub listen: SocketAddr,
    /// `host:port` other members use to replicate from this one; default `listen`.
    pub advertise: String,
    /// The OS user PostgreSQL runs as when the daemon may switch users (root, or the
    /// packaged unit's capabilities); default `postgres`.
    pub os_user: String,
    /// TLS from the cluster CA for PostgreSQL (replication, clones and rewinds verified,
    /// `hostssl` for the members' roles). Default on; off only to compare or to debug, and
    /// then on every member alike: a member with TLS cannot stream from one without.
    pub tls: bool,
    /// The port of this member's pgBackRest TLS server (on `listen`'s address), through
    /// which a replica taking a backup reaches the primary; default 8432, pgBackRest's.
    pub backrest_port: u16,
}

impl NodeConfig {
    /// Reads, parses and validates the file at `path`. Binds nothing.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let file: FileConfig = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        Self::validate(path, file)
    }

    fn validate(path: &Path, file: FileConfig) -> Result<Self, Error> {
        let invalid = |message: String| Error::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let name = match file.node.name {
            Some(name) => name,
            None => hostname().ok_or_else(|| {
                invalid("[node] name is not set and the host name is unknown; set name".into())
            })?,
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(format!(
                "[node] name = {name:?} must be non-empty and use only letters, digits, '-', '_' \
                 or '.'"
            )));
        }
        let state_dir = file
            .node
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/pgquorum"));
        if !state_dir.is_absolute() {
            return Err(invalid(format!(
                "[node] state_dir = {:?} must be an absolute path",
                state_dir.display()
            )));
        }
        let peer_listen = file
            .peer
            .listen
            .unwrap_or_else(|| "0.0.0.0:7400".parse().expect("literal"));
        let api_listen = file
            .api
            .listen
            .unwrap_or_else(|| "0.0.0.0:8008".parse().expect("literal"));
        if peer_listen == api_listen {
            return Err(invalid(format!(
                "[api] listen = {api_listen} collides with [peer] listen; choose another port"
            )));
        }
        let peer_advertise =
            advertise("peer", file.peer.advertise, peer_listen).map_err(invalid)?;
        let api_advertise = advertise("api", file.api.advertise, api_listen).map_err(invalid)?;
        let api_allowlist = (file.api.allowlist.iter().flatten())
            .map(|entry| {
                entry
                    .parse()
                    .map_err(|e| invalid(format!("[api] allowlist: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let api_tls = file.api.tls.unwrap_or(true);
        let api_verify_client = file.api.verify_client.unwrap_or_default();
        if !api_tls && api_verify_client != crate::tls::VerifyClient::None {
            return Err(invalid(
                "[api] verify_client needs TLS, but [api] tls = false; remove one of them".into(),
            ));
        }
        let server_cert_lifetime = file
            .tls
            .server_certificate_lifetime
            .unwrap_or(DEFAULT_SERVER_CERT_LIFETIME);
        let node_cert_lifetime =
            (file.tls.node_certificate_lifetime).unwrap_or(crate::tls::NODE_VALIDITY);
        for (key, lifetime, min) in [
            (
                "server_certificate_lifetime",
                server_cert_lifetime,
                MIN_SERVER_CERT_LIFETIME,
            ),
            (
                "node_certificate_lifetime",
                node_cert_lifetime,
                MIN_NODE_CERT_LIFETIME,
            ),
        ] {
            if lifetime < min {
                return Err(invalid(format!(
                    "[tls] {key} = {} is too short: renewals would never rest; use at least {}",
                    humantime::format_duration(lifetime),
                    humantime::format_duration(min)
                )));
            }
        }

        let mut timings = file.raft.profile.unwrap_or(Profile::Lan).timings();
        let r = &file.raft;
        timings.heartbeat_interval = r.heartbeat_interval.unwrap_or(timings.heartbeat_interval);
        timings.election_timeout_min = r
            .election_timeout_min
            .unwrap_or(timings.election_timeout_min);
        timings.election_timeout_max = r
            .election_timeout_max
            .unwrap_or(timings.election_timeout_max);
        timings.propose_timeout = r.propose_timeout.unwrap_or(timings.propose_timeout);
        timings.snapshot_every = r.snapshot_every.unwrap_or(timings.snapshot_every);
        if timings.election_timeout_min <= timings.heartbeat_interval * 2 {
            return Err(invalid(format!(
                "[raft] election_timeout_min ({:?}) must be more than twice heartbeat_interval \
                 ({:?}); raise election_timeout_min",
                timings.election_timeout_min, timings.heartbeat_interval
            )));
        }
        if timings.election_timeout_max <= timings.election_timeout_min {
            return Err(invalid(format!(
                "[raft] election_timeout_max ({:?}) must be greater than election_timeout_min \
                 ({:?})",
                timings.election_timeout_max, timings.election_timeout_min
            )));
        }
        if timings.snapshot_every < 10 {
            return Err(invalid("[raft] snapshot_every must be at least 10".into()));
        }
        let postgresql = match file.postgresql {
            None => None,
            Some(pg) => {
                let data_dir = pg.data_dir.unwrap_or_else(|| state_dir.join("pgdata"));
                if !data_dir.is_absolute() {
                    return Err(invalid(format!(
                        "[postgresql] data_dir = {:?} must be an absolute path",
                        data_dir.display()
                    )));
                }
                let listen = pg
                    .listen
                    .unwrap_or_else(|| "127.0.0.1:5432".parse().expect("literal"));
                if listen == peer_listen || listen == api_listen {
                    return Err(invalid(format!(
                        "[postgresql] listen = {listen} collides with [peer] or [api] listen; \
                         choose another port"
                    )));
                }
                let advertise = advertise("postgresql", pg.advertise, listen).map_err(invalid)?;
                Some(PostgresqlConfig {
                    bin_dir: pg.bin_dir,
                    data_dir,
                    listen,
                    advertise,
                    os_user: pg.os_user.unwrap_or_else(|| "postgres".into()),
                    tls: pg.tls.unwrap_or(true),
                    backrest_port: pg.backrest_port.unwrap_or(8432),
                })
            }
        };
        let proxy = match file.proxy.enabled {
            Some(false) => None,
            _ => {
                let p = &file.proxy;
                let writer_listen = p
                    .writer_listen
                    .unwrap_or_else(|| "0.0.0.0:5000".parse().expect("literal"));
                let reader_listen = p
                    .reader_listen
                    .unwrap_or_else(|| "0.0.0.0:5001".parse().expect("literal"));
                let mut taken = vec![("[peer] listen", peer_listen), ("[api] listen", api_listen)];
                if let Some(pg) = &postgresql {
                    taken.push(("[postgresql] listen", pg.listen));
                }
                taken.push(("[proxy] writer_listen", writer_listen));
                for (key, addr) in [
                    ("[proxy] writer_listen", writer_listen),
                    ("[proxy] reader_listen", reader_listen),
                ] {
                    if let Some((other, _)) = taken.iter().find(|(k, a)| *a == addr && *k != key) {
                        return Err(invalid(format!(
                            "{key} = {addr} collides with {other}; choose another port"
                        )));
                    }
                }
                let max_connections = p.max_connections.unwrap_or(1000);
                if max_connections == 0 {
                    return Err(invalid(
                        "[proxy] max_connections must be at least 1; to turn the proxy off set \
                         enabled = false"
                            .into(),
                    ));
                }
                let threads = p.threads.unwrap_or(1);
                if threads == 0 || threads > 64 {
                    return Err(invalid(format!(
                        "[proxy] threads = {threads} is out of range; use 1 to 64 (1 is plenty \
                         unless the proxy relays tens of thousands of round trips a second)"
                    )));
                }
                let defaults = crate::proxy::Policy::default();
                Some(ProxyConfig {
                    writer_listen,
                    reader_listen,
                    max_connections,
                    primary_wait: p.primary_wait.unwrap_or(Duration::from_secs(10)),
                    policy: crate::proxy::Policy {
                        max_lag: p.reader_max_lag.unwrap_or(defaults.max_lag),
                        max_delay: p.reader_max_lag_time.unwrap_or(defaults.max_delay),
                        fallback_to_primary: p
                            .reader_fallback_to_primary
                            .unwrap_or(defaults.fallback_to_primary),
                        balance: p.reader_balance.unwrap_or(defaults.balance),
                    },
                    threads,
                })
            }
        };
        let hook = |key: &str, command: &Option<String>| match command {
            Some(c) if c.trim().is_empty() => Err(invalid(format!(
                "[hooks] {key} is empty; remove the key or name a command"
            ))),
            other => Ok(other.clone()),
        };
        let hooks = crate::hooks::HooksConfig {
            pre_promote: hook("pre_promote", &file.hooks.pre_promote)?,
            on_role_change: hook("on_role_change", &file.hooks.on_role_change)?,
            timeout: file.hooks.timeout.unwrap_or(Duration::from_secs(30)),
        };
        let vip = crate::vip::VipConfig::from_section(&file.vip).map_err(invalid)?;
        let pooler = match file.pooler.listen {
            None => None,
            Some(_) if proxy.is_none() || postgresql.is_none() => {
                return Err(invalid(
                    "[pooler] needs this member's PostgreSQL ([postgresql]) and the proxy (it \
                     routes by the proxy's table); remove [pooler] listen or enable both"
                        .into(),
                ))
            }
            Some(listen) if file.pooler.reader_listen == Some(listen) => {
                return Err(invalid(format!(
                    "[pooler] listen and reader_listen are both {listen}; give the reader \
                     pooled port its own (e.g. port 6433)"
                )))
            }
            Some(_)
                if file.pooler.pool_size == Some(0) || file.pooler.max_client_conn == Some(0) =>
            {
                return Err(invalid(
                    "[pooler] pool_size and max_client_conn must be at least 1".into(),
                ))
            }
            Some(listen) => Some(crate::pooler::PoolerConfig {
                listen,
                reader_listen: file.pooler.reader_listen,
                auth_timeout: file.pooler.auth_timeout.unwrap_or(Duration::from_secs(10)),
                max_client_conn: file.pooler.max_client_conn.unwrap_or(1000),
                limits: crate::pooler::pool::Limits {
                    mode: file
                        .pooler
                        .pool_mode
                        .unwrap_or(crate::pooler::pool::Mode::Session),
                    pool_size: file.pooler.pool_size.unwrap_or(20),
                    pause_timeout: file.pooler.pause_timeout.unwrap_or(Duration::from_secs(10)),
                    query_wait_timeout: (file.pooler.query_wait_timeout)
                        .unwrap_or(Duration::from_secs(120)),
                    server_idle_timeout: (file.pooler.server_idle_timeout)
                        .unwrap_or(Duration::from_secs(600)),
                },
            }),
        };
        let level = file.log.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(invalid(format!(
                "[log] level = {level:?} is not a valid filter; use e.g. \"info\" or \"pgquorum=debug\""
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            name,
            state_dir,
            peer_listen,
            peer_advertise,
            api_listen,
            api_advertise,
            api_allowlist,
            api_tls,
            api_verify_client,
            server_cert_lifetime,
            node_cert_lifetime,
            timings,
            log_format: file.log.format.unwrap_or(LogFormat::Human),
            log_level: level,
            postgresql,
            proxy,
            pooler,
            hooks,
            vip,
            tags: {
                let default = crate::cluster::Tags::default();
                crate::cluster::Tags {
                    nofailover: file.tags.nofailover.unwrap_or(default.nofailover),
                    noloadbalance: file.tags.noloadbalance.unwrap_or(default.noloadbalance),
                    failover_priority: file
                        .tags
                        .failover_priority
                        .unwrap_or(default.failover_priority),
                }
            },
        })
    }
}

/// The advertised address: explicit, or the listen address when that is specific.
fn advertise(
    section: &str,
    explicit: Option<String>,
    listen: SocketAddr,
) -> Result<String, String> {
    match explicit {
        Some(addr) => match addr.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
            Some((host, Ok(_))) if !host.is_empty() => Ok(addr),
            _ => Err(format!(
                "[{section}] advertise = {addr:?} must be host:port, e.g. \"10.0.0.1:{}\"",
                listen.port()
            )),
        },
        None if listen.ip().is_unspecified() => Err(format!(
            "[{section}] listen = {listen} is a wildcard address; set [{section}] advertise to \
             the host:port other members should use"
        )),
        None => Ok(listen.to_string()),
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests;
