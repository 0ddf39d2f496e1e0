//! The pooler's metrics: one sample per pool (database and role), as PgBouncer's exporters
//! name them (`cl_active`, `cl_waiting`, `sv_active`, `sv_idle`, `maxwait`).

use std::fmt::Write as _;

use super::{escape, MetricsInput};
use crate::pooler::pool::{PoolStats, PoolsReport};

/// A per-pool metric: name, type, help, and how to read it.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PoolStats) -> f64,
);

pub(super) fn render(out: &mut String, input: &MetricsInput, report: &PoolsReport) {
    let base = format!(
        "cluster=\"{}\",member=\"{}\"",
        escape(&input.cluster_id),
        escape(&input.name)
    );
    let families: [Family; 6] = [
        (
            "pgquorum_pooler_clients",
            "gauge",
            "Clients logged in to the pooled port, by pool.",
            |p| p.clients as f64,
        ),
        (
            "pgquorum_pooler_clients_waiting",
            "gauge",
            "Requests waiting for a server connection (or held for a switchover), by pool.",
            |p| p.waiting as f64,
        ),
        (
            "pgquorum_pooler_server_connections_active",
            "gauge",
            "Server connections a client holds, by pool.",
            |p| p.active as f64,
        ),
        (
            "pgquorum_pooler_server_connections_idle",
            "gauge",
            "Idle server connections, by pool.",
            |p| p.idle as f64,
        ),
        (
            "pgquorum_pooler_server_logins_total",
            "counter",
            "Server connections opened, by pool.",
            |p| p.logins as f64,
        ),
        (
            "pgquorum_pooler_max_wait_seconds",
            "gauge",
            "The longest a request waited for a server connection since start, by pool.",
            |p| p.max_wait_ms as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for pool in &report.pools {
            let _ = writeln!(
                out,
                "{name}{{{base},database=\"{}\",user=\"{}\",side=\"{}\"}} {}",
                escape(&pool.database),
                escape(&pool.user),
                match pool.side {
                    crate::pooler::pool::Side::Writer => "writer",
                    crate::pooler::pool::Side::Reader => "reader",
                },
                value(pool)
            );
        }
    }
    let name = "pgquorum_pooler_paused";
    let _ = writeln!(
        out,
        "# HELP {name} 1 while new transactions are held for a switchover."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{{{base}}} {}", u8::from(report.paused));
}
