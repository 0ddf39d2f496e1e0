//! The admin judgements as tables: each request against a committed state (and, for a
//! forced failover, the statuses this member knows) gives a command or an error that says
//! what is wrong and what to do.

use super::*;
use crate::cluster::{Epoch, Lease, Tags};
use crate::postgres::Lsn;

fn member(id: u64, pg_addr: &str) -> Member {
    Member {
        id: NodeId(id),
        name: format!("n{id}"),
        peer_addr: format!("10.0.0.{id}:7400"),
        api_addr: format!("10.0.0.{id}:8008"),
        pg_addr: pg_addr.into(),
        tags: Tags::default(),
    }
}

/// n1 and n2 with PostgreSQL, n3 a witness; `holder` holds the lease in epoch 4.
fn cluster(holder: Option<u64>) -> ClusterState {
    let mut state = ClusterState {
        cluster_id: "c".into(),
        ..ClusterState::default()
    };
    for m in [member(1, "pg1:5432"), member(2, "pg2:5432"), member(3, "")] {
        state.members.insert(m.id, m);
    }
    state.lease = holder.map(|h| Lease {
        holder: NodeId(h),
        epoch: Epoch(4),
        seq: 0,
    });
    state
}

fn primary() -> PgStatus {
    PgStatus {
        running: true,
        in_recovery: false,
        timeline: 2,
        wal_position: Some(Lsn(100)),
        ..PgStatus::default()
    }
}

fn replica() -> PgStatus {
    PgStatus {
        in_recovery: true,
        ..primary()
    }
}

fn named(name: Option<&str>) -> MemberRequest {
    MemberRequest {
        member: name.map(String::from),
    }
}

/// The status code and message of an error, or of nothing.
fn error<T: std::fmt::Debug>(result: Result<T, ApiError>) -> (StatusCode, String) {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(ApiError(code, message)) => (code, message),
    }
}

#[test]
fn a_failover_is_refused_while_a_healthy_primary_holds_the_lease() {
    let healthy: BTreeMap<_, _> = [(NodeId(1), primary()), (NodeId(2), replica())].into();
    let crashed: BTreeMap<_, _> = [(NodeId(1), PgStatus::default()), (NodeId(2), replica())].into();
    let silent: BTreeMap<_, _> = [(NodeId(2), replica())].into();
    let demoted: BTreeMap<_, _> = [(NodeId(1), replica()), (NodeId(2), replica())].into();
    /// Ok(target), or the error's code and the start of its message.
    type Want = Result<u64, (StatusCode, &'static str)>;
    type Statuses = BTreeMap<NodeId, PgStatus>;
    /// case, holder, statuses, candidate, want
    type Case<'a> = (&'a str, Option<u64>, &'a Statuses, Option<&'a str>, Want);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("lease free", None, &silent, Some("n2"), Ok(2)),
        ("holder's PostgreSQL crashed", Some(1), &crashed, Some("n2"), Ok(2)),
        ("holder silent (no fresh status)", Some(1), &silent, Some("n2"), Ok(2)),
        ("holder runs as a replica", Some(1), &demoted, Some("n2"), Ok(2)),
        ("healthy holder", Some(1), &healthy, Some("n2"), Err((StatusCode::CONFLICT, "n1 is a healthy primary (lease epoch 4); a failover is for a cluster without one: use `pgquorum switchover --candidate n2`"))),
        ("no candidate", None, &silent, None, Err((StatusCode::BAD_REQUEST, "a failover needs a candidate"))),
        ("unknown candidate", None, &silent, Some("n9"), Err((StatusCode::NOT_FOUND, "no member named \"n9\"; see `pgquorum list`"))),
    ];
    for (case, holder, statuses, candidate, want) in cases {
        let got = failover(&cluster(holder), statuses, &named(candidate));
        match (got, want) {
            (Ok(f), Ok(to)) => assert_eq!(f.to, NodeId(to), "{case}"),
            (got, Err((code, start))) => {
                let (got_code, message) = error(got);
                assert_eq!(got_code, code, "{case}: {message}");
                assert!(message.starts_with(start), "{case}: {message}");
            }
            (got, want) => panic!("{case}: got {:?}, want {want:?}", got.map(|f| f.to)),
        }
    }
}

#[test]
fn a_switchover_names_the_holder_the_candidate_and_the_time() {
    let request = |candidate: Option<&str>, at: Option<&str>| SwitchoverRequest {
        candidate: candidate.map(String::from),
        at: at.map(String::from),
    };
    let planned = switchover(&cluster(Some(1)), &request(Some("n2"), None)).unwrap();
    assert_eq!(
        planned,
        Switchover {
            from: NodeId(1),
            to: Some(NodeId(2)),
            at_unix_ms: None
        }
    );
    let any = switchover(
        &cluster(Some(2)),
        &request(None, Some("2026-11-24T02:00:00Z")),
    )
    .unwrap();
    assert_eq!(
        any,
        Switchover {
            from: NodeId(2),
            to: None,
            at_unix_ms: Some(1_795_485_600_000)
        }
    );

    let (code, message) = error(switchover(&cluster(None), &request(Some("n2"), None)));
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(message.contains("use failover instead"), "{message}");
    let (code, message) = error(switchover(&cluster(Some(1)), &request(Some("db9"), None)));
    assert_eq!(code, StatusCode::NOT_FOUND, "{message}");
    let (code, message) = error(switchover(
        &cluster(Some(1)),
        &request(Some("n2"), Some("tomorrow at two")),
    ));
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(message.contains("write it as RFC 3339"), "{message}");
}

#[test]
fn a_restart_of_every_member_leaves_out_the_witness() {
    let state = cluster(Some(1));
    assert_eq!(
        restart_targets(&state, &named(None)).unwrap(),
        [NodeId(1), NodeId(2)]
    );
    // Named, the witness is proposed, and apply refuses it with its reason.
    assert_eq!(
        restart_targets(&state, &named(Some("n3"))).unwrap(),
        [NodeId(3)]
    );
    let (code, _) = error(restart_targets(&state, &named(Some("n7"))));
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[test]
fn a_config_patch_merges_one_level_deep_and_null_removes_a_parameter() {
    let mut current = DynamicConfig::default();
    current
        .postgresql_parameters
        .insert("work_mem".into(), "4MB".into());
    current
        .postgresql_parameters
        .insert("max_connections".into(), "200".into());
    let patch = serde_json::json!({
        "ttl": "30s",
        "postgresql_parameters": {"work_mem": "64MB", "max_connections": null, "jit": "off"},
    });
    let patch = patch.as_object().unwrap().clone();
    let merged = merged_config(&current, patch).unwrap();
    assert_eq!(merged.ttl, Duration::from_secs(30));
    assert_eq!(
        merged.postgresql_parameters,
        [
            ("jit".to_string(), "off".to_string()),
            ("work_mem".to_string(), "64MB".to_string())
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(merged.loop_wait, current.loop_wait, "other keys are kept");

    let bad = serde_json::json!({"ttl": "soon"});
    let (code, message) = error(merged_config(&current, bad.as_object().unwrap().clone()));
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("invalid configuration:"), "{message}");
}
