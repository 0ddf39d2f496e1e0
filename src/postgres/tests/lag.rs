//! Replication lag as `pgquorum list` and the health checks measure it.

use super::*;

/// The primary's status is sampled at another moment than the replica's. Taken just after a
/// segment switch the replica has not received yet, it is a whole segment (16 MB, mostly
/// padding) ahead of a replica that is caught up: that is not lag.
#[tokio::test]
async fn a_caught_up_replica_shows_no_lag_against_a_primary_sampled_after_a_segment_switch() {
    if !require_postgres() {
        return;
    }
    let a = Instance::primary(&["pgquorum_2"]).await;
    let b = Instance::new();
    let up = a.upstream("pgquorum_2");
    b.pg.basebackup(&up).await.unwrap();
    b.pg.write_config(&Role::Replica {
        upstream: Some(&up),
    })
    .unwrap();
    b.pg.start(START).await.unwrap();
    a.pg.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let target = a.pg.status().await.wal_position.unwrap();
    eventually(
        "the replica has received all its primary told it of",
        START,
        || async {
            let s = b.pg.status().await;
            s.streaming
                && s.wal_position >= Some(target)
                && s.primary_end.is_some()
                && s.primary_end <= s.wal_position
        },
    )
    .await;
    let replica = b.pg.status().await;

    a.pg.execute("INSERT INTO t VALUES (2); SELECT pg_switch_wal()")
        .await
        .unwrap();
    let primary = a.pg.status().await.wal_position;
    let position = replica.wal_position.unwrap();
    let naive = primary.unwrap().bytes_after(position);
    assert!(
        naive >= 15 << 20,
        "the switch puts the primary's position a segment ahead: {naive} B ({replica:?}, \
         primary at {primary:?})"
    );
    assert_eq!(
        replica.lag_behind(position, primary),
        Some(0),
        "a caught-up streaming replica is not behind ({replica:?}, primary at {primary:?})"
    );

    // Measured from fresh statuses, the replica is caught up again once it has the switch.
    eventually("the replica replays up to the switch", START, || async {
        let replica = b.pg.status().await;
        let primary = a.pg.status().await.wal_position;
        replica.replayed >= primary
            && replica
                .replayed
                .and_then(|at| replica.lag_behind(at, primary))
                == Some(0)
    })
    .await;
}
