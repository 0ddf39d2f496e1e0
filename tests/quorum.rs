//! Quorum: five members commit with any three, and refuse to commit with two.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::wait::scaled;
use common::{assert_error, assert_success, eventually, OutputExt, TestCluster};

/// The LAN profile's propose timeout.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// `token create` (a proposal) on each of `nodes` at the same time: (index, output, time).
fn propose_on(cluster: &TestCluster, nodes: &[usize]) -> Vec<(usize, Output, Duration)> {
    std::thread::scope(|s| {
        let calls: Vec<_> = nodes
            .iter()
            .map(|&i| {
                let node = cluster.node(i);
                s.spawn(move || {
                    let started = Instant::now();
                    let output = node.cli(&["token", "create"]);
                    (i, output, started.elapsed())
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

/// A refused proposal gives up after about the propose timeout, not much later.
fn assert_bounded(i: usize, took: Duration) {
    assert!(
        took <= scaled(PROPOSE_TIMEOUT + Duration::from_secs(3)),
        "n{i} should give up after about the propose timeout ({PROPOSE_TIMEOUT:?}), took {took:?}"
    );
}

/// Kills two members, the leader among them; returns the leader then elected by the rest.
fn kill_leader_and_one_more(cluster: &mut TestCluster) -> usize {
    let leader = cluster.leader_index();
    let other = (1..=cluster.len()).find(|&i| i != leader).unwrap();
    cluster.node_mut(leader).kill();
    cluster.node_mut(other).kill();
    cluster.leader_index()
}

#[test]
fn five_members_commit_with_three_and_refuse_writes_with_two() {
    let mut cluster = TestCluster::start(5);

    // Two down, the leader among them: three remain, a majority.
    let leader = kill_leader_and_one_more(&mut cluster);
    let survivors = cluster.running();
    assert_eq!(survivors.len(), 3);
    for &i in &survivors {
        let output = cluster.node(i).cli(&["token", "create"]);
        assert_success(&output, &format!("token create on n{i} with three of five"));
    }

    // A third down: two of five is no quorum. Kill a follower, so the leader stays, and
    // propose on both survivors.
    let third = *survivors.iter().find(|&&i| i != leader).unwrap();
    cluster.node_mut(third).kill();
    for (i, output, took) in propose_on(&cluster, &cluster.running()) {
        // On the leader directly, or forwarded to it from the follower: both name quorum.
        let line = assert_error(&output, 1, "no quorum");
        eprintln!("n{i} (leader n{leader}) refused after {took:?}: {line}");
        assert_bounded(i, took);
    }

    // With the third back the cluster commits again.
    cluster.node_mut(third).start();
    eventually(
        Duration::from_secs(15),
        "three of five commit again",
        || {
            let output = cluster.node(third).cli(&["token", "create"]);
            output
                .status
                .success()
                .then_some(())
                .ok_or(output.stderr_text())
        },
    );
}

#[test]
fn without_quorum_every_survivor_says_so() {
    let mut cluster = TestCluster::start(5);
    let leader = kill_leader_and_one_more(&mut cluster);
    let follower = *cluster.running().iter().find(|&&i| i != leader).unwrap();
    cluster.node_mut(follower).kill();

    let mut wrong = Vec::new();
    let mut check = |case: &str, (i, output, took): (usize, Output, Duration)| {
        assert_eq!(output.code(), 1, "{case}: n{i}: {}", output.stderr_text());
        assert_bounded(i, took);
        let stderr = output.stderr_text();
        let message = stderr
            .trim_end()
            .strip_prefix("pgquorum: ")
            .unwrap_or(&stderr);
        // "pgquorum" (as in "see `pgquorum list`") does not count.
        if !message.replace("pgquorum", "").contains("quorum") || message.contains('\n') {
            wrong.push(format!("{case}: n{i}: {stderr:?}"));
        }
    };
    // The leader survives: one survivor forwards to it.
    for result in propose_on(&cluster, &cluster.running()) {
        check("leader alive, forwarded or local", result);
    }
    // The leader dies too: the last survivor has no leader at all.
    cluster.node_mut(leader).kill();
    let last = cluster.running();
    for result in propose_on(&cluster, &last) {
        check("no leader", result);
    }
    assert!(
        wrong.is_empty(),
        "errors that do not name quorum:\n{}",
        wrong.join("\n")
    );
}
