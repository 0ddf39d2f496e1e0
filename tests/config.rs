//! The dynamic (cluster-wide) configuration through the CLI: shown the same on every member,
//! changed through Raft, refused with the key named when invalid.

mod common;

use std::time::Duration;

use common::{assert_error, assert_success, eventually, OutputExt, TestCluster};

fn ttl_on(cluster: &TestCluster, i: usize) -> Result<String, String> {
    let output = cluster.node(i).cli(&["config", "show"]);
    let value: serde_json::Value =
        serde_json::from_str(&output.stdout_text()).map_err(|e| e.to_string())?;
    value["ttl"]
        .as_str()
        .map(str::to_string)
        .ok_or(output.stdout_text())
}

#[test]
fn dynamic_configuration_is_changed_on_one_member_and_seen_on_all() {
    let cluster = TestCluster::start(3);
    assert_eq!(ttl_on(&cluster, 2).as_deref(), Ok("2s"));
    assert_success(
        &cluster
            .node(1)
            .cli(&["config", "set", "ttl=3s", "loop_wait=1s"]),
        "set",
    );
    for i in 1..=3 {
        eventually(
            Duration::from_secs(10),
            &format!("n{i} shows ttl 3s"),
            || match ttl_on(&cluster, i) {
                Ok(ttl) if ttl == "3s" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    // Refused, naming the key and the fix; nothing changes.
    let refused = cluster.node(2).cli(&["config", "set", "loop_wait=2s"]);
    assert_error(
        &refused,
        1,
        "loop_wait (2s) must be at most a third of ttl (3s)",
    );
    let unknown = cluster.node(2).cli(&["config", "set", "tll=3s"]);
    assert_error(&unknown, 1, "unknown field `tll`");
    let not_pair = cluster.node(2).cli(&["config", "set", "ttl"]);
    assert_error(&not_pair, 2, "is not key=value");
    let sync = cluster
        .node(2)
        .cli(&["config", "set", "synchronous_mode=always"]);
    assert_error(&sync, 1, "unknown variant `always`");
    let count = cluster
        .node(2)
        .cli(&["config", "set", "synchronous_node_count=0"]);
    assert_error(&count, 1, "synchronous_node_count (0) must be at least 1");
    assert_eq!(ttl_on(&cluster, 3).as_deref(), Ok("3s"));

    // `config edit` in an editor (here a sed script): applied when valid ...
    let edit = |script: &str| {
        let editor = format!("sed -i '{script}'");
        cluster
            .node(3)
            .cli_with_env(&[("EDITOR", &editor), ("VISUAL", "")], &["config", "edit"])
    };
    assert_success(&edit("s/^ttl = .*/ttl = \"4s\"/"), "config edit");
    eventually(
        Duration::from_secs(10),
        "n1 shows ttl 4s",
        || match ttl_on(&cluster, 1) {
            Ok(ttl) if ttl == "4s" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // ... refused with the key named when not, and nothing changes.
    let bad = edit("s/^ttl = /tll = /");
    assert_error(&bad, 2, "unknown field `tll`");
    let unchanged = edit("s/^nothing-matches$//");
    assert_success(&unchanged, "config edit without change");
    assert!(unchanged.stdout_text().contains("no change"));
    assert_eq!(ttl_on(&cluster, 2).as_deref(), Ok("4s"));
}
