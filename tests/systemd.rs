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
