//! Checks on a cluster whose members supervise PostgreSQL.

use std::time::Duration;

use super::cluster::TestCluster;
use super::wait::eventually;

/// Formation, initdb and two base backups.
pub const FORMATION: Duration = Duration::from_secs(60);

/// The index of the one member whose PostgreSQL is writable, if exactly one is.
pub fn writable(cluster: &TestCluster) -> Result<usize, String> {
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for i in cluster.running() {
        let answer = cluster.node(i).sql("select pg_is_in_recovery()");
        if answer.as_deref() == Ok("f") {
            found.push(i);
        }
        seen.push(format!("n{i}: {answer:?}"));
    }
    match found.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!("writable members {found:?}; {}", seen.join(", "))),
    }
}

pub fn replicas_streaming(cluster: &TestCluster, primary: usize) -> Result<(), String> {
    let slots = cluster
        .node(primary)
        .sql("select count(*) from pg_replication_slots where active")?;
    let expected = (cluster.running().len() - 1).to_string();
    if slots != expected {
        return Err(format!(
            "{slots} active slots on n{primary}, want {expected}"
        ));
    }
    for i in cluster.running().into_iter().filter(|&i| i != primary) {
        let status = cluster
            .node(i)
            .sql("select status from pg_stat_wal_receiver")?;
        if status != "streaming" {
            return Err(format!("n{i} wal receiver: {status:?}"));
        }
    }
    Ok(())
}

/// A three-member cluster with PostgreSQL, once it has one writable primary and two
/// replicas streaming through their slots; returns it with the primary's index.
pub fn healthy_cluster() -> (TestCluster, usize) {
    let cluster = TestCluster::start_with_postgres(3);
    let primary = eventually(FORMATION, "one writable primary", || writable(&cluster));
    eventually(FORMATION, "two replicas stream through their slots", || {
        replicas_streaming(&cluster, primary)
    });
    (cluster, primary)
}

/// Makes replica `node` stop receiving WAL (its WAL receiver gets an empty
/// `primary_conninfo` through `ALTER SYSTEM`, which overrides the supervisor's file), so
/// that it falls behind while it keeps running and reporting its position.
pub fn stop_receiving(node: &super::node::Node) {
    node.sql("alter system set primary_conninfo = ''")
        .and_then(|_| node.sql("select pg_reload_conf()"))
        .expect("stopping the WAL receiver");
    eventually(
        Duration::from_secs(10),
        "the WAL receiver stops",
        || match node
            .sql("select count(*) from pg_stat_wal_receiver")
            .as_deref()
        {
            Ok("0") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// Undoes [`stop_receiving`].
pub fn resume_receiving(node: &super::node::Node) {
    node.sql("alter system reset primary_conninfo")
        .and_then(|_| node.sql("select pg_reload_conf()"))
        .expect("resuming the WAL receiver");
}

/// The lease (holder, epoch) as member `i` sees it.
pub fn lease(cluster: &TestCluster, i: usize) -> Result<(u64, u64), String> {
    let view = cluster.node(i).cluster_view()?;
    match (
        view["lease"]["holder"].as_u64(),
        view["lease"]["epoch"].as_u64(),
    ) {
        (Some(holder), Some(epoch)) => Ok((holder, epoch)),
        _ => Err(view.to_string()),
    }
}

/// Stops `writer` and checks that every commit it saw acknowledged is in table `t` on
/// `primary` and that every member still reports the lease `before`; returns how many
/// commits there were.
pub fn no_commit_lost_and_no_failover(
    cluster: &TestCluster,
    primary: usize,
    writer: super::writer::Writer,
    before: (u64, u64),
) -> usize {
    let acks = writer.stop();
    let rows: Vec<i64> = (cluster.node(primary).sql("select v from t order by v"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let missing = super::writer::lost(&acks, &rows);
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    for i in 1..=3 {
        assert_eq!(lease(cluster, i), Ok(before), "no failover seen by n{i}");
    }
    acks.len()
}

/// Runs `query` as `probe` (password `probe`) over TCP to `port` with libpq's
/// `sslmode=verify-full` against the CA file `ca`: its output, or psql's error.
pub fn verified_query(port: u16, ca: &std::path::Path, query: &str) -> Result<String, String> {
    use super::node::OutputExt;
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=probe dbname=postgres sslmode=verify-full sslrootcert={}",
        ca.display()
    );
    let output = std::process::Command::new(super::node::psql())
        .args(["-X", "-A", "-t", "-d", &conninfo, "-c", query])
        .env("PGPASSWORD", "probe")
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(output.stdout_text().trim().to_string())
    } else {
        Err(output.stderr_text())
    }
}
