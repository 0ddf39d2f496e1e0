//! Losing the Raft leader: the others elect a new one and keep committing; the old leader
//! comes back from its state dir and catches up.

mod common;

use std::time::{Duration, Instant};

use common::{assert_success, eventually, OutputExt, TestCluster, ELECTION};

#[test]
fn a_killed_leader_is_replaced_and_catches_up_after_restart() {
    let mut cluster = TestCluster::start(3);
    let before = cluster.wait_converged(ELECTION, "three members agree on a leader");
    let old_leader = cluster.leader_index();
    let old_id = before["leader"].as_u64().unwrap();
    let old_term = before["term"].as_u64().unwrap();

    cluster.node_mut(old_leader).kill();
    let killed_at = Instant::now();
    let after = cluster.wait_converged(ELECTION, "the two survivors elect a new leader");
    let new_id = after["leader"].as_u64().unwrap();
    let new_term = after["term"].as_u64().unwrap();
    assert_ne!(new_id, old_id, "the dead leader cannot still lead");
    assert!(
        new_term > old_term,
        "an election raises the term: {old_term} -> {new_term}"
    );
    eprintln!(
        "new leader elected {:?} after the kill",
        killed_at.elapsed()
    );

    // The survivors commit: a lease and a token through a follower and the leader.
    let new_leader = cluster.index_of_id(&after, new_id);
    let follower = (1..=3)
        .find(|&i| i != old_leader && i != new_leader)
        .unwrap();
    let lease = cluster.node(follower).cli(&["lease", "acquire"]);
    assert_success(&lease, "lease acquire on a surviving follower");
    let lease: serde_json::Value = serde_json::from_slice(&lease.stdout).unwrap();
    assert_eq!(lease["lease"]["holder"], cluster.id_of(&after, follower));
    let token = cluster.node(new_leader).cli(&["token", "create"]);
    assert_success(&token, "token create on the new leader");
    assert!(token.stdout_text().starts_with("pgq1."));
    let committed = cluster.node(new_leader).list()["last_applied"]
        .as_u64()
        .unwrap();

    cluster.node_mut(old_leader).start();
    let node = cluster.node(old_leader);
    let view = eventually(Duration::from_secs(10), "the old leader catches up", || {
        let view = node.cluster_view()?;
        match view["last_applied"].as_u64() {
            Some(applied) if applied >= committed => Ok(view),
            _ => Err(view.to_string()),
        }
    });
    assert_eq!(
        view["lease"]["holder"], lease["lease"]["holder"],
        "it applied the lease"
    );
    let view = cluster.wait_converged(ELECTION, "three voters again");
    let roles: Vec<_> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["raft_role"].clone(),
            )
        })
        .collect();
    let old_name = &cluster.node(old_leader).name;
    assert!(
        roles
            .iter()
            .any(|(n, r)| n == old_name && (r == "voter" || r == "leader")),
        "{old_name} is a voter again: {roles:?}"
    );
}
