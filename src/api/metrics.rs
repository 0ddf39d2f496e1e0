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
    let metrics: [(&str, &str, Option<u64>); 14] = [
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
            flag(pg.is_some_and(|pg| pg.running && !pg.in_recovery)),
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
    if let Some(proxy) = &input.proxy {
        render_proxy(&mut out, input, proxy);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::Lsn;

    fn input() -> MetricsInput {
        MetricsInput {
            cluster_id: "c1".into(),
            name: "n2".into(),
            vip_held: None,
            raft_term: 4,
            raft_leader: false,
            lease_epoch: 3,
            lease_holder: false,
            members: 3,
            pg: Some(PgStatus {
                running: true,
                in_recovery: true,
                timeline: 2,
                wal_position: Some(Lsn(0x3000060)),
                replayed: Some(Lsn(0x3000000)),
                streaming: true,
                pending_restart: false,
                replay_delay_ms: None,
                primary_end: Some(Lsn(0x3000060)),
            }),
            replication_lag: Some(96),
            synchronous: false,
            proxy: None,
            names: Default::default(),
        }
    }

    /// The sample lines of `text`, as (name, value).
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, rest) = l.split_once('{').expect("labels");
                let (_, value) = rest.rsplit_once("} ").expect("a value after the labels");
                (name.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn a_replica_reports_every_metric_with_help_type_and_labels() {
        let text = render(&input());
        let expected = [
            ("pgquorum_up", "1"),
            ("pgquorum_raft_term", "4"),
            ("pgquorum_raft_leader", "0"),
            ("pgquorum_lease_epoch", "3"),
            ("pgquorum_lease_changes_total", "2"),
            ("pgquorum_lease_holder", "0"),
            ("pgquorum_members", "3"),
            ("pgquorum_postgres_running", "1"),
            ("pgquorum_postgres_primary", "0"),
            ("pgquorum_postgres_timeline", "2"),
            ("pgquorum_postgres_wal_position_bytes", "50331744"),
            ("pgquorum_replication_lag_bytes", "96"),
            ("pgquorum_synchronous_standby", "0"),
        ];
        assert_eq!(
            samples(&text),
            expected.map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert!(text.contains(
            "# HELP pgquorum_raft_term The current Raft term.\n\
             # TYPE pgquorum_raft_term gauge\n\
             pgquorum_raft_term{cluster=\"c1\",member=\"n2\"} 4\n"
        ));
        assert!(text.contains("# TYPE pgquorum_lease_changes_total counter\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_vip_is_reported_only_where_this_member_manages_it() {
        let sample = |vip_held| {
            samples(&render(&MetricsInput {
                vip_held,
                ..input()
            }))
            .into_iter()
            .find(|(name, _)| name == "pgquorum_vip_held")
            .map(|(_, value)| value)
        };
        let cases = [
            ("on this member's interface", Some(true), Some("1")),
            ("managed here, on another member", Some(false), Some("0")),
            ("no VIP, or hook mode", None, None),
        ];
        for (what, held, want) in cases {
            assert_eq!(sample(held).as_deref(), want, "{what}");
        }
    }

    #[test]
    fn unknown_values_are_left_out() {
        let primary = MetricsInput {
            raft_leader: true,
            lease_holder: true,
            pg: Some(PgStatus {
                in_recovery: false,
                replayed: None,
                ..input().pg.unwrap()
            }),
            replication_lag: None,
            ..input()
        };
        let names = |i: &MetricsInput| -> Vec<String> {
            samples(&render(i)).into_iter().map(|(n, _)| n).collect()
        };
        let got = samples(&render(&primary));
        assert!(got.contains(&("pgquorum_postgres_primary".into(), "1".into())));
        assert!(got.contains(&("pgquorum_lease_holder".into(), "1".into())));
        assert!(!names(&primary).contains(&"pgquorum_replication_lag_bytes".to_string()));

        let witness = MetricsInput {
            pg: None,
            replication_lag: None,
            ..input()
        };
        assert_eq!(
            names(&witness),
            [
                "pgquorum_up",
                "pgquorum_raft_term",
                "pgquorum_raft_leader",
                "pgquorum_lease_epoch",
                "pgquorum_lease_changes_total",
                "pgquorum_lease_holder",
                "pgquorum_members",
                "pgquorum_postgres_running",
                "pgquorum_postgres_primary",
                "pgquorum_synchronous_standby",
            ]
        );
        assert!(
            render(&witness).contains("pgquorum_postgres_running{cluster=\"c1\",member=\"n2\"} 0")
        );
    }

    #[test]
    fn proxy_counters_are_labelled_by_port_and_backend_name() {
        use crate::proxy::stats::{Port, Stats};
        let stats = Stats::default();
        stats.opened(Port::Writer, crate::cluster::NodeId(1));
        stats.refused(Port::Reader);
        let with_proxy = MetricsInput {
            proxy: Some(stats.snapshot()),
            names: [(crate::cluster::NodeId(1), "n1".to_string())]
                .into_iter()
                .collect(),
            ..input()
        };
        let text = render(&with_proxy);
        for line in [
            "pgquorum_proxy_connections_active{cluster=\"c1\",member=\"n2\",port=\"writer\",backend=\"n1\"} 1",
            "pgquorum_proxy_connections_total{cluster=\"c1\",member=\"n2\",port=\"writer\",backend=\"n1\"} 1",
            "pgquorum_proxy_refused_total{cluster=\"c1\",member=\"n2\",port=\"reader\"} 1",
            "pgquorum_proxy_writer_changes_total{cluster=\"c1\",member=\"n2\"} 0",
            "# TYPE pgquorum_proxy_connections_total counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!render(&input()).contains("pgquorum_proxy_"));
    }

    #[test]
    fn label_values_are_escaped() {
        let odd = MetricsInput {
            cluster_id: "a\"b\\c\nd".into(),
            ..input()
        };
        assert!(render(&odd).contains(r#"pgquorum_up{cluster="a\"b\\c\nd",member="n2"} 1"#));
    }
}
