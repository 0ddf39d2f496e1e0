//! `pgquorum cert rotate`: a member moves to a new node key while it runs. Checked on the
//! Raft leader and on a follower while a client commits: no failover, no lost commit, the
//! old certificate refused by every other member afterwards, the new one kept across a
//! restart.

mod common;

use std::time::Duration;

use common::peer::propose_as;
use common::pg::{lease, no_commit_lost_and_no_failover, writable};
use common::writer::Writer;
use common::{
    assert_success, eventually, require_postgres, OutputExt, TestCluster, ELECTION, FORMATION,
};
use pgquorum::tls::NodeIdentity;

/// The cluster's id, from member 1's record.
fn cluster_id_of(cluster: &TestCluster) -> String {
    pgquorum::identity::StateDir::new(&cluster.node(1).state_dir)
        .load_record()
        .unwrap()
        .cluster_id
}

/// Once a primary is writable: its index, the lease every member must still report at the
/// end, and a client committing rows to `t` on whichever member accepts them.
fn start_writing(cluster: &TestCluster, pause: Duration) -> (usize, (u64, u64), Writer) {
    let primary = eventually(FORMATION, "a writable primary", || writable(cluster));
    let before = lease(cluster, primary).unwrap();
    cluster
        .node(primary)
        .sql("create table t (v bigint primary key)")
        .unwrap();
    let targets = (1..=3).map(|i| cluster.node(i).pg_target()).collect();
    (primary, before, Writer::start("t", targets, pause))
}

#[test]
fn cert_rotate_on_the_raft_leader_and_a_follower_while_a_client_writes_with_no_failover() {
    if !require_postgres() {
        return;
    }
    let mut cluster = TestCluster::start_with_postgres(3);
    let (primary, before, writer) = start_writing(&cluster, Duration::from_millis(10));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster_id = cluster_id_of(&cluster);
    let view = cluster.node(1).list();

    let leader = cluster.leader_index();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    for rotated in [leader, follower] {
        let node = cluster.node(rotated);
        let old = NodeIdentity::load(&node.state_dir).unwrap();
        let acks_before = writer.acks().len();
        let output = node.cli(&["cert", "rotate"]);
        assert_success(&output, &format!("cert rotate on n{rotated}"));
        assert!(
            output
                .stdout_text()
                .contains(&format!("rotated the certificate of member n{rotated}")),
            "{}",
            output.stdout_text()
        );
        let new = NodeIdentity::load(&node.state_dir).unwrap();
        assert_ne!(new.cert_pem(), old.cert_pem(), "node.pem was replaced");
        assert_ne!(
            new.key_pem().expose(),
            old.key_pem().expose(),
            "with a new key"
        );
        // Every other member refuses the old certificate from now on and takes the new.
        for other in (1..=3).filter(|&i| i != rotated) {
            let (id, addr) = (cluster.id_of(&view, other), cluster.node(other).peer_addr());
            eventually(
                Duration::from_secs(10),
                &format!("n{other} refuses n{rotated}'s old certificate"),
                || match propose_as(&runtime, &old, &cluster_id, id, &addr) {
                    Err(refusal) if refusal.contains("is not for the key") => Ok(()),
                    other => Err(other),
                },
            );
            let answer = propose_as(&runtime, &new, &cluster_id, id, &addr);
            assert!(
                answer.is_ok(),
                "n{other} accepts n{rotated}'s new certificate: {answer:?}"
            );
        }
        cluster.wait_converged(
            Duration::from_secs(10),
            &format!("one view after rotating n{rotated}"),
        );
        eprintln!(
            "n{rotated} rotated; the client committed {} rows meanwhile",
            writer.acks().len() - acks_before
        );
    }

    // The new certificate is the one on disk: a restarted member rejoins with it.
    cluster.node_mut(follower).terminate();
    cluster.node_mut(follower).start();
    cluster.wait_converged(FORMATION, "the rotated follower is back");
    let commits = no_commit_lost_and_no_failover(&cluster, primary, writer, before);
    eprintln!(
        "rotated n{leader} (Raft leader) and n{follower}: {commits} commits, none lost, lease \
         {before:?} throughout"
    );
}

#[test]
fn node_certificates_rotate_themselves_before_they_expire() {
    if !require_postgres() {
        return;
    }
    // 30 s node certificates: each member rotates its own 20 s into each.
    let extra = "[tls]\nnode_certificate_lifetime = \"30s\"\n";
    let mut cluster = TestCluster::start_with_postgres_tagged(3, &[1, 2, 3], extra);
    let (primary, before, writer) = start_writing(&cluster, Duration::from_millis(20));
    let rotations = |node: &common::Node| {
        node.log()
            .lines()
            .filter(|l| l.contains("certificate rotated: the old key is refused"))
            .count()
    };
    eventually(
        Duration::from_secs(120),
        "every member rotates its certificate twice",
        || {
            let counts: Vec<usize> = (1..=3).map(|i| rotations(cluster.node(i))).collect();
            counts
                .iter()
                .all(|&n| n >= 2)
                .then_some(())
                .ok_or(format!("rotations per member: {counts:?}"))
        },
    );
    // Past the first certificates' expiry, a restarted member makes new connections with
    // its rotated certificate, to members presenting theirs.
    let other = (1..=3).find(|&i| i != primary).unwrap();
    cluster.node_mut(other).terminate();
    cluster.node_mut(other).start();
    cluster.wait_converged(FORMATION, "the restarted member is back");
    let commits = no_commit_lost_and_no_failover(&cluster, primary, writer, before);
    eprintln!(
        "each member rotated twice: {commits} commits, none lost, lease {before:?} throughout"
    );
}

#[test]
fn a_rotation_cut_short_by_a_crash_is_ended_by_the_restarted_member() {
    let mut cluster = TestCluster::start(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster_id = cluster_id_of(&cluster);
    let view = cluster.node(1).list();
    let leader = cluster.leader_index();
    let crashed = (1..=3).find(|&i| i != leader).unwrap();
    let old = NodeIdentity::load(&cluster.node(crashed).state_dir).unwrap();
    cluster
        .node(crashed)
        .set_failpoint("rotation-before-end", true);
    let output = cluster.node(crashed).cli(&["cert", "rotate"]);
    assert!(!output.status.success(), "the daemon died mid-rotation");
    let status = cluster.node_mut(crashed).wait_exit(FORMATION);
    assert!(
        !status.success() && cluster.node(crashed).log().contains("failpoint"),
        "it aborted at the failpoint: {status}"
    );
    let new = NodeIdentity::load(&cluster.node(crashed).state_dir).unwrap();
    assert_ne!(new.cert_pem(), old.cert_pem(), "the new pair was on disk");
    let (leader_id, leader_addr) = (
        cluster.id_of(&view, leader),
        cluster.node(leader).peer_addr(),
    );
    // Both keys are trusted while the rotation is open.
    for identity in [&old, &new] {
        let answer = propose_as(&runtime, identity, &cluster_id, leader_id, &leader_addr);
        assert!(answer.is_ok(), "either key, mid-rotation: {answer:?}");
    }
    cluster
        .node(crashed)
        .set_failpoint("rotation-before-end", false);
    cluster.node_mut(crashed).start();
    eventually(
        FORMATION,
        "the restarted member ends its rotation",
        || match propose_as(&runtime, &old, &cluster_id, leader_id, &leader_addr) {
            Err(refusal) if refusal.contains("is not for the key") => Ok(()),
            other => Err(other),
        },
    );
    let answer = propose_as(&runtime, &new, &cluster_id, leader_id, &leader_addr);
    assert!(answer.is_ok(), "the new key is the pin: {answer:?}");
    // It logs once its proposal returns, which may be after the leader applied it.
    eventually(ELECTION, "the restarted member says so", || {
        cluster
            .node(crashed)
            .log()
            .contains("ended a certificate rotation left open")
            .then_some(())
            .ok_or("not yet")
    });
    cluster.wait_converged(FORMATION, "all three members");
}
