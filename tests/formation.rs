//! Forming a cluster: `init` on one host, `node join` + `run` on the others.

mod common;

use std::time::Duration;

use common::{
    assert_error, assert_success, eventually, member_names, OutputExt, TestCluster, ELECTION,
    FORMATION,
};

#[test]
fn three_members_formed_by_init_and_two_joins_list_three_voters_and_one_leader() {
    let cluster = TestCluster::start(3);

    for i in 1..=3 {
        let view = cluster.node(i).list();
        assert_eq!(view["answered_by"], format!("n{i}"));
        assert_eq!(
            member_names(&view)
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>(),
            ["n1", "n2", "n3"],
            "members as seen by n{i}: {view}"
        );
        let mut roles: Vec<&str> = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["raft_role"].as_str().unwrap())
            .collect();
        roles.sort();
        assert_eq!(
            roles,
            ["leader", "voter", "voter"],
            "roles as seen by n{i}: {view}"
        );
        let leader = view["leader"].as_u64().expect("a leader");
        let leader_row = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["raft_role"] == "leader")
            .unwrap();
        assert_eq!(
            leader_row["id"], leader,
            "the leader row is the reported leader"
        );
        assert!(view["term"].as_u64().unwrap() >= 1);
        assert_eq!(view["cluster_id"], cluster.node(1).list()["cluster_id"]);
    }

    let table = cluster.node(2).cli(&["list"]);
    assert_success(&table, "list (table)");
    let text = table.stdout_text();
    assert!(text.contains("as seen by n2"), "{text}");
    let header = [
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Lag in MB",
        "Pending restart",
        "Raft",
        "Tags",
    ];
    let cells = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    };
    assert!(
        text.lines().any(|l| cells(l) == header),
        "header {header:?} missing:\n{text}"
    );
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with("| n"))
        .map(cells)
        .collect();
    assert_eq!(rows.len(), 3, "one row per member:\n{text}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("n{}", i + 1), "{text}");
        // Members without PostgreSQL show their peer address as Host.
        assert_eq!(row[1], cluster.node(i + 1).peer_addr(), "{text}");
    }
    let mut roles: Vec<&str> = rows.iter().map(|r| r[7].as_str()).collect();
    roles.sort();
    assert_eq!(roles, ["leader", "voter", "voter"], "{text}");
}

#[test]
fn a_restarted_member_rejoins_from_its_state_dir_without_a_token() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.leader_index();
    let follower = (1..=3).find(|&i| i != leader).unwrap();

    let status = cluster.node_mut(follower).terminate();
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    // Commit something it has not seen, so rejoining means catching up.
    let created = cluster.node(leader).cli(&["token", "create"]);
    assert_success(&created, "token create while a member is down");
    let leader_applied = cluster.node(leader).list()["last_applied"]
        .as_u64()
        .unwrap();

    cluster.node_mut(follower).start();
    let node = cluster.node(follower);
    eventually(
        Duration::from_secs(10),
        "the restarted member catches up",
        || {
            let view = node.cluster_view()?;
            match view["last_applied"].as_u64() {
                Some(applied) if applied >= leader_applied => Ok(()),
                _ => Err(view.to_string()),
            }
        },
    );
    let view = cluster.wait_converged(Duration::from_secs(10), "three voters again");
    assert_eq!(member_names(&view).len(), 3);
    assert_eq!(cluster.node(follower).list()["raft_state"], "Follower");
}

#[test]
fn a_used_up_token_refuses_a_fourth_member_and_creates_no_state() {
    let cluster = TestCluster::start(3);
    let before = member_names(&cluster.node(1).list());

    let fourth = cluster.new_node("n4");
    let output = fourth.join(&cluster.node(1).peer_addr(), cluster.init_token());
    assert_error(&output, 1, "no uses left");
    assert!(
        !fourth.state_dir.exists(),
        "a refused join must not create {}",
        fourth.state_dir.display()
    );
    let after = cluster.wait_converged(Duration::from_secs(10), "the three members still agree");
    assert_eq!(member_names(&after), before, "membership is unchanged");
}

/// A daemon that is alive but frozen (here SIGSTOPped) accepts connections and answers
/// nothing: the CLI gives up with an error saying so instead of hanging.
#[test]
fn the_cli_reports_a_daemon_that_does_not_answer_instead_of_hanging() {
    let cluster = TestCluster::start(1);
    cluster.wait_converged(Duration::from_secs(10), "one member");
    let node = cluster.node(1);
    let pid = node.pid().expect("the daemon runs") as i32;
    // SAFETY: kill(2) on the daemon this test started; resumed below before any assertion.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let started = std::time::Instant::now();
    let output = node.cli(&["list"]);
    let waited = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_error(&output, 1, "did not answer within 30s");
    assert!(waited < Duration::from_secs(45), "gave up after {waited:?}");
    assert_success(&node.cli(&["list"]), "list once the daemon runs again");
}

/// A leader that stops between the two steps of a membership change leaves a joint
/// configuration behind: the new member counts as a voter of the new configuration only, and
/// every quorum still needs a majority of the old one. The next leader finishes the change.
#[test]
fn a_membership_change_left_half_done_by_a_crashed_leader_is_finished_by_the_next() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.leader_index();
    let token = cluster.node(leader).cli(&["token", "create"]);
    assert_success(&token, "token create");
    let token = token.stdout_text().trim().to_string();

    // The leader aborts as it appends the second step (the uniform configuration), before
    // storing it: no follower can have it.
    cluster
        .node(leader)
        .set_failpoint("before-second-membership-step", true);
    let mut fourth = cluster.new_node("n4");
    assert_success(
        &fourth.join(&cluster.node(leader).peer_addr(), &token),
        "join of n4",
    );
    fourth.start();
    let status = cluster.node_mut(leader).wait_exit(FORMATION);
    assert!(
        !status.success() && cluster.node(leader).log().contains("failpoint"),
        "the leader should abort at the failpoint, exited with {status}"
    );
    cluster.add(fourth);

    // Every survivor calls n4 a voter (not "joining") only once the change is finished.
    cluster.wait_converged(FORMATION, "the survivors finish adding n4");
    // Whichever survivor led then (leadership may have moved since) says so, once the
    // uniform configuration it appended (which `list` shows at once) is committed.
    eventually(ELECTION, "a survivor says it finished the change", || {
        cluster
            .running()
            .iter()
            .any(|&i| {
                cluster
                    .node(i)
                    .log()
                    .contains("finished a membership change a previous leader left half done")
            })
            .then_some(())
            .ok_or("no survivor logged it")
    });

    // The crashed leader comes back and agrees: four voters, no joint configuration.
    cluster
        .node(leader)
        .set_failpoint("before-second-membership-step", false);
    cluster.node_mut(leader).start();
    let view = cluster.wait_converged(FORMATION, "four voters, the old leader among them");
    assert_eq!(view["members"].as_array().unwrap().len(), 4);
}
