//! The pooled port (issue 20, under construction) with real PostgreSQL and real clients:
//! SCRAM logins checked against the role's verifier, sessions reaching the primary from a
//! replica's port, and bad input closed with a PostgreSQL error without touching other
//! clients.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::node::psql;
use common::pg::{healthy_cluster, replicas_streaming, FORMATION};
use common::ports::free_port;
use common::{eventually, require_postgres};

/// `psql -c sql` through the pooler on `port` as `user` with `password`.
fn through(port: u16, user: &str, password: &str, sql: &str) -> Output {
    Command::new(psql())
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname=postgres sslmode=prefer connect_timeout=5"
        ))
        .args(["-XAtqc", sql])
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("running psql")
}

/// Everything the pooler sends on a connection that wrote `bytes`, until it closes it.
fn answer_to(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn startup(user: &str) -> Vec<u8> {
    let body = format!("user\0{user}\0database\0postgres\0\0");
    let mut packet = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&196_608u32.to_be_bytes());
    packet.extend_from_slice(body.as_bytes());
    packet
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_scram_login_on_a_replicas_pooled_port_reaches_the_primary_and_bad_input_is_refused() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    cluster
        .node(primary)
        .sql("create role app login password 'pencil'")
        .unwrap();
    let replica = 1 + primary % 3;
    let port = free_port();
    let node = cluster.node_mut(replica);
    node.terminate();
    node.append_config(&format!(
        "\n[pooler]\nlisten = \"127.0.0.1:{port}\"\nauth_timeout = \"2s\"\n"
    ));
    node.start();
    eventually(FORMATION, "the restarted replica streams again", || {
        replicas_streaming(&cluster, primary)
    });

    let session = eventually(FORMATION, "a login through the pooled port", || {
        let out = through(
            port,
            "app",
            "pencil",
            "select pg_is_in_recovery(), current_user",
        );
        out.status
            .success()
            .then(|| text(&out.stdout))
            .ok_or(text(&out.stderr))
    });
    assert_eq!(
        session.trim(),
        "f|app",
        "the session runs on the primary, as app"
    );

    for (user, password) in [("app", "wrong"), ("nobody", "pencil")] {
        let out = through(port, user, password, "select 1");
        let said = text(&out.stderr);
        assert!(
            !out.status.success()
                && said.contains(&format!(
                    "password authentication failed for user \"{user}\""
                )),
            "{user}/{password}: {said}"
        );
    }

    // psql's Ctrl-C reaches the primary: the pooler passes the cancel request on.
    let mut sleeper = Command::new(psql())
        .arg(format!(
            "host=127.0.0.1 port={port} user=app dbname=postgres sslmode=disable"
        ))
        .args(["-XAtqc", "select pg_sleep(60)"])
        .env("PGPASSWORD", "pencil")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let p = cluster.node(primary);
    eventually(FORMATION, "the sleep runs on the primary", || {
        let n =
            p.sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)'")?;
        (n == "1").then_some(()).ok_or(n)
    });
    // SAFETY: kill(2) has no memory-safety preconditions; the child has not been reaped.
    unsafe { libc::kill(sleeper.id() as libc::pid_t, libc::SIGINT) };
    let status = eventually(FORMATION, "psql ends after the cancel", || {
        sleeper.try_wait().ok().flatten().ok_or("still running")
    });
    let mut said = String::new();
    sleeper
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        !status.success() && said.contains("canceling statement due to user request"),
        "{status}: {said}"
    );

    // Garbage instead of a startup packet, and a protocol violation during the login.
    let garbage = answer_to(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(garbage.first(), Some(&b'E'), "{}", text(&garbage));
    assert!(text(&garbage).contains("invalid length of startup packet"));
    let mut violation = startup("app");
    violation.extend_from_slice(b"Q\0\0\0\x0dselect 1\0");
    let answer = answer_to(port, &violation);
    assert!(
        text(&answer).contains("expected SASL response, got message type 'Q'"),
        "{}",
        text(&answer)
    );

    // A client that never finishes logging in is closed after auth_timeout; another logs in
    // meanwhile.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(&startup("app")).unwrap();
    let other = through(port, "app", "pencil", "select 42");
    assert_eq!(text(&other.stdout).trim(), "42", "{}", text(&other.stderr));
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    assert!(
        text(&answer).contains("canceling authentication due to timeout"),
        "{}",
        text(&answer)
    );
}
