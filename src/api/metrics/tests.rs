//! The Prometheus text: every metric with its help, type and labels; unknown values left out.

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
            archive: None,
        }),
        replication_lag: Some(96),
        synchronous: false,
        proxy: None,
        pools: None,
        names: Default::default(),
        certificates: Vec::new(),
        ca_rotation: false,
        backup: None,
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
        ("pgquorum_ca_rotation_in_progress", "0"),
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
fn backups_and_a_failing_archiver_are_reported_with_backup_configured() {
    let with = |backup| {
        samples(&render(&MetricsInput { backup, ..input() }))
            .into_iter()
            .filter(|(name, _)| {
                name.starts_with("pgquorum_archive") || name.starts_with("pgquorum_backup")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(with(None), [], "no [backup], no backup metrics");
    let failing = crate::postgres::Archiver {
        failed_count: 7,
        archived_unix: Some(1_000),
        failed_unix: Some(1_060),
    };
    let got = with(Some(BackupMetrics {
        archiver: Some(failing),
        last_success_unix: Some(900),
        running: false,
        last_verify: Some((false, 950)),
    }));
    let want = [
        ("pgquorum_archive_failing", "1"),
        ("pgquorum_archive_failures_total", "7"),
        ("pgquorum_archive_last_success_timestamp_seconds", "1000"),
        ("pgquorum_backup_last_success_timestamp_seconds", "900"),
        ("pgquorum_backup_running", "0"),
        ("pgquorum_backup_verify_last_timestamp_seconds", "950"),
        ("pgquorum_backup_verify_failed", "1"),
    ];
    assert_eq!(got, want.map(|(n, v)| (n.to_string(), v.to_string())));
    let replica = with(Some(BackupMetrics {
        archiver: None,
        last_success_unix: None,
        running: true,
        last_verify: None,
    }));
    assert_eq!(
        replica,
        [("pgquorum_backup_running".to_string(), "1".to_string())],
        "a replica does not archive"
    );
    let recovered = crate::postgres::Archiver {
        archived_unix: Some(1_100),
        ..failing
    };
    assert!(!recovered.failing(), "archived after the last failure");
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
            "pgquorum_ca_rotation_in_progress",
        ]
    );
    assert!(render(&witness).contains("pgquorum_postgres_running{cluster=\"c1\",member=\"n2\"} 0"));
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
fn certificate_expiries_are_labelled_by_certificate() {
    let text = render(&MetricsInput {
        certificates: vec![("api", 1_800_000_000), ("node", 1_900_000_000)],
        ..input()
    });
    for line in [
        "# TYPE pgquorum_certificate_expiry_timestamp_seconds gauge",
        "pgquorum_certificate_expiry_timestamp_seconds{cluster=\"c1\",member=\"n2\",certificate=\"api\"} 1800000000",
        "pgquorum_certificate_expiry_timestamp_seconds{cluster=\"c1\",member=\"n2\",certificate=\"node\"} 1900000000",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!render(&input()).contains("pgquorum_certificate_expiry"));
}

#[test]
fn label_values_are_escaped() {
    let odd = MetricsInput {
        cluster_id: "a\"b\\c\nd".into(),
        ..input()
    };
    assert!(render(&odd).contains(r#"pgquorum_up{cluster="a\"b\\c\nd",member="n2"} 1"#));
}

#[test]
fn each_pool_is_one_sample_per_metric_and_a_pause_shows() {
    let report = crate::pooler::pool::PoolsReport {
        mode: crate::pooler::pool::Mode::Transaction,
        pool_size: 20,
        paused: true,
        pools: vec![crate::pooler::pool::PoolStats {
            database: "shop".into(),
            user: "app".into(),
            side: crate::pooler::pool::Side::Writer,
            clients: 50,
            waiting: 3,
            active: 20,
            idle: 0,
            logins: 21,
            max_wait_ms: 1_500,
        }],
    };
    let text = render(&MetricsInput {
        pools: Some(report),
        ..input()
    });
    let got: Vec<_> = samples(&text)
        .into_iter()
        .filter(|(name, _)| name.starts_with("pgquorum_pooler"))
        .collect();
    let want = [
        ("pgquorum_pooler_clients", "50"),
        ("pgquorum_pooler_clients_waiting", "3"),
        ("pgquorum_pooler_server_connections_active", "20"),
        ("pgquorum_pooler_server_connections_idle", "0"),
        ("pgquorum_pooler_server_logins_total", "21"),
        ("pgquorum_pooler_max_wait_seconds", "1.5"),
        ("pgquorum_pooler_paused", "1"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(text.contains(
        "pgquorum_pooler_clients{cluster=\"c1\",member=\"n2\",database=\"shop\",user=\"app\",side=\"writer\"} 50"
    ));
}
