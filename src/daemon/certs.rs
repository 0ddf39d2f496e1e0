//! This member's certificates, renewed while the daemon runs, two thirds into their
//! lifetime, with no restart: those of its client-facing services (its REST API and its
//! PostgreSQL, `[tls] server_certificate_lifetime`), issued from the cluster CA at start,
//! which the API presents from the next handshake and PostgreSQL from its next reload; and
//! its node certificate (`[tls] node_certificate_lifetime`), rotated as `pgquorum cert
//! rotate` does (`crate::rotate`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{NodeConfig, PostgresqlConfig};
use crate::postgres::Postgres;
use crate::tls::{self, CertSlot, ServerCert};

/// How long a failed renewal waits before it tries again.
const RETRY: Duration = Duration::from_secs(60);
/// Likewise for the node certificate, whose rotation needs every member up (and commits
/// two entries when one is not).
const NODE_RETRY: Duration = Duration::from_secs(10 * 60);
/// The longest the renewal task sleeps at once, so a clock set forward is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60 * 60);

/// The names of the service certificates (in their common names, logs and `/metrics`).
pub(super) const API: &str = "api";
/// The pooled port's service name.
pub(super) const POOLER: &str = "pooler";
pub(super) const POSTGRESQL: &str = "postgresql";

/// Issues this member's service certificates.
#[derive(Clone)]
pub(super) struct Issuer {
    /// Its current CA signs them.
    pub authority: Arc<tls::Authority>,
    pub node_id: u64,
    pub cluster_id: String,
    pub lifetime: Duration,
}

impl Issuer {
    /// A certificate for `service` (`api`, `postgresql`) naming `hosts`.
    pub fn issue(&self, service: &str, hosts: &[String]) -> anyhow::Result<ServerCert> {
        (self.authority.current())
            .issue_server(
                self.node_id,
                &self.cluster_id,
                service,
                hosts,
                self.lifetime,
            )
            .with_context(|| format!("issuing the {service} certificate"))
    }
}

/// Where a renewed certificate goes.
pub(super) enum Holder {
    Api(Arc<CertSlot>),
    /// The pooled port's certificate, presented from the next handshake on.
    Pooler(Arc<CertSlot>),
    /// PostgreSQL's certificate, and its CA file (for clients and for replication's
    /// `verify-full`): the CAs the authority trusts.
    Postgres {
        pg: Arc<Postgres>,
        authority: Arc<tls::Authority>,
    },
    /// pgBackRest's certificate (server and client), and the CAs it trusts; its server
    /// is restarted on it by `crate::backup`.
    Backrest {
        pg: Arc<Postgres>,
        authority: Arc<tls::Authority>,
    },
    /// The node certificate: rotated, not just reissued.
    Node(Arc<crate::rotate::Rotator>),
}

impl Holder {
    /// The certificate's name in logs and `/metrics`, and the service it is issued for.
    fn name(&self) -> &'static str {
        match self {
            Holder::Api(_) => API,
            Holder::Pooler(_) => POOLER,
            Holder::Postgres { .. } => POSTGRESQL,
            Holder::Backrest { .. } => tls::BACKREST_SERVICE,
            Holder::Node(_) => "node",
        }
    }
}

/// One service's certificate, kept fresh.
pub(super) struct Renewal {
    pub hosts: Vec<String>,
    pub holder: Holder,
    /// When to renew next: two thirds into the current certificate, or a retry.
    pub due: SystemTime,
    /// When the current certificate expires.
    pub expires: SystemTime,
}

/// A certificate just renewed: when to renew it next, and when it expires.
struct Fresh {
    due: SystemTime,
    expires: SystemTime,
}

/// When the node certificate `cert_pem` is due and expires.
fn node_cert_times(cert_pem: &str) -> anyhow::Result<Fresh> {
    let due = tls::node_cert_renew_at(cert_pem);
    let expires = tls::validity_of_cert_pem(cert_pem).map(|(_, until)| until);
    match (due, expires) {
        (Some(due), Some(expires)) => Ok(Fresh { due, expires }),
        _ => Err(anyhow::anyhow!(
            "this member's certificate has no readable validity"
        )),
    }
}

impl Renewal {
    /// This member's node certificate `cert_pem`, rotated by `rotator`.
    pub fn node(rotator: Arc<crate::rotate::Rotator>, cert_pem: &str) -> anyhow::Result<Self> {
        let times = node_cert_times(cert_pem)?;
        Ok(Self {
            hosts: Vec::new(),
            due: times.due,
            expires: times.expires,
            holder: Holder::Node(rotator),
        })
    }

    /// Renews the certificate; returns when the next renewal is due and when the new
    /// certificate expires.
    async fn renew(&self, issuer: &Issuer) -> anyhow::Result<Fresh> {
        let cert = match &self.holder {
            Holder::Node(rotator) => {
                // Not again if an operator rotated it since (`pgquorum cert rotate`).
                let current = tls::NodeIdentity::load(&rotator.state_dir)?;
                let times = node_cert_times(current.cert_pem())?;
                if times.due > SystemTime::now() {
                    return Ok(times);
                }
                rotator.rotate().await?;
                let current = tls::NodeIdentity::load(&rotator.state_dir)?;
                return node_cert_times(current.cert_pem());
            }
            Holder::Api(slot) | Holder::Pooler(slot) => {
                let cert = issuer.issue(self.holder.name(), &self.hosts)?;
                slot.replace(&cert.cert_pem, &cert.key_pem)
                    .with_context(|| {
                        format!("loading the new {} certificate", self.holder.name())
                    })?;
                cert
            }
            Holder::Backrest { pg, authority } => {
                let cert = issuer.issue(self.holder.name(), &self.hosts)?;
                pg.install_backrest_tls(&cert.cert_pem, cert.key_pem.expose(), &authority.bundle())
                    .context("writing pgBackRest's TLS files")?;
                cert
            }
            Holder::Postgres { pg, authority } => {
                let cert = issuer.issue(self.holder.name(), &self.hosts)?;
                pg.install_tls(&cert.cert_pem, cert.key_pem.expose(), &authority.bundle())
                    .context("writing PostgreSQL's TLS files")?;
                // A stopped PostgreSQL reads the files when it starts; a starting one,
                // which takes no connection for pg_reload_conf(), still gets the signal.
                pg.reload_files()
                    .context("reloading PostgreSQL after renewing its certificate")?;
                cert
            }
        };
        tracing::info!(
            service = self.holder.name(),
            valid_until = %humantime::format_rfc3339_seconds(cert.not_after),
            "renewed the service certificate"
        );
        Ok(Fresh {
            due: cert.renew_at(),
            expires: cert.not_after,
        })
    }

    pub fn new(hosts: Vec<String>, holder: Holder, current: &ServerCert) -> Self {
        Self {
            hosts,
            holder,
            due: current.renew_at(),
            expires: current.not_after,
        }
    }
}

/// Renews each of `renewals` when it is due, and the service certificates whenever
/// `renew_now` is notified (the CAs changed), until `shutdown`. A failure is logged and
/// retried a minute later; the old certificate serves meanwhile.
pub(super) async fn renew(
    issuer: Issuer,
    mut renewals: Vec<Renewal>,
    expiries: Arc<tls::Expiries>,
    renew_now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    for renewal in &renewals {
        expiries.set(renewal.holder.name(), renewal.expires);
    }
    loop {
        let Some(next) = renewals.iter().map(|r| r.due).min() else {
            return;
        };
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(MAX_SLEEP);
        let now = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => SystemTime::now(),
            _ = renew_now.notified() => {
                let now = SystemTime::now();
                for renewal in renewals.iter_mut().filter(|r| !matches!(r.holder, Holder::Node(_))) {
                    renewal.due = now;
                }
                now
            }
        };
        for renewal in renewals.iter_mut().filter(|r| r.due <= now) {
            match renewal.renew(&issuer).await {
                Ok(fresh) => {
                    renewal.due = fresh.due;
                    renewal.expires = fresh.expires;
                    expiries.set(renewal.holder.name(), fresh.expires);
                }
                Err(error) => {
                    let retry = match renewal.holder {
                        Holder::Node(_) => NODE_RETRY,
                        _ => RETRY,
                    };
                    tracing::warn!(
                        service = renewal.holder.name(),
                        error = format!("{error:#}"),
                        retry_in = %humantime::format_duration(retry),
                        "renewing the certificate failed; the current one serves until it \
                         expires"
                    );
                    renewal.due = now + retry;
                }
            }
        }
    }
}

/// The names PostgreSQL's certificate carries: its advertised host, its listen address
/// when specific, and loopback.
pub(super) fn postgres_hosts(pg: &PostgresqlConfig) -> Vec<String> {
    hosts(&pg.advertise, pg.listen)
}

/// The names the API's certificate carries, likewise.
/// TLS for the pooled port, with a certificate of the cluster CA for this member's names,
/// renewed like the API's; `None` without a pooler.
pub(super) fn pooler_tls(
    config: &NodeConfig,
    issuer: &Issuer,
    renewals: &mut Vec<Renewal>,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let Some(pooler) = &config.pooler else {
        return Ok(None);
    };
    let hosts = hosts(&config.api_advertise, pooler.listen);
    let cert = issuer.issue(POOLER, &hosts)?;
    let slot = CertSlot::of_service(&cert).context("loading the pooler's certificate")?;
    let server = tls::plain_server_config(slot.clone())
        .context("building the pooler's TLS configuration")?;
    renewals.push(Renewal::new(hosts, Holder::Pooler(slot), &cert));
    Ok(Some(server))
}

pub(super) fn api_hosts(config: &NodeConfig) -> Vec<String> {
    hosts(&config.api_advertise, config.api_listen)
}

fn hosts(advertise: &str, listen: std::net::SocketAddr) -> Vec<String> {
    let mut hosts = vec![crate::net::host_of(advertise).to_string()];
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    for host in ["localhost", "127.0.0.1", "::1"] {
        if !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
    }
    hosts
}
