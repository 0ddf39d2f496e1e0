//! Synchronous and quorum replication on real PostgreSQL: the recorded synchronous set, and
//! failovers that never lose an acknowledged commit.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::pg::{healthy_cluster, writable};
use common::writer::{lost, Writer};
use common::{assert_success, eventually, require_postgres, TestCluster};

/// From a lost primary to a writable new one.
const FAILOVER: Duration = Duration::from_secs(20);
/// A restarted member rewinds, streams and is recorded synchronous again.
const REJOIN: Duration = Duration::from_secs(60);

/// Names of the members `list` shows with `role`.
fn with_role(view: &Value, role: &str) -> Vec<String> {
    view["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["role"] == role)
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The index of the member named `name`.
fn index_named(cluster: &TestCluster, name: &str) -> usize {
    (1..=cluster.len())
        .find(|&i| cluster.node(i).name == name)
        .unwrap_or_else(|| panic!("no member named {name}"))
}

/// Waits until `list` (asked of member `via`) shows `count` members with `role`; returns
/// their names.
fn wait_for_role(cluster: &TestCluster, via: usize, role: &str, count: usize) -> Vec<String> {
    eventually(REJOIN, &format!("{count} members are {role}"), || {
        let view = cluster.node(via).cluster_view()?;
        let names = with_role(&view, role);
        if names.len() == count {
            Ok(names)
        } else {
            Err(format!("{names:?} in {view}"))
        }
    })
}

#[test]
fn synchronous_mode_records_one_standby_and_fails_over_only_to_it() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    let set = cluster
        .node(primary)
        .cli(&["config", "set", "synchronous_mode=on"]);
    assert_success(&set, "config set synchronous_mode=on");
    let sync = wait_for_role(&cluster, primary, "Sync Standby", 1);
    let sync = index_named(&cluster, &sync[0]);
    let names = cluster
        .node(primary)
        .sql("show synchronous_standby_names")
        .unwrap();
    assert!(
        names.starts_with("ANY 1 (pgquorum_") && !names.contains(','),
        "one synchronous standby: {names}"
    );
    let other = (1..=3).find(|&i| i != primary && i != sync).unwrap();
    // Patroni's /sync and /async answer by the recorded set, as each member has applied it
    // (on a loaded host the standby may apply it after the primary's view showed it).
    let want = [(sync, 200, 503), (other, 503, 200)];
    eventually(
        FAILOVER,
        "/sync and /async answer by the recorded set",
        || {
            let got: Vec<_> = want
                .iter()
                .map(|&(i, _, _)| {
                    let code = |path| cluster.node(i).get(path).map_or(0, |(code, _)| code);
                    (i, code("/sync"), code("/async"))
                })
                .collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("(member, /sync, /async): {got:?}, want {want:?}"))
            }
        },
    );

    let p = cluster.node(primary);
    p.sql("create table t (v int primary key)").unwrap();
    p.sql("insert into t values (1)").unwrap();
    // Acknowledged means on the synchronous standby already.
    assert_eq!(
        cluster.node(sync).sql("select count(*) from t").as_deref(),
        Ok("1")
    );

    cluster.node_mut(primary).kill();
    // Retried until acknowledged; an attempt that timed out waiting for the new synchronous
    // standby may have committed locally, so a retry rewrites the row (a write, so its commit
    // waits for the standby too) instead of failing on the duplicate key.
    let new = eventually(FAILOVER, "a survivor accepts a write", || {
        writable(&cluster).and_then(|i| {
            cluster
                .node(i)
                .sql("insert into t values (2) on conflict (v) do update set v = excluded.v")?;
            Ok(i)
        })
    });
    assert_eq!(
        new, sync,
        "only the recorded synchronous standby may be promoted"
    );
    // The remaining replica becomes the new synchronous standby.
    let now_sync = wait_for_role(&cluster, new, "Sync Standby", 1);
    assert_eq!(now_sync, vec![cluster.node(other).name.clone()]);
}

#[test]
fn quorum_mode_loses_no_acknowledged_commit_across_20_failovers() {
    if !require_postgres() {
        return;
    }
    const FAILOVERS: usize = 20;
    let (mut cluster, first) = healthy_cluster();
    // Unattended: a former primary whose rewind fails part-way (its source restarted, say)
    // is cloned afresh instead of staying out.
    let set = cluster.node(first).cli(&[
        "config",
        "set",
        "synchronous_mode=quorum",
        "remove_data_directory_on_rewind_failure=true",
    ]);
    assert_success(&set, "config set synchronous_mode=quorum");
    wait_for_role(&cluster, first, "Quorum Standby", 2);
    cluster
        .node(first)
        .sql("create table t (v bigint primary key)")
        .unwrap();

    let targets = (1..=3).map(|i| cluster.node(i).pg_target()).collect();
    let writer = Writer::start("t", targets, Duration::from_millis(10));
    let mut primary = first;
    let mut times = Vec::new();
    for round in 1..=FAILOVERS {
        let before = writer.acks().len();
        eventually(FAILOVER, "the client commits on the primary", || {
            let now = writer.acks().len();
            (now >= before + 5)
                .then_some(())
                .ok_or(format!("{now} acknowledged"))
        });
        let killed = Instant::now();
        cluster.node_mut(primary).kill();
        let new = eventually(FAILOVER, "a survivor is the writable primary", || {
            writable(&cluster)
        });
        times.push(killed.elapsed());
        eprintln!(
            "round {round}: killed n{primary}, n{new} writable after {:?}",
            killed.elapsed()
        );
        cluster.node_mut(primary).start();
        primary = new;
        // Both others stream and are recorded in the quorum again before the next kill.
        wait_for_role(&cluster, primary, "Quorum Standby", 2);
    }
    let acks = writer.stop();
    let rows: Vec<i64> = cluster
        .node(primary)
        .sql("select v from t order by v")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let missing = lost(&acks, &rows);
    eprintln!(
        "{} commits acknowledged across {FAILOVERS} failovers; {} lost; failover times {:?}",
        acks.len(),
        missing.len(),
        times
    );
    assert!(acks.len() > FAILOVERS * 5, "the client kept committing");
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
}
