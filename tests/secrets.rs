//! Secrets out of the database's reach: the daemon runs as its own user, as the packaged unit
//! runs it, PostgreSQL as postgres, and no PostgreSQL role can read a pgquorum secret; a state
//! directory from the layout where postgres owned everything is taken over at the next start.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::os::{
    capabilities_in, capabilities_of, ensure_unit_user, ids_of, require_root, uid_of,
    unit_capability_bits, unit_user,
};
use common::{eventually, require_postgres, Node, OutputExt};

/// The daemon's secret files in a state directory (the rewind role's password among them).
const SECRETS: [&str; 5] = pgquorum::identity::SECRET_FILES;

/// A node whose state directory is as the packages leave it: owned by `owner`, mode `mode`.
fn packaged_node(owner: (u32, u32), mode: u32) -> Node {
    let node = Node::new(&common::node::test_name(), "n1").with_postgres();
    std::fs::create_dir_all(&node.state_dir).unwrap();
    std::os::unix::fs::chown(&node.state_dir, Some(owner.0), Some(owner.1)).unwrap();
    std::fs::set_permissions(&node.state_dir, std::fs::Permissions::from_mode(mode)).unwrap();
    node
}

fn wait_primary(node: &Node) {
    eventually(Duration::from_secs(60), "a writable primary", || match node
        .sql("select pg_is_in_recovery()")
    {
        Ok(answer) if answer == "f" => Ok(()),
        other => Err(other),
    });
}

fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

/// Every way a PostgreSQL superuser could read `path` fails; the same ways read a file the
/// daemon means PostgreSQL to read (so a refusal is about the file, not the method). The
/// program reads its input first, so COPY's own write never meets a closed pipe.
fn assert_unreadable_by_superuser(node: &Node, path: &Path, readable: &Path) {
    let read = |p: &Path| node.sql(&format!("select length(pg_read_file('{}'))", p.display()));
    let cat = |p: &Path| {
        node.sql(&format!(
            "copy (select 1) to program 'cat > /dev/null; cat {} > /dev/null'",
            p.display()
        ))
    };
    let refused = read(path).expect_err(&format!("pg_read_file reads {}", path.display()));
    assert!(
        refused.contains("Permission denied"),
        "pg_read_file({}) is refused for permissions: {refused}",
        path.display()
    );
    let refused = cat(path).expect_err(&format!("COPY TO PROGRAM cat reads {}", path.display()));
    assert!(
        refused.contains("program") && refused.contains("failed"),
        "COPY TO PROGRAM 'cat {}' fails: {refused}",
        path.display()
    );
    read(readable).unwrap_or_else(|e| panic!("pg_read_file({}): {e}", readable.display()));
    cat(readable).unwrap_or_else(|e| panic!("cat {}: {e}", readable.display()));
}

#[test]
fn no_postgresql_role_can_read_a_pgquorum_secret() {
    if !require_postgres() || !require_root("running the daemon as the unit's user") {
        return;
    }
    let (uid, gid) = ensure_unit_user();
    let (pg_uid, _) = ids_of("postgres").expect("the postgres user");
    let mut node = packaged_node((uid, gid), 0o711);
    // `sudo pgquorum init`
    let output = node.cli(&["init"]);
    common::assert_success(&output, "init as root");
    let user = unit_user();
    assert!(
        output.stdout_text().contains(&format!(
            "state files handed to {user}, the owner of {}",
            node.state_dir.display()
        )),
        "init says it handed the files over: {}",
        output.stdout_text()
    );
    node.run_as = Some(user.clone());
    node.start();
    let daemon = node.pid().unwrap();
    assert_eq!(uid_of(daemon), Some(uid), "the daemon runs as {user}");
    assert_eq!(
        capabilities_of(daemon, "CapEff"),
        Some(unit_capability_bits()),
        "the daemon has the unit's capabilities, no more"
    );
    wait_primary(&node);
    let postmaster = node.postmaster_pid().expect("a postmaster") as u32;
    assert_eq!(
        uid_of(postmaster),
        Some(pg_uid),
        "PostgreSQL runs as postgres"
    );

    // What a superuser's backend runs with: postgres, no capability of the daemon's.
    let status = node
        .sql("select pg_read_file('/proc/self/status')")
        .expect("a backend reads its own status");
    for set in ["CapAmb", "CapEff", "CapPrm"] {
        assert_eq!(
            capabilities_in(&status, set),
            Some(0),
            "a backend has no capability ({set}): {status}"
        );
    }
    let groups = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(
        !groups.split_whitespace().any(|g| g == gid.to_string()),
        "a backend is not in the daemon's group {gid}: Groups: {groups}"
    );

    let readable = node.state_dir.join("node.json");
    for name in SECRETS {
        let path = node.state_dir.join(name);
        assert_eq!(
            owner_and_mode(&path),
            (uid, gid, 0o600),
            "{name}: the daemon's user's, 0600"
        );
        assert_unreadable_by_superuser(&node, &path, &readable);
    }
    assert!(
        !node.log().contains("can read this secret")
            && !node.log().contains("runs as the daemon's own OS user"),
        "no exposed-secret warning: {}",
        node.log()
    );
    assert!(node.terminate().success());
}

#[test]
fn a_state_directory_owned_by_postgres_is_taken_over_at_the_next_start() {
    if !require_postgres() || !require_root("running the daemon as the unit's user") {
        return;
    }
    let (uid, gid) = ensure_unit_user();
    let (pg_uid, pg_gid) = ids_of("postgres").expect("the postgres user");
    // The earlier layout: the package made the state directory postgres's, mode 0700, and
    // the unit ran the daemon as postgres with CAP_NET_ADMIN and CAP_NET_RAW.
    let mut node = packaged_node((pg_uid, pg_gid), 0o700);
    common::assert_success(&node.cli(&["init"]), "init as root");
    node.run_as = Some("postgres".into());
    node.run_caps = Some("+net_admin,+net_raw".into());
    node.start();
    wait_primary(&node);
    node.sql("create table kept (v int); insert into kept values (42)")
        .unwrap();
    let exposed = node.state_dir.join("ca.key");
    assert_eq!(owner_and_mode(&exposed).0, pg_uid, "before: postgres's");
    assert!(
        node.log().contains("runs as the daemon's own OS user"),
        "the old layout is warned about: {}",
        node.log()
    );
    assert!(node.terminate().success());

    // The upgrade: the new unit, same state directory.
    node.run_as = Some(unit_user());
    node.run_caps = None;
    node.start();
    wait_primary(&node);
    assert_eq!(
        node.sql("select v from kept").as_deref(),
        Ok("42"),
        "the same database"
    );
    assert_eq!(
        owner_and_mode(&node.state_dir),
        (uid, gid, 0o711),
        "the state directory is the daemon's user's, 0711"
    );
    for name in SECRETS {
        assert_eq!(
            owner_and_mode(&node.state_dir.join(name)),
            (uid, gid, 0o600),
            "{name} taken over"
        );
    }
    for name in ["node.json", "node.pem", "ca.pem", "raft"] {
        assert_eq!(
            owner_and_mode(&node.state_dir.join(name)).0,
            uid,
            "{name} taken over"
        );
    }
    for name in ["pgdata", "run", "pgpass"] {
        assert_eq!(
            owner_and_mode(&node.state_dir.join(name)).0,
            pg_uid,
            "{name} stays PostgreSQL's"
        );
    }
    assert!(
        node.log().contains("took over the daemon's files"),
        "the takeover is logged: {}",
        node.log()
    );
    assert_unreadable_by_superuser(&node, &exposed, &node.state_dir.join("node.json"));
    assert!(node.terminate().success());
}
