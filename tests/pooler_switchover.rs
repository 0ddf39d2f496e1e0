//! Planned switchovers under load through the pooled port, with real PostgreSQL: clients in
//! transaction mode see latency, not errors. New transactions are held while the primary
//! drains and hands over, then run on the new primary.
//!
//! The same load through the writer port and through HAProxy configured as Patroni
//! documents it is the comparison `scripts/bench-switchover.sh` prints (an ignored test:
//! it measures, and asserts only that no acknowledged commit is lost).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::haproxy::{servers, Haproxy};
use common::node::require_tool;
use common::pg::{replicas_streaming, writable, FORMATION};
use common::pooler::{app_client_async, app_cluster, try_app_client};
use common::{assert_success, eventually, require_postgres, OutputExt};

const CLIENTS: i32 = 50;
const SWITCHOVERS: usize = 5;
/// How long a client whose transaction failed waits before it connects again, as an
/// application's connection pool would.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// What the clients saw: acknowledged commits (client, n), failed transactions, and the
/// longest any client went without a commit.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<(i32, i32)>,
    errors: Vec<(i32, String)>,
    longest_gap: Duration,
}

/// One switchover as the clients saw it.
struct Round {
    failed_transactions: usize,
    clients_failing: usize,
    longest_gap: Duration,
}

/// One run of the load across the switchovers.
struct Report {
    commits: usize,
    rounds: Vec<Round>,
    first_errors: Vec<String>,
    lost: Vec<String>,
}

/// `CLIENTS` clients commit two-statement transactions through `port` in a loop while
/// `SWITCHOVERS` switchovers move the primary around the cluster. A client whose
/// transaction fails connects again and goes on.
fn switchovers_through(cluster: &TestCluster, port: u16, table: &str) -> Report {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = app_client_async(port).await;
        c.batch_execute(&format!(
            "create table {table} (client int, n int, primary key (client, n)); \
             create table {table}_counters (client int primary key, n int); \
             insert into {table}_counters select g, 0 from generate_series(1, {CLIENTS}) g"
        ))
        .await
        .unwrap();
    });
    let insert = format!("insert into {table} values ($1, $2)");
    let update = format!("update {table}_counters set n = $2 where client = $1");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|id| {
            let (stop, seen) = (stop.clone(), seen.clone());
            let (insert, update) = (insert.clone(), update.clone());
            rt.spawn(async move {
                let mut client = app_client_async(port).await;
                let mut last_commit = Instant::now();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let result = async {
                        let tx = client.transaction().await?;
                        tx.execute(&insert, &[&id, &n]).await?;
                        tx.execute(&update, &[&id, &n]).await?;
                        tx.commit().await
                    }
                    .await;
                    let failed = {
                        let mut seen = seen.lock().unwrap();
                        match result {
                            Ok(()) => {
                                seen.acknowledged.push((id, n));
                                seen.longest_gap = seen.longest_gap.max(last_commit.elapsed());
                                last_commit = Instant::now();
                                false
                            }
                            Err(e) => {
                                seen.errors.push((id, format!("{e:?}")));
                                true
                            }
                        }
                    };
                    while failed && !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(RECONNECT_BACKOFF).await;
                        if let Ok(again) = try_app_client(port).await {
                            client = again;
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let committed = || seen.lock().unwrap().acknowledged.len();
    eventually(FORMATION, "every client commits", || {
        let n = committed();
        (n >= 5 * CLIENTS as usize).then_some(()).ok_or(n)
    });

    let mut rounds = Vec::new();
    for _ in 0..SWITCHOVERS {
        let old = eventually(FORMATION, "one primary", || writable(cluster));
        // As an operator would: the last switchover's old primary has rejoined first (a
        // primary that stops while a member rewinds from it leaves that member out).
        eventually(FORMATION, "both replicas stream", || {
            replicas_streaming(cluster, old)
        });
        let candidate = 1 + (old % 3);
        let name = cluster.node(candidate).name.clone();
        let errors_before = seen.lock().unwrap().errors.len();
        seen.lock().unwrap().longest_gap = Duration::ZERO;
        assert_success(
            &cluster.node(old).cli(&["switchover", "--candidate", &name]),
            "switchover",
        );
        eventually(FORMATION, "the candidate is primary", || {
            match writable(cluster) {
                Ok(now) if now == candidate => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        // Every client has committed on the new primary: each one's gap is counted.
        let since = committed();
        eventually(FORMATION, "every client commits on the new primary", || {
            let seen = seen.lock().unwrap();
            let clients: std::collections::HashSet<i32> =
                seen.acknowledged[since..].iter().map(|(c, _)| *c).collect();
            (clients.len() == CLIENTS as usize)
                .then_some(())
                .ok_or(clients.len())
        });
        let seen = seen.lock().unwrap();
        let errors = &seen.errors[errors_before..];
        let clients: std::collections::HashSet<i32> = errors.iter().map(|(c, _)| *c).collect();
        rounds.push(Round {
            failed_transactions: errors.len(),
            clients_failing: clients.len(),
            longest_gap: seen.longest_gap,
        });
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for client in clients {
            client.await.unwrap();
        }
    });

    // Every acknowledged commit is on the last primary.
    let seen = seen.lock().unwrap();
    let last = eventually(FORMATION, "one primary", || writable(cluster));
    let rows: std::collections::HashSet<String> = cluster
        .node(last)
        .sql_in("app", &format!("select client || '/' || n from {table}"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let lost = (seen.acknowledged.iter())
        .map(|(c, n)| format!("{c}/{n}"))
        .filter(|row| !rows.contains(row))
        .collect();
    Report {
        commits: seen.acknowledged.len(),
        rounds,
        first_errors: (seen.errors.iter().take(3))
            .map(|(c, e)| format!("client {c}: {e}"))
            .collect(),
        lost,
    }
}

const POOLER_SETTINGS: &str = "pool_mode = \"transaction\"\npool_size = 10\n\
     pause_timeout = \"30s\"\nquery_wait_timeout = \"60s\"";

#[test]
fn fifty_pooled_clients_see_no_error_and_lose_no_commit_across_five_switchovers() {
    if !require_postgres() {
        return;
    }
    let (cluster, _, port) = app_cluster(POOLER_SETTINGS);
    let report = switchovers_through(&cluster, port, "t");
    let errors: Vec<usize> = (report.rounds.iter())
        .map(|r| r.failed_transactions)
        .collect();
    assert!(
        errors.iter().all(|e| *e == 0),
        "failed transactions per switchover {errors:?}, first: {:?}",
        report.first_errors
    );
    assert!(
        report.lost.is_empty(),
        "acknowledged commits lost: {:?}",
        &report.lost[..report.lost.len().min(5)]
    );
    eprintln!(
        "{} commits by {CLIENTS} clients across {SWITCHOVERS} switchovers, 0 errors; \
         longest gap between a client's commits per switchover: {:?}",
        report.commits,
        (report.rounds.iter())
            .map(|r| r.longest_gap)
            .collect::<Vec<_>>()
    );
}

/// The same load and switchovers through the pooled port, the writer port of the same
/// member, and HAProxy in front of the members' PostgreSQL with Patroni's check settings;
/// prints a table. `scripts/bench-switchover.sh` runs it.
#[test]
#[ignore = "a measurement: run by scripts/bench-switchover.sh"]
fn compare_switchovers_through_the_pooler_the_writer_port_and_haproxy() {
    if !require_postgres() || !require_tool("haproxy", "haproxy") {
        return;
    }
    // A cluster of its own for each path: each starts on timeline 1 with the same history.
    let paths = ["pooled port", "writer port", "HAProxy (Patroni's checks)"];
    let mut reports = HashMap::new();
    for (i, path) in paths.into_iter().enumerate() {
        let (cluster, primary, pooled) = app_cluster(POOLER_SETTINGS);
        let dir = tempfile::tempdir().unwrap();
        let exported = cluster.node(1).cli(&["ca", "export"]);
        assert_success(&exported, "ca export");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, exported.stdout_text()).unwrap();
        let (haproxy, ports) =
            Haproxy::start_as_patroni(dir.path(), &[("primary", servers(&cluster, &ca))]);
        eventually(FORMATION, "HAProxy: the primary alone is UP", || {
            haproxy.only_up("primary", &format!("n{primary}"))
        });
        // The pooled and the writer port of the same member (a replica at first).
        let port = match i {
            0 => pooled,
            1 => cluster.node(1 + primary % 3).writer_port,
            _ => ports[0],
        };
        let report = switchovers_through(&cluster, port, "t");
        eprintln!(
            "{path}: {} commits, first errors {:?}",
            report.commits, report.first_errors
        );
        reports.insert(path, report);
    }
    println!(
        "\n{CLIENTS} clients, two-statement transactions, {SWITCHOVERS} switchovers each; \
         per switchover: failed transactions / clients that saw one / longest gap between a \
         client's commits\n{:<28} {:>8} {:>6}  per switchover",
        "path", "commits", "lost"
    );
    for path in paths {
        let r = &reports[path];
        let rounds: Vec<String> = (r.rounds.iter())
            .map(|r| {
                let gap = r.longest_gap.as_secs_f64();
                format!("{}/{}/{gap:.2}s", r.failed_transactions, r.clients_failing)
            })
            .collect();
        println!(
            "{path:<28} {:>8} {:>6}  {}",
            r.commits,
            r.lost.len(),
            rounds.join("  ")
        );
    }
    for path in paths {
        assert!(
            reports[path].lost.is_empty(),
            "{path}: acknowledged commits lost: {:?}",
            &reports[path].lost[..reports[path].lost.len().min(5)]
        );
    }
}
