//! The built-in proxy on real PostgreSQL: every member's writer port reaches the primary,
//! reader ports reach the replicas, and after a failover the same writer port reaches the
//! new primary while connections to the old one have failed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node::psql;
use common::pg::{healthy_cluster, writable};
use common::{eventually, require_postgres, TestCluster};

const FAILOVER: Duration = Duration::from_secs(20);

/// Runs `query` through TCP port `port` on 127.0.0.1 as the password role `app`.
fn sql_via(port: u16, query: &str) -> Result<String, String> {
    let output = Command::new(psql())
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "app",
            "-d",
            "postgres",
        ])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", query])
        .env("PGPASSWORD", "app")
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// `inet_server_port()` through `port`: which PostgreSQL answered.
fn served_by(cluster: &TestCluster, port: u16) -> Result<usize, String> {
    let answer = sql_via(port, "select inet_server_port()")?;
    (1..=cluster.len())
        .find(|&i| cluster.node(i).pg_port.to_string() == answer)
        .ok_or(format!("answered by unknown port {answer}"))
}

#[test]
fn writer_and_reader_ports_follow_the_primary_and_the_replicas() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    cluster
        .node(primary)
        .sql("create role app login password 'app'; create table t (v int); grant all on t to app")
        .unwrap();

    // Every member's writer port reaches the primary; writes land there.
    for i in 1..=3 {
        let port = cluster.node(i).writer_port;
        let by = eventually(FAILOVER, "the writer port routes", || {
            served_by(&cluster, port)
        });
        assert_eq!(by, primary, "n{i}'s writer port");
        sql_via(port, &format!("insert into t values ({i})")).unwrap();
    }
    assert_eq!(
        cluster.node(primary).sql("select count(*) from t"),
        Ok("3".into())
    );

    // Reader ports reach replicas (once each proxy has seen them stream), and both of them.
    for i in 1..=3 {
        let port = cluster.node(i).reader_port;
        eventually(
            FAILOVER,
            "the reader port routes to a replica",
            || match served_by(&cluster, port)? {
                by if by != primary => Ok(()),
                by => Err(format!("n{i}'s reader port reached n{by}")),
            },
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut round = 0;
    eventually(FAILOVER, "reads spread over both replicas", || {
        round += 1;
        let port = cluster.node(1 + round % 3).reader_port;
        // One connection per read: the proxy alternates between equally loaded replicas.
        let answer = sql_via(
            port,
            "select inet_server_port() || ' ' || pg_is_in_recovery()",
        )?;
        let (served, recovering) = answer.split_once(' ').ok_or(answer.clone())?;
        let by = (1..=cluster.len())
            .find(|&i| cluster.node(i).pg_port.to_string() == served)
            .ok_or(answer.clone())?;
        assert_ne!(by, primary, "a reader connection reached the primary");
        assert_eq!(recovering, "true", "{answer}");
        seen.insert(by);
        (seen.len() == 2).then_some(()).ok_or(format!("{seen:?}"))
    });

    // A writer session open through a survivor's proxy when the primary is lost ...
    let survivor = (1..=3).find(|&i| i != primary).unwrap();
    let port = cluster.node(survivor).writer_port;
    let mut open = Command::new(psql())
        .args(["-X", "-U", "app", "-d", "postgres", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-c", "select pg_sleep(60)"])
        .env("PGPASSWORD", "app")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(FAILOVER, "the session is running on the primary", || {
        let n = cluster
            .node(primary)
            .sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)'")?;
        (n == "1").then_some(()).ok_or(n)
    });
    let killed = Instant::now();
    cluster.node_mut(primary).kill();
    // ... fails, and the same port then reaches the new primary.
    let status = eventually(FAILOVER, "the open session ends", || {
        open.try_wait().ok().flatten()
    });
    assert!(
        !status.success(),
        "the session to the old primary must fail"
    );
    let new = eventually(FAILOVER, "a new primary", || writable(&cluster));
    let by = eventually(FAILOVER, "the writer port reaches the new primary", || {
        sql_via(port, "insert into t values (4)")?;
        served_by(&cluster, port)
    });
    assert_eq!(by, new);
    eprintln!(
        "proxy: first write through n{survivor}'s writer port {:?} after the kill",
        killed.elapsed()
    );
}

/// Which members the reader port of member `via` sends `n` fresh connections to.
fn readers_seen(cluster: &TestCluster, via: usize, n: usize) -> Result<Vec<usize>, String> {
    let port = cluster.node(via).reader_port;
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(served_by(cluster, port)?);
    }
    seen.sort();
    seen.dedup();
    Ok(seen)
}

#[test]
fn a_replica_whose_replay_is_paused_past_the_lag_limit_gets_no_new_readers() {
    if !require_postgres() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let p = cluster.node(primary);
    p.sql("create role app login password 'app'; create table t (v int, pad text)")
        .unwrap();
    let replicas: Vec<usize> = (1..=3).filter(|&i| i != primary).collect();
    let (paused, other) = (replicas[0], replicas[1]);
    eventually(FAILOVER, "reads reach both replicas", || {
        let seen = readers_seen(&cluster, primary, 4)?;
        (seen == replicas).then_some(()).ok_or(format!("{seen:?}"))
    });
    cluster
        .node(paused)
        .sql("select pg_wal_replay_pause()")
        .unwrap();
    // 20 MB of WAL: past the default 16 MiB limit.
    p.sql("insert into t select g, repeat('x', 1000) from generate_series(1, 20000) g")
        .unwrap();
    eventually(FAILOVER, "the paused replica gets no new reader", || {
        let seen = readers_seen(&cluster, primary, 4)?;
        (seen == vec![other])
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    cluster
        .node(paused)
        .sql("select pg_wal_replay_resume()")
        .unwrap();
    eventually(FAILOVER, "it gets readers again once caught up", || {
        let seen = readers_seen(&cluster, primary, 4)?;
        (seen == replicas).then_some(()).ok_or(format!("{seen:?}"))
    });
}
