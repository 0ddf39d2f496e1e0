//! A VIP this daemon could not move stops `pgquorum run` at start, with one error that names
//! the problem and the fix, before any port is bound (not at the first failover).

mod common;

use std::process::Command;

use common::node::BIN;
use common::{assert_error, require_postgres, Node};

/// An address of the harness's test range that no interface here has.
const VIP: &str = "10.213.251.100/24";

/// Whether this process runs as root (it then has every capability to drop).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// A set-up member (init done) supervising PostgreSQL, with `vip` appended to its config.
fn member_with(vip: &str) -> Node {
    let node = Node::new(&common::node::test_name(), "n1").with_postgres();
    node.append_config(vip);
    node.init(&[]);
    node
}

/// The API port answers nothing: startup stopped before binding it.
fn assert_nothing_bound(node: &Node) {
    assert!(
        node.get("/liveness").is_err(),
        "the API port {} was bound",
        node.api_addr()
    );
}

#[test]
fn a_vip_on_a_missing_interface_stops_startup_before_any_port_is_bound() {
    if !require_postgres() {
        return;
    }
    let node = member_with(&format!(
        "[vip]\naddress = \"{VIP}\"\ninterface = \"pgqnosuch0\"\n"
    ));
    let output = node.cli(&["run"]);
    if is_root() {
        assert_error(
            &output,
            1,
            "[vip] interface = \"pgqnosuch0\" does not exist on this host",
        );
    } else {
        // Without root the capability check comes first; the next test covers it.
        assert_error(&output, 1, "CAP_NET_ADMIN");
    }
    assert_nothing_bound(&node);

    // Without an interface, the one whose subnet holds the VIP is looked for.
    let node = member_with(&format!("[vip]\naddress = \"{VIP}\"\n"));
    let output = node.cli(&["run"]);
    if is_root() {
        assert_error(
            &output,
            1,
            "no interface has an address in the subnet of the VIP 10.213.251.100; set [vip] interface",
        );
    }
    assert_nothing_bound(&node);
}

#[test]
fn a_missing_capability_is_named_at_start() {
    if !require_postgres() {
        return;
    }
    let node = member_with(&format!("[vip]\naddress = \"{VIP}\"\ninterface = \"lo\"\n"));
    // Root loses CAP_NET_ADMIN and CAP_NET_RAW from its bounding set, as a daemon started
    // as an unprivileged user without the unit's AmbientCapabilities would lack them.
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set", "-net_admin,-net_raw", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let output = command
        .arg("run")
        .arg("-c")
        .arg(&node.config_path)
        .env_remove("RUST_LOG")
        .output()
        .expect("running pgquorum");
    let line = assert_error(
        &output,
        1,
        "[vip] mode = \"netlink\" needs CAP_NET_ADMIN and CAP_NET_RAW to add, remove and \
         announce the address",
    );
    assert!(
        line.contains("AmbientCapabilities") && line.contains("mode = \"hook\""),
        "the error says how to fix it: {line}"
    );
    assert_nothing_bound(&node);

    // Hook mode needs neither: the same member starts (and is stopped again).
    let mut node = node;
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    node.write_config(&text.replace("interface = \"lo\"", "mode = \"hook\""));
    node.start();
    assert_eq!(node.get("/liveness").map(|(code, _)| code).ok(), Some(200));
}
