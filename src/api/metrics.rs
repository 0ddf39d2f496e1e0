//! `GET /metrics`: this member's view in the Prometheus text format (version 0.0.4),
//! formatted by hand by the pure [`render`]. Every sample carries `cluster` and `member`
//! labels; a metric whose value is unknown (no PostgreSQL, no status yet, not a replica) is
//! left out rather than reported as 0.

use std::fmt::Write;

use crate::postgres::PgStatus;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` reports, gathered by the API for each scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsInput {
    pub cluster_id: String,
    pub name: String,
    pub raft_term: u64,
    pub raft_leader: bool,
    /// The epoch of the current lease, or of the last one when the lease is free.
    pub lease_epoch: u64,
    pub lease_holder: bool,
    pub members: usize,
    /// This member's PostgreSQL as of the last HA cycle; `None` for a witness or before the
    /// first cycle.
    pub pg: Option<PgStatus>,
    /// Bytes of WAL this replica has not replayed yet compared with the lease holder's
    /// position; `None` on a primary or when either position is unknown.
    pub replication_lag: Option<u64>,
    /// This member is a recorded synchronous standby.
    pub synchronous: bool,
    /// The proxy's counters, when it runs.
    pub proxy: Option<crate::proxy::stats::Snapshot>,
    /// Whether this member's interface carries the VIP; `None` unless the VIP is managed
    /// here (netlink mode).
    pub vip_held: Option<bool>,
    /// Member names by id, for the proxy's `backend` label.
    pub names: std::collections::BTreeMap<crate::cluster::NodeId, String>,
    /// When each of this member's certificates expires (Unix seconds), by name.
    pub certificates: Vec<(&'static str, u64)>,
    /// A CA rotation is under way (both CAs trusted until `ca rotate --finish`).
    pub ca_rotation: bool,
    /// With `[backup]` configured: what this member knows of backups and archiving.
    pub backup: Option<BackupMetrics>,
    /// The pooler's pools, when it runs.
    pub pools: Option<crate::pooler::pool::PoolsReport>,
}

/// The backup metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackupMetrics {
    /// The archiver of this member's PostgreSQL, when it is the writable primary (the one
    /// member that archives).
    pub archiver: Option<crate::postgres::Archiver>,
    /// When the last successful backup finished (Unix seconds).
    pub last_success_unix: Option<u64>,
    pub running: bool,
    /// How the last restore drill (`pgquorum backup verify`) ended: passed, and when.
    pub last_verify: Option<(bool, u64)>,
}

/// The exposition text: for each known metric a `# HELP`, a `# TYPE` and one sample line.
pub fn render(input: &MetricsInput) -> String {
    let labels = format!(
        "{{cluster=\"{}\",member=\"{}\"}}",
        escape(&input.cluster_id),
        escape(&input.name)
    );
    let flag = |b: bool| Some(u64::from(b));
    let pg = input.pg.as_ref();
    let backup = input.backup.as_ref();
    let archiver = backup.and_then(|b| b.archiver);
    let metrics: [(&str, &str, Option<u64>); 22] = [
        (
            "pgquorum_up",
            "Whether the pgquorum daemon answers (always 1).",
            Some(1),
        ),
        (
            "pgquorum_raft_term",
            "The current Raft term.",
            Some(input.raft_term),
        ),
        (
            "pgquorum_raft_leader",
            "Whether this member is the Raft leader.",
            flag(input.raft_leader),
        ),
        (
            "pgquorum_lease_epoch",
            "The fencing epoch of the leader lease (of the last one when it is free).",
            Some(input.lease_epoch),
        ),
        (
            "pgquorum_lease_changes_total",
            "Times the leader lease went to a new tenure after the first (failovers and \
             switchovers; the same on every member).",
            Some(input.lease_epoch.saturating_sub(1)),
        ),
        (
            "pgquorum_lease_holder",
            "Whether this member holds the leader lease.",
            flag(input.lease_holder),
        ),
        (
            "pgquorum_members",
            "Members in the committed cluster state.",
            Some(input.members as u64),
        ),
        (
            "pgquorum_postgres_running",
            "Whether this member's PostgreSQL accepts connections.",
            flag(pg.is_some_and(|pg| pg.running)),
        ),
        (
            "pgquorum_postgres_primary",
            "Whether this member's PostgreSQL runs out of recovery (writable).",
            flag(pg.is_some_and(PgStatus::is_writable)),
        ),
        (
            "pgquorum_postgres_timeline",
            "The timeline of this member's PostgreSQL.",
            pg.map(|pg| u64::from(pg.timeline)).filter(|tl| *tl != 0),
        ),
        (
            "pgquorum_postgres_wal_position_bytes",
            "WAL position of this member's PostgreSQL: current on a primary, highest of \
             received and replayed on a replica.",
            pg.and_then(|pg| pg.wal_position).map(|lsn| lsn.0),
        ),
        (
            "pgquorum_replication_lag_bytes",
            "Bytes of WAL this replica has not replayed compared with the lease holder.",
            input.replication_lag,
        ),
        (
            "pgquorum_synchronous_standby",
            "Whether this member is a recorded synchronous standby.",
            flag(input.synchronous),
        ),
        (
            "pgquorum_ca_rotation_in_progress",
            "Whether a CA rotation is under way: every member trusts the old and the new CA \
             until `pgquorum ca rotate --finish`.",
            flag(input.ca_rotation),
        ),
        (
            "pgquorum_archive_failing",
            "Whether WAL archiving to the backup repository fails now on this primary (its \
             last attempt failed); writes go on and WAL waits in pg_wal.",
            archiver.map(|a| u64::from(a.failing())),
        ),
        (
            "pgquorum_archive_failures_total",
            "Failed WAL archiving attempts on this primary since its PostgreSQL started.",
            archiver.map(|a| a.failed_count),
        ),
        (
            "pgquorum_archive_last_success_timestamp_seconds",
            "When this primary last archived a WAL segment (Unix time); the archive lags by \
             the time since.",
            archiver.and_then(|a| a.archived_unix),
        ),
        (
            "pgquorum_backup_last_success_timestamp_seconds",
            "When the last successful backup finished (Unix time).",
            backup.and_then(|b| b.last_success_unix),
        ),
        (
            "pgquorum_backup_running",
            "Whether a backup is being taken.",
            backup.map(|b| u64::from(b.running)),
        ),
        (
            "pgquorum_backup_verify_last_timestamp_seconds",
            "When the last restore drill (pgquorum backup verify) ended (Unix time).",
            backup.and_then(|b| b.last_verify).map(|(_, at)| at),
        ),
        (
            "pgquorum_backup_verify_failed",
            "Whether the last restore drill failed.",
            backup
                .and_then(|b| b.last_verify)
                .map(|(ok, _)| u64::from(!ok)),
        ),
        (
            "pgquorum_vip_held",
            "Whether this member's interface carries the floating VIP.",
            input.vip_held.map(u64::from),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in metrics {
        if let Some(value) = value {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}");
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
    if !input.certificates.is_empty() {
        let name = "pgquorum_certificate_expiry_timestamp_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} When this member's certificate expires (Unix time); each is renewed \
             two thirds into its lifetime."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (certificate, at) in &input.certificates {
            let _ = writeln!(
                out,
                "{name}{{cluster=\"{}\",member=\"{}\",certificate=\"{certificate}\"}} {at}",
                escape(&input.cluster_id),
                escape(&input.name)
            );
        }
    }
    if let Some(proxy) = &input.proxy {
        render_proxy(&mut out, input, proxy);
    }
    if let Some(pools) = &input.pools {
        pooler::render(&mut out, input, pools);
    }
    out
}

/// A per-backend proxy metric: name, type, help, and how to read it.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::proxy::stats::Backend) -> u64,
);

/// The proxy's metrics, one sample per port and backend.
fn render_proxy(out: &mut String, input: &MetricsInput, proxy: &crate::proxy::stats::Snapshot) {
    let base = format!(
        "cluster=\"{}\",member=\"{}\"",
        escape(&input.cluster_id),
        escape(&input.name)
    );
    let backend =
        |id: &crate::cluster::NodeId| escape(input.names.get(id).map_or(&id.to_string(), |n| n));
    let families: [Family; 4] = [
        (
            "pgquorum_proxy_connections_active",
            "gauge",
            "Open proxied connections, by port and backend member.",
            |b| b.active,
        ),
        (
            "pgquorum_proxy_connections_total",
            "counter",
            "Proxied connections opened, by port and backend member.",
            |b| b.total,
        ),
        (
            "pgquorum_proxy_bytes_to_backend_total",
            "counter",
            "Bytes relayed from clients to PostgreSQL (counted when a connection ends).",
            |b| b.bytes_to_backend,
        ),
        (
            "pgquorum_proxy_bytes_to_client_total",
            "counter",
            "Bytes relayed from PostgreSQL to clients (counted when a connection ends).",
            |b| b.bytes_to_client,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for ((port, id), b) in &proxy.backends {
            let _ = writeln!(
                out,
                "{name}{{{base},port=\"{}\",backend=\"{}\"}} {}",
                port.label(),
                backend(id),
                value(b)
            );
        }
    }
    let name = "pgquorum_proxy_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Client connections the proxy refused (no backend, too many, unreachable)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (port, n) in &proxy.refused {
        let _ = writeln!(out, "{name}{{{base},port=\"{}\"}} {n}", port.label());
    }
    let name = "pgquorum_proxy_writer_changes_total";
    let _ = writeln!(out, "# HELP {name} Times the writer route changed.");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name}{{{base}}} {}", proxy.writer_changes);
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

mod pooler;
#[cfg(test)]
mod tests;
