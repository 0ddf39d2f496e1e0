//! Operators' commands on real PostgreSQL: restart, reinit, forced failover and a scheduled
//! switchover.

mod common;

use std::time::{Duration, SystemTime};

use common::pg::{healthy_cluster, replicas_streaming, resume_receiving, stop_receiving, writable};
use common::{assert_error, assert_success, eventually, require_postgres, OutputExt};

const ACTION: Duration = Duration::from_secs(30);

/// The lease epoch as `list` shows it.
fn epoch(cluster: &common::TestCluster, via: usize) -> u64 {
    cluster.node(via).list()["lease"]["epoch"]
        .as_u64()
        .expect("a lease")
}

#[test]
fn restart_and_reinit_replace_postgresql_on_request() {
    if !require_postgres() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let replica = (1..=3).find(|&i| i != primary).unwrap();
    let (p, r) = (cluster.node(primary), cluster.node(replica));
    let before = epoch(&cluster, primary);

    // Restart a replica: a new postmaster, still streaming.
    let old_pid = r.postmaster_pid().expect("replica runs");
    assert_success(&p.cli(&["restart", &r.name]), "restart of a replica");
    eventually(
        ACTION,
        "the replica runs a new postmaster and streams",
        || {
            let pid = r.postmaster_pid();
            if pid.is_some() && pid != Some(old_pid) {
                replicas_streaming(&cluster, primary)
            } else {
                Err(format!("pid {pid:?}"))
            }
        },
    );

    // Restart the primary in place: same primary, same lease epoch.
    let old_pid = p.postmaster_pid().expect("primary runs");
    assert_success(&r.cli(&["restart", &p.name]), "restart of the primary");
    eventually(ACTION, "the primary runs a new postmaster", || {
        let pid = p.postmaster_pid();
        (pid.is_some() && pid != Some(old_pid) && writable(&cluster) == Ok(primary))
            .then_some(())
            .ok_or(format!("pid {pid:?}"))
    });
    assert_eq!(
        epoch(&cluster, primary),
        before,
        "the primary kept its lease"
    );

    // Reinit: refused without --force, refused for the primary, done for a replica.
    let refused = p.cli(&["reinit", &r.name]);
    assert_error(&refused, 2, "run again with --force");
    let refused = r.cli(&["reinit", &p.name, "--force"]);
    assert_error(&refused, 1, "is the primary; it is never re-initialised");
    let marker = r.state_dir.join("pgdata/reinit-marker");
    std::fs::write(&marker, b"old data").unwrap();
    assert_success(&p.cli(&["reinit", &r.name, "--force"]), "reinit");
    eventually(ACTION, "the replica was cloned afresh and streams", || {
        if marker.exists() {
            return Err("the old data directory is still there".to_string());
        }
        replicas_streaming(&cluster, primary)
    });
    assert!(cluster.node(primary).list()["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["state"] == "running" || m["state"] == "streaming"));
}

#[test]
fn a_forced_failover_promotes_the_named_member_when_none_is_eligible() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    let set = cluster
        .node(primary)
        .cli(&["config", "set", "maximum_lag_on_failover=65536"]);
    assert_success(&set, "config set maximum_lag_on_failover");
    let replicas: Vec<usize> = (1..=3).filter(|&i| i != primary).collect();
    let candidate = replicas[1];
    let name = cluster.node(candidate).name.clone();

    // With a healthy primary, a failover is refused: that is a switchover.
    let refused = cluster
        .node(candidate)
        .cli(&["failover", "--candidate", &name]);
    assert_error(&refused, 1, "is a healthy primary");

    // Both replicas fall behind (they stop receiving WAL) by more than the maximum ...
    for &i in &replicas {
        stop_receiving(cluster.node(i));
    }
    let p = cluster.node(primary);
    p.sql("create table t (v int, pad text)").unwrap();
    p.sql("insert into t select g, repeat('x', 1000) from generate_series(1, 2000) g")
        .unwrap();
    // Each survivor must have seen the primary's new position before it is lost: that is
    // what it measures its lag against.
    for &i in &replicas {
        eventually(ACTION, "both replicas are seen lagging", || {
            let view = cluster.node(i).cluster_view()?;
            let lagging = view["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["lag_mb"].as_f64().is_some_and(|lag| lag >= 1.0))
                .count();
            (lagging == 2).then_some(()).ok_or(view.to_string())
        });
    }
    // ... and the primary is lost: nobody is promoted on their own ...
    cluster.node_mut(primary).kill();
    eventually(
        Duration::from_secs(20),
        "the survivors say why they wait",
        || {
            let output = cluster.node(candidate).cli(&["list"]);
            let text = output.stdout_text();
            let waiting = text.matches("more than maximum_lag_on_failover").count();
            (waiting == 2).then_some(()).ok_or(text)
        },
    );
    assert!(
        writable(&cluster).is_err(),
        "no member is promoted on its own"
    );
    for &i in &replicas {
        resume_receiving(cluster.node(i));
    }
    // ... until the operator forces one.
    let forced = cluster
        .node(candidate)
        .cli(&["failover", "--candidate", &name]);
    assert_success(&forced, "forced failover");
    eventually(ACTION, "the candidate is the writable primary", || {
        (writable(&cluster) == Ok(candidate))
            .then_some(())
            .ok_or(format!("{:?}", writable(&cluster)))
    });
}

#[test]
fn a_scheduled_switchover_waits_for_its_time() {
    if !require_postgres() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let candidate = (1..=3).find(|&i| i != primary).unwrap();
    let name = cluster.node(candidate).name.clone();
    let bad = cluster
        .node(primary)
        .cli(&["switchover", "--candidate", &name, "--at", "tomorrow"]);
    assert_error(&bad, 1, "is not a time");

    let at = SystemTime::now() + Duration::from_secs(4);
    let at_text = humantime::format_rfc3339_seconds(at).to_string();
    let requested =
        cluster
            .node(primary)
            .cli(&["switchover", "--candidate", &name, "--at", &at_text]);
    assert_success(&requested, "scheduled switchover");
    eventually(ACTION, "the primary says when it hands over", || {
        let log = cluster.node(primary).log();
        log.contains(&format!("switchover scheduled at {at_text}"))
            .then_some(())
            .ok_or("not yet")
    });
    eventually(ACTION, "the candidate is primary", || {
        (writable(&cluster) == Ok(candidate))
            .then_some(())
            .ok_or(format!("{:?}", writable(&cluster)))
    });
    // Not before its time (whole seconds: the time was rounded down when printed).
    assert!(
        SystemTime::now() >= at - Duration::from_secs(1),
        "the switchover happened before {at_text}"
    );
}
