//! The pooled port (issue 20, under construction) with real PostgreSQL and real clients:
//! SCRAM logins checked against the role's verifier, sessions reaching the primary from a
//! replica's port, bad input closed with a PostgreSQL error without touching other
//! clients, and transaction pooling with pgbench (simple, extended and prepared protocol)
//! and tokio-postgres.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::node::psql;
use common::pg::{healthy_cluster, FORMATION};
use common::pooler::{
    app_client_async, app_cluster, frame, raw_startup, read_message, startup, text, through,
    with_pooler,
};
use common::{eventually, require_postgres};

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
    let port = with_pooler(&mut cluster, primary, "auth_timeout = \"2s\"");

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

    // TLS with the cluster CA's certificate for this member: libpq verifies it in full.
    let pooler = cluster.node(1 + primary % 3);
    let exported = pooler.cli(&["ca", "export"]);
    common::assert_success(&exported, "ca export");
    let ca = pooler.state_dir.with_file_name("pooler-ca.pem");
    std::fs::write(&ca, &exported.stdout).unwrap();
    let verified = Command::new(psql())
        .arg(format!(
            "host=127.0.0.1 port={port} user=app dbname=postgres sslmode=verify-full \
             sslrootcert={}",
            ca.display()
        ))
        .args(["-XAtqc", "select 'over TLS'"])
        .env("PGPASSWORD", "pencil")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        text(&verified.stdout).trim(),
        "over TLS",
        "{}",
        text(&verified.stderr)
    );
    // Bytes after an SSLRequest, before the handshake, are refused (CVE-2021-23214).
    let mut injected = 8u32.to_be_bytes().to_vec();
    injected.extend_from_slice(&80_877_103u32.to_be_bytes());
    injected.extend_from_slice(&startup("app"));
    let answer = answer_to(port, &injected);
    assert!(
        text(&answer).contains("received unencrypted data after SSL request"),
        "{}",
        text(&answer)
    );

    // Garbage instead of a startup packet, and a protocol violation during the login.
    let garbage = answer_to(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(garbage.first(), Some(&b'E'), "{}", text(&garbage));
    assert!(text(&garbage).contains("invalid length of startup packet"));
    let mut violation = startup("app");
    violation.extend_from_slice(b"Q\0\0\0\x0dselect 1\0");
    let answer = answer_to(port, &violation);
    assert!(
        text(&answer).contains("expected SASL response, got message type 81"),
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

/// pgbench through the pooler as app; its output, or why it failed.
fn pgbench(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new(psql().with_file_name("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", "pencil")
        .stdin(Stdio::null())
        .output()
        .expect("running pgbench");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    out.status.success().then(|| all.clone()).ok_or(all)
}

fn app_client(rt: &tokio::runtime::Runtime, port: u16) -> tokio_postgres::Client {
    rt.block_on(app_client_async(port))
}

/// A raw connection logged in as app through the pooler (SCRAM with postgres-protocol's
/// client), with everything up to ReadyForQuery read.
fn raw_login(port: u16) -> TcpStream {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    let mut stream = raw_startup(port);
    let mut scram = ScramSha256::new(b"pencil", ChannelBinding::unsupported());
    loop {
        let (kind, body) = read_message(&mut stream);
        match (
            kind,
            body.get(..4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap())),
        ) {
            (b'R', Some(10)) => {
                let mut msg = b"SCRAM-SHA-256\0".to_vec();
                msg.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
                msg.extend_from_slice(scram.message());
                stream.write_all(&frame(b'p', &msg)).unwrap();
            }
            (b'R', Some(11)) => {
                scram.update(&body[4..]).unwrap();
                stream.write_all(&frame(b'p', scram.message())).unwrap();
            }
            (b'R', Some(12)) => scram.finish(&body[4..]).unwrap(),
            (b'Z', _) => return stream,
            (b'E', _) => panic!("login refused: {}", text(&body)),
            _ => {}
        }
    }
}

#[test]
fn transaction_pooling_runs_pgbench_in_every_protocol_on_fewer_server_connections() {
    if !require_postgres() {
        return;
    }
    let reader_port = common::ports::free_port();
    let (cluster, primary, port) = app_cluster(&format!(
        "pool_mode = \"transaction\"\npool_size = 3\nquery_wait_timeout = \"2s\"\n\
         reader_listen = \"127.0.0.1:{reader_port}\""
    ));
    let p = cluster.node(primary);
    let app_connections = || {
        p.sql("select count(*) from pg_stat_activity where usename = 'app' and datname = 'app'")
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };

    // pgbench -i: DDL and COPY through the pooler; then 8 clients on 3 connections, in
    // each protocol.
    pgbench(port, &["-i", "-s", "1", "-q"]).unwrap();
    // One thread per client: pgbench prepares a statement synchronously, so a client
    // waiting for a connection would stall the other clients of its thread, which may hold
    // the connections it waits for.
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(port, &["-M", mode, "-c", "8", "-j", "8", "-t", "100"])
            .unwrap_or_else(|e| panic!("pgbench -M {mode}: {e}"));
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "-M {mode}: {out}"
        );
        let n = app_connections();
        assert!(
            (1..=3).contains(&n),
            "-M {mode}: {n} server connections for 8 clients"
        );
    }

    // The reader pooled port: its transactions run on replicas, read-only.
    eventually(
        FORMATION,
        "the reader pooled port reaches a replica",
        || {
            let out = through(reader_port, "app", "pencil", "select pg_is_in_recovery()");
            (text(&out.stdout).trim() == "t")
                .then_some(())
                .ok_or(format!("{} {}", text(&out.stdout), text(&out.stderr)))
        },
    );
    let write = through(
        reader_port,
        "app",
        "pencil",
        "create table through_reader ()",
    );
    assert!(
        text(&write.stderr).contains("read-only transaction"),
        "a write through the reader pooled port: {}",
        text(&write.stderr)
    );
    let out = pgbench(reader_port, &["-S", "-c", "6", "-j", "6", "-t", "50"])
        .unwrap_or_else(|e| panic!("pgbench -S through the reader pooled port: {e}"));
    assert!(
        out.contains("number of transactions actually processed: 300/300"),
        "{out}"
    );

    // The pools as `pgquorum pools` and /metrics show them.
    let pooler = cluster.node(1 + primary % 3);
    let shown = pooler.cli(&["pools"]);
    let table = text(&shown.stdout);
    assert!(
        table.starts_with("pool_mode transaction, pool_size 3\n"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains(" app "))
        .unwrap_or_default();
    assert!(row.starts_with("| app "), "{table}");
    let report: serde_json::Value =
        serde_json::from_slice(&pooler.cli(&["pools", "--json"]).stdout).unwrap();
    let app = report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["database"] == "app" && p["side"] == "writer")
        .unwrap();
    assert!(
        (1..=3).contains(&app["logins"].as_u64().unwrap()),
        "{report}"
    );
    let readers = report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["side"] == "reader");
    assert!(
        readers.is_some_and(|p| p["database"] == "app" && p["logins"].as_u64() >= Some(1)),
        "a reader pool: {report}"
    );
    let (_, metrics) = pooler.get("/metrics").unwrap();
    assert!(
        metrics.contains("pgquorum_pooler_server_logins_total{")
            && metrics.contains("database=\"app\",user=\"app\",side=\"reader\"}"),
        "{metrics}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    // A prepared statement follows its client from connection to connection: two other
    // clients hold two of the three in open transactions, then free them, while the
    // statement runs again.
    let a = app_client(&rt, port);
    let b = app_client(&rt, port);
    let c = app_client(&rt, port);
    rt.block_on(async {
        let stmt = a.prepare("select $1::int + 1").await.unwrap();
        for round in 0..6 {
            if round % 2 == 0 {
                b.batch_execute("begin; select 1").await.unwrap();
                c.batch_execute("begin; select 1").await.unwrap();
            }
            let row = a.query_one(&stmt, &[&round]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), round + 1);
            if round % 2 == 0 {
                b.batch_execute("commit").await.unwrap();
                c.batch_execute("commit").await.unwrap();
            }
        }

        // Session state does not leak: a's search_path is reset before b gets the
        // connection; a's time zone, a tracked parameter, stays a's.
        a.batch_execute("set search_path = nowhere; set timezone = 'Asia/Tokyo'")
            .await
            .unwrap();
        for client in [&b, &c] {
            let path: String = client
                .query_one("show search_path", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(path, "\"$user\", public");
            let zone: String = client.query_one("show timezone", &[]).await.unwrap().get(0);
            assert_ne!(zone, "Asia/Tokyo");
        }
        let zone: String = a.query_one("show timezone", &[]).await.unwrap().get(0);
        assert_eq!(zone, "Asia/Tokyo");

        // The pool is full: a fourth request waits query_wait_timeout and gets an error,
        // and its session goes on once a connection is free.
        b.batch_execute("begin").await.unwrap();
        c.batch_execute("begin").await.unwrap();
        a.batch_execute("begin").await.unwrap();
        let d = app_client_async(port).await;
        let err = d.query_one("select 1", &[]).await.unwrap_err();
        let said = err
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or(err.to_string());
        assert!(
            said.contains("query_wait_timeout") && said.contains("pool_size 3"),
            "{said}"
        );
        a.batch_execute("commit").await.unwrap();
        let one: i32 = d.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        b.batch_execute("commit").await.unwrap();
        c.batch_execute("commit").await.unwrap();
    });

    // A protocol violation in a session ends that session with a PostgreSQL error, and
    // no other.
    for garbage in [&b"z\0\0\0\x04"[..], b"Q\xff\xff\xff\xff", b"B\0\0\0\x05\0"] {
        let mut raw = raw_login(port);
        raw.write_all(garbage).unwrap();
        let mut answer = Vec::new();
        let _ = raw.read_to_end(&mut answer);
        assert_eq!(
            answer.first(),
            Some(&b'E'),
            "{garbage:?}: {}",
            text(&answer)
        );
        assert!(
            text(&answer).contains("FATAL"),
            "{garbage:?}: {}",
            text(&answer)
        );
    }
    rt.block_on(async {
        let one: i32 = c.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    });
}
