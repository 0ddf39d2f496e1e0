//! `Type=notify` on a real socket, as systemd runs the daemon: `READY=1` once the node
//! serves, the HA sentence as `STATUS=`, watchdog pings at half `WATCHDOG_USEC`, and
//! `STOPPING=1` at SIGTERM; nothing from PostgreSQL, whose environment loses the socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{eventually, require_postgres, Node};

/// Every datagram received so far, as text.
fn drain(socket: &UnixDatagram, into: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_alive_and_stopping() {
    if !require_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    // Writable by anyone, as systemd's is: PostgreSQL (its own OS user when the tests run as
    // root) could send if it had the socket's name.
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.path(), path.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    socket.set_nonblocking(true).unwrap();
    let mut node = Node::new(&common::node::test_name(), "n1").with_postgres();
    node.init(&[]);
    node.start_with_env(&[
        ("NOTIFY_SOCKET", path.as_os_str()),
        // 1 s: pings every 500 ms.
        ("WATCHDOG_USEC", std::ffi::OsStr::new("1000000")),
    ]);
    let mut messages = Vec::new();
    eventually(
        Duration::from_secs(60),
        "READY=1, a primary's STATUS= and pings",
        || {
            drain(&socket, &mut messages);
            let ready = messages.iter().any(|m| m.lines().any(|l| l == "READY=1"));
            let primary = messages
                .iter()
                .any(|m| m.contains("STATUS=") && m.contains("primary"));
            let pings = messages
                .iter()
                .filter(|m| m.trim_end() == "WATCHDOG=1")
                .count();
            (ready && primary && pings >= 3)
                .then_some(())
                .ok_or(messages.clone())
        },
    );
    // PostgreSQL (built with systemd support on Debian) would send its own READY=1 if it
    // inherited the socket: exactly one.
    let readies = messages.iter().filter(|m| m.contains("READY=1")).count();
    assert_eq!(readies, 1, "one READY=1, from the daemon: {messages:?}");

    let status = node.terminate();
    assert!(status.success(), "exits 0 after SIGTERM: {status}");
    drain(&socket, &mut messages);
    assert!(
        messages
            .iter()
            .any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "STOPPING=1 at shutdown: {messages:?}"
    );
    let readies = messages.iter().filter(|m| m.contains("READY=1")).count();
    assert_eq!(
        readies, 1,
        "still one READY=1 after PostgreSQL stopped: {messages:?}"
    );
}

/// The uid and gid of OS user `name`, from `id`.
fn ids_of(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, name])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A capability set (`CapEff`, `CapAmb`, ...) of process `pid`.
fn capabilities_of(pid: u32, set: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The effective uid of process `pid`.
fn uid_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn init_as_root_hands_the_state_to_its_owner_and_the_daemon_runs_as_that_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !require_postgres() {
        return;
    }
    let root = uid_of(std::process::id()) == Some(0);
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root, and CI runs as root"
        );
        eprintln!("skipping: running the daemon as another user needs root");
        return;
    }
    let (uid, gid) =
        ids_of("postgres").expect("the postgres user (the postgresql package makes it)");
    // As the package leaves it: the state directory is the postgres user's, mode 0700.
    let mut node = Node::new(&common::node::test_name(), "n1").with_postgres();
    std::fs::create_dir_all(&node.state_dir).unwrap();
    std::os::unix::fs::chown(&node.state_dir, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&node.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = std::fs::metadata(&node.config_path).unwrap();
    assert!(
        config.mode() & 0o004 != 0,
        "the harness's config is world-readable"
    );

    // `sudo pgquorum init`
    let output = node.cli(&["init"]);
    common::assert_success(&output, "init as root");
    let stdout = common::OutputExt::stdout_text(&output);
    assert!(
        stdout.contains(&format!(
            "state files handed to postgres, the owner of {}",
            node.state_dir.display()
        )),
        "init says it handed the files over: {stdout}"
    );
    for entry in std::fs::read_dir(&node.state_dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{} belongs to postgres",
            entry.path().display()
        );
    }

    // The unit's `User=postgres` with AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW: the
    // daemon and its PostgreSQL run as postgres, and only the daemon has the capabilities.
    node.run_as = Some("postgres".into());
    node.start();
    let daemon = node.pid().unwrap();
    assert_eq!(uid_of(daemon), Some(uid), "the daemon runs as postgres");
    let net = (1u64 << 12) | (1 << 13);
    assert_eq!(
        capabilities_of(daemon, "CapAmb").map(|c| c & net),
        Some(net),
        "the daemon has CAP_NET_ADMIN and CAP_NET_RAW, as the unit grants them"
    );
    eventually(Duration::from_secs(60), "a writable primary", || match node
        .sql("select pg_is_in_recovery()")
    {
        Ok(answer) if answer == "f" => Ok(()),
        other => Err(other),
    });
    let postmaster = node.postmaster_pid().expect("a postmaster");
    assert_eq!(
        uid_of(postmaster as u32),
        Some(uid),
        "PostgreSQL runs as postgres"
    );
    for set in ["CapAmb", "CapEff", "CapPrm"] {
        assert_eq!(
            capabilities_of(postmaster as u32, set),
            Some(0),
            "PostgreSQL gets none of the daemon's capabilities ({set})"
        );
    }
    assert!(node.terminate().success());
}
