//! A member down for long keeps WAL on the primary only up to `max_slot_wal_keep_size`
//! (by default a quarter of the primary's WAL filesystem): past it PostgreSQL invalidates
//! its slot instead of filling the disk, the primary makes the slot afresh and asks the
//! member to clone itself again, and the member, once back, does so and streams.

mod common;

use std::time::Duration;

use common::pg::{replicas_streaming, writable};
use common::{assert_success, eventually, require_postgres, TestCluster, FORMATION};

#[test]
fn a_member_down_past_max_slot_wal_keep_size_loses_its_slot_and_is_cloned_afresh() {
    if !require_postgres() {
        return;
    }
    let mut cluster = TestCluster::start_with_postgres(3);
    let primary = eventually(FORMATION, "a writable primary", || writable(&cluster));
    eventually(FORMATION, "both replicas streaming", || {
        replicas_streaming(&cluster, primary)
    });
    let p = cluster.node(primary);
    let default = p.sql("show max_slot_wal_keep_size").unwrap();
    assert!(
        default.ends_with("GB") || default.ends_with("MB"),
        "a default limit, not PostgreSQL's unlimited -1: {default}"
    );
    // A small limit, so that a little WAL is enough (wal_keep_size, 128 MB, still applies).
    let set = p.cli(&[
        "config",
        "set",
        "postgresql_parameters.max_slot_wal_keep_size=16MB",
    ]);
    assert_success(&set, "config set max_slot_wal_keep_size");
    eventually(Duration::from_secs(20), "the primary applies 16MB", || {
        let value = p.sql("show max_slot_wal_keep_size")?;
        (value == "16MB").then_some(()).ok_or(value)
    });
    p.sql("create table t (v int)").unwrap();

    let down = (1..=3).find(|&i| i != primary).unwrap();
    let view = cluster.node(primary).list();
    let slot = format!("pgquorum_{}", cluster.id_of(&view, down));
    cluster.node_mut(down).terminate();
    let p = cluster.node(primary);
    // 12 segments of WAL (192 MB of positions) while it is down, then a checkpoint, which
    // invalidates its slot.
    for i in 0..12 {
        p.sql(&format!(
            "insert into t values ({i}); select pg_switch_wal()"
        ))
        .unwrap();
    }
    p.sql("checkpoint").unwrap();
    let warning = format!("the replication slot of n{down} was invalidated");
    eventually(
        Duration::from_secs(30),
        "the primary notices the lost slot",
        || {
            p.log()
                .lines()
                .find(|l| l.contains(&warning))
                .map(str::to_string)
                .ok_or(p.sql(&format!(
                    "select wal_status from pg_replication_slots where slot_name = '{slot}'"
                )))
        },
    );
    let fresh = p
        .sql(&format!(
            "select wal_status from pg_replication_slots where slot_name = '{slot}'"
        ))
        .unwrap();
    assert_ne!(fresh, "lost", "the slot was made afresh");

    cluster.node_mut(down).start();
    let node = cluster.node(down);
    eventually(FORMATION, "the member clones itself afresh", || {
        node.log()
            .contains("reinit requested; removing my data directory and cloning")
            .then_some(())
            .ok_or("no reinit yet")
    });
    eventually(FORMATION, "both replicas stream again", || {
        replicas_streaming(&cluster, primary)
    });
    eventually(
        Duration::from_secs(20),
        "the re-cloned member has every row",
        || {
            let rows = cluster.node(down).sql("select count(*) from t")?;
            (rows == "12").then_some(()).ok_or(rows)
        },
    );
}
