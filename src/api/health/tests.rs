//! The health checks as tables: each kind of member, each query parameter.
use std::time::Duration;

use super::*;
use crate::cluster::{DynamicConfig, Epoch};
use crate::peers::{PeerStatus, PeerStatuses};
use crate::postgres::DataDir;
use tokio::time::Instant;

const MB: u64 = 1 << 20;

fn lease(holder: u64) -> Option<Lease> {
    Some(Lease {
        holder: NodeId(holder),
        epoch: Epoch(3),
        seq: 7,
    })
}

/// Member 1, which holds the lease and runs a primary at 100 MB.
fn primary() -> HealthInput {
    HealthInput {
        me: NodeId(1),
        name: "n1".into(),
        witness: false,
        pg: Some(PgStatus {
            running: true,
            in_recovery: false,
            timeline: 1,
            wal_position: Some(Lsn(100 * MB)),
            replayed: None,
            streaming: false,
            pending_restart: false,
            replay_delay_ms: None,
            primary_end: None,
            archive: None,
        }),
        lease: lease(1),
        tags: Tags::default(),
        primary_position: Some(Lsn(100 * MB)),
        maximum_lag_on_failover: MB,
        synchronous: false,
    }
}

/// Member 2, a streaming replica of member 1 that has received and replayed everything.
fn replica() -> HealthInput {
    HealthInput {
        me: NodeId(2),
        name: "n2".into(),
        pg: Some(PgStatus {
            in_recovery: true,
            replayed: Some(Lsn(100 * MB)),
            streaming: true,
            primary_end: Some(Lsn(100 * MB)),
            ..primary().pg.unwrap()
        }),
        ..primary()
    }
}

/// The replica with replay paused 5 MB back (received everything).
fn lagging() -> HealthInput {
    let mut input = replica();
    input.pg.as_mut().unwrap().replayed = Some(Lsn(95 * MB));
    input
}

fn stopped(mut input: HealthInput) -> HealthInput {
    input.pg = Some(PgStatus::default());
    input
}

fn witness() -> HealthInput {
    HealthInput {
        me: NodeId(3),
        name: "w".into(),
        witness: true,
        pg: None,
        ..primary()
    }
}

fn q(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

const ALL: [(&str, Endpoint, &str); 12] = [
    ("/primary", Endpoint::Primary, ""),
    ("/leader", Endpoint::Leader, ""),
    ("/replica", Endpoint::Replica, ""),
    ("/replica?lag=1MB", Endpoint::Replica, "lag=1MB"),
    ("/read-only", Endpoint::ReadOnly, ""),
    ("/read-only?lag=1MB", Endpoint::ReadOnly, "lag=1MB"),
    ("/sync", Endpoint::Synchronous, ""),
    ("/async", Endpoint::Asynchronous, ""),
    ("/async?lag=1MB", Endpoint::Asynchronous, "lag=1MB"),
    ("/health", Endpoint::Health, ""),
    ("/readiness", Endpoint::Readiness, ""),
    ("/patroni", Endpoint::Status, ""),
];

/// Codes for the endpoints of [`ALL`], in order, as Patroni gives them.
fn codes(input: &HealthInput) -> Vec<u16> {
    ALL.iter()
        .map(|(_, endpoint, query)| check(*endpoint, &q(query), input).0.as_u16())
        .collect()
}

#[test]
fn each_kind_of_member_answers_as_patroni_does() {
    let no_lease = HealthInput {
        lease: None,
        ..primary()
    };
    let holder_in_recovery = HealthInput {
        me: NodeId(1),
        lease: lease(1),
        ..replica()
    };
    let unknown_primary = HealthInput {
        primary_position: None,
        ..replica()
    };
    let noloadbalance = HealthInput {
        tags: Tags {
            noloadbalance: true,
            ..Tags::default()
        },
        ..replica()
    };
    let before_first_cycle = HealthInput {
        pg: None,
        ..primary()
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, HealthInput, [u16; 12])> = vec![
        //                                  pri  lead rep  rep1 ro   ro1  sync async as1 hlth ready status
        ("primary", primary(), [200, 200, 503, 503, 200, 200, 503, 503, 503, 200, 200, 200]),
        ("replica", replica(), [503, 503, 200, 200, 200, 200, 503, 200, 200, 200, 200, 200]),
        ("synchronous standby", HealthInput { synchronous: true, ..replica() },
            [503, 503, 200, 200, 200, 200, 200, 503, 503, 200, 200, 200]),
        ("stopped synchronous standby", stopped(HealthInput { synchronous: true, ..replica() }),
            [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200]),
        ("lagging replica", lagging(), [503, 503, 200, 503, 200, 503, 503, 200, 503, 200, 503, 200]),
        ("stopped replica", stopped(replica()), [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200]),
        ("stopped lease holder", stopped(primary()), [503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200]),
        ("writable without the lease", no_lease, [503, 503, 503, 503, 503, 503, 503, 503, 503, 200, 503, 200]),
        ("holder still in recovery", holder_in_recovery, [503, 200, 200, 200, 200, 200, 503, 200, 200, 200, 200, 200]),
        ("replica, primary position unknown", unknown_primary, [503, 503, 200, 503, 200, 503, 503, 200, 503, 200, 503, 200]),
        ("noloadbalance replica", noloadbalance, [503, 503, 503, 503, 503, 503, 503, 503, 503, 200, 200, 200]),
        ("holder before its first cycle", before_first_cycle, [503, 200, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200]),
        ("witness", witness(), [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200]),
        ("witness holding the lease", HealthInput { lease: lease(3), ..witness() },
            [503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200]),
    ];
    for (name, input, expected) in cases {
        let got = codes(&input);
        let diff: Vec<String> = ALL
            .iter()
            .zip(got.iter().zip(expected))
            .filter(|(_, (g, e))| **g != *e)
            .map(|((path, _, _), (g, e))| format!("{path}: {g}, want {e}"))
            .collect();
        assert!(diff.is_empty(), "{name}: {}", diff.join("; "));
    }
}

#[test]
fn query_parameters_refine_the_replica_checks() {
    let check_code =
        |endpoint, query: &str, input: &HealthInput| check(endpoint, &q(query), input).0.as_u16();
    #[rustfmt::skip]
    let cases: Vec<(&str, Endpoint, &str, HealthInput, u16)> = vec![
        ("lag in bytes", Endpoint::Replica, "lag=6000000", lagging(), 200),
        ("lag just below", Endpoint::Replica, "lag=5242879", lagging(), 503),
        ("lag exactly", Endpoint::Replica, "lag=5242880", lagging(), 200),
        ("lag in kB", Endpoint::Replica, "lag=5120kB", lagging(), 200),
        ("lag in GB", Endpoint::Replica, "lag=1GB", lagging(), 200),
        ("mode=write measures received WAL", Endpoint::Replica, "lag=1MB&mode=write", lagging(), 200),
        ("mode=apply is the default", Endpoint::Replica, "lag=1MB&mode=apply", lagging(), 503),
        ("readiness takes a lag", Endpoint::Readiness, "lag=16MB", lagging(), 200),
        ("readiness in write mode", Endpoint::Readiness, "mode=write", lagging(), 200),
        ("streaming wanted", Endpoint::Replica, "replication_state=streaming", replica(), 200),
        (
            "streaming wanted, not streaming",
            Endpoint::Replica,
            "replication_state=streaming",
            HealthInput {
                pg: Some(PgStatus {
                    streaming: false,
                    ..replica().pg.unwrap()
                }),
                ..replica()
            },
            503,
        ),
        ("tag matches", Endpoint::Replica, "tag_nofailover=false", replica(), 200),
        ("tag differs", Endpoint::Replica, "tag_nofailover=true", replica(), 503),
        ("numeric tag", Endpoint::Replica, "tag_failover_priority=1", replica(), 200),
        ("unknown tag", Endpoint::Replica, "tag_zone=a", replica(), 503),
        ("unknown parameter ignored", Endpoint::Replica, "foo=bar", replica(), 200),
        ("bad lag", Endpoint::Replica, "lag=lots", replica(), 400),
        ("bad unit", Endpoint::Replica, "lag=1XB", replica(), 400),
        ("bad mode", Endpoint::Readiness, "mode=flush", replica(), 400),
    ];
    for (name, endpoint, query, input, want) in cases {
        assert_eq!(
            check_code(endpoint, query, &input),
            want,
            "{name}: ?{query}"
        );
    }
}

#[test]
fn sizes_parse_as_postgres_writes_them() {
    for (text, bytes) in [
        ("0", 0),
        ("1048576", MB),
        ("16kB", 16 << 10),
        ("64MB", 64 * MB),
        ("1GB", 1 << 30),
        ("1TB", 1 << 40),
        ("2 mb", 2 * MB),
        ("10B", 10),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for bad in [
        "",
        "MB",
        "-1",
        "1.5MB",
        "1PB",
        "99999999999999999999",
        "20000000TB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_status_document_speaks_patroni() {
    let (_, doc) = check(Endpoint::Status, &[], &lagging());
    assert_eq!(
        doc,
        json!({
            "name": "n2",
            "state": "running",
            "role": "replica",
            "timeline": 1,
            "xlog": { "received_location": 100 * MB, "replayed_location": 95 * MB },
            "replication_state": "streaming",
            "lag": 5 * MB,
            "lease_epoch": 3,
            "lease_holder": false,
            "tags": { "nofailover": false, "noloadbalance": false, "failover_priority": 1 },
        })
    );
    let (_, doc) = check(Endpoint::Primary, &[], &primary());
    assert_eq!(doc["role"], "primary");
    assert_eq!(doc["xlog"], json!({ "location": 100 * MB }));
    assert_eq!(doc["lease_holder"], true);
    let (_, doc) = check(Endpoint::Health, &[], &stopped(replica()));
    assert_eq!(
        (doc["state"].as_str(), doc.get("xlog")),
        (Some("stopped"), None)
    );
    let (_, doc) = check(
        Endpoint::Health,
        &[],
        &HealthInput {
            lease: None,
            ..witness()
        },
    );
    assert_eq!(doc["role"], "witness");
    assert_eq!(doc["cluster_unlocked"], true);
}

#[test]
fn stale_peer_statuses_are_unknown_and_the_holder_position_needs_a_running_primary() {
    let config = DynamicConfig::default();
    let now = Instant::now();
    let status = |id: u64, pg: PgStatus| PeerStatus {
        node_id: NodeId(id),
        pg,
        data_dir: DataDir::Missing,
        following: None,
        summary: String::new(),
        pre_promote_refused: false,
        vip: false,
        backrest: None,
    };
    let horizon = config.member_timeout + config.loop_wait;
    let mut peers = PeerStatuses::new();
    let report = |status, received| crate::peers::PeerReport {
        status,
        received,
        taken: received,
    };
    peers.insert(
        NodeId(1),
        report(status(1, primary().pg.unwrap()), now - horizon),
    );
    peers.insert(
        NodeId(3),
        report(
            status(3, replica().pg.unwrap()),
            now - horizon - Duration::from_millis(1),
        ),
    );
    let local = status(2, replica().pg.unwrap());
    let known = peers.known_statuses(Some(&local), config.status_horizon(), now);
    assert_eq!(
        known.keys().copied().collect::<Vec<_>>(),
        [NodeId(1), NodeId(2)]
    );
    assert_eq!(
        primary_position(lease(1).as_ref(), &known),
        Some(Lsn(100 * MB))
    );
    assert_eq!(
        primary_position(lease(2).as_ref(), &known),
        None,
        "a replica holds it"
    );
    assert_eq!(primary_position(lease(3).as_ref(), &known), None, "stale");
    assert_eq!(primary_position(None, &known), None);
}
