//! Planned switchovers under load through the pooled port, with real PostgreSQL: clients in
//! transaction mode see latency, not errors. New transactions are held while the primary
//! drains and hands over, then run on the new primary.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::{replicas_streaming, writable, FORMATION};
use common::pooler::{app_client_async, app_cluster, try_app_client};
use common::{assert_success, eventually, require_postgres};

const CLIENTS: i32 = 50;
const SWITCHOVERS: usize = 5;

/// What the clients saw: acknowledged commits (client, n), errors, and the longest a
/// transaction took.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<(i32, i32)>,
    errors: Vec<String>,
    longest: Duration,
}

#[test]
fn fifty_pooled_clients_see_no_error_and_lose_no_commit_across_five_switchovers() {
    if !require_postgres() {
        return;
    }
    let (cluster, _, port) = app_cluster(
        "pool_mode = \"transaction\"\npool_size = 10\npause_timeout = \"30s\"\n\
         query_wait_timeout = \"60s\"",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = app_client_async(port).await;
        c.batch_execute(
            "create table t (client int, n int, primary key (client, n)); \
             create table counters (client int primary key, n int); \
             insert into counters select g, 0 from generate_series(1, 50) g",
        )
        .await
        .unwrap();
    });

    // Fifty clients, each committing transactions of three statements in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|id| {
            let (stop, seen) = (stop.clone(), seen.clone());
            rt.spawn(async move {
                let mut client = app_client_async(port).await;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    let result = async {
                        let tx = client.transaction().await?;
                        tx.execute("insert into t values ($1, $2)", &[&id, &n])
                            .await?;
                        tx.execute("update counters set n = $2 where client = $1", &[&id, &n])
                            .await?;
                        tx.commit().await
                    }
                    .await;
                    let failed = {
                        let mut seen = seen.lock().unwrap();
                        seen.longest = seen.longest.max(started.elapsed());
                        match result {
                            Ok(()) => {
                                seen.acknowledged.push((id, n));
                                false
                            }
                            Err(e) => {
                                seen.errors.push(format!("client {id}: {e:?}"));
                                true
                            }
                        }
                    };
                    // As an application would: a new connection, then go on.
                    if failed {
                        if let Ok(again) = try_app_client(port).await {
                            client = again;
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

    let mut stalls = Vec::new();
    for round in 0..SWITCHOVERS {
        let old = eventually(FORMATION, "one primary", || writable(&cluster));
        // As an operator would: the last switchover's old primary has rejoined first (a
        // primary that stops while a member rewinds from it leaves that member out).
        eventually(FORMATION, "both replicas stream", || {
            replicas_streaming(&cluster, old)
        });
        let candidate = 1 + (old % 3);
        let name = cluster.node(candidate).name.clone();
        seen.lock().unwrap().longest = Duration::ZERO;
        assert_success(
            &cluster.node(old).cli(&["switchover", "--candidate", &name]),
            "switchover",
        );
        eventually(FORMATION, "the candidate is primary", || {
            match writable(&cluster) {
                Ok(now) if now == candidate => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let before = committed();
        eventually(FORMATION, "clients commit on the new primary", || {
            let n = committed();
            (n >= before + 2 * CLIENTS as usize).then_some(()).ok_or(n)
        });
        let errors = seen.lock().unwrap().errors.clone();
        assert!(
            errors.is_empty(),
            "switchover {}: {} client errors, first: {:?}",
            round + 1,
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        stalls.push(seen.lock().unwrap().longest);
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for client in clients {
            client.await.unwrap();
        }
    });

    let seen = seen.lock().unwrap();
    assert!(seen.errors.is_empty(), "client errors: {:?}", seen.errors);
    // Every acknowledged commit is on the last primary.
    let last = eventually(FORMATION, "one primary", || writable(&cluster));
    let rows: std::collections::HashSet<String> = cluster
        .node(last)
        .sql_in("app", "select client || '/' || n from t")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let missing: Vec<String> = seen
        .acknowledged
        .iter()
        .map(|(c, n)| format!("{c}/{n}"))
        .filter(|row| !rows.contains(row))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    eprintln!(
        "{} commits by {CLIENTS} clients across {SWITCHOVERS} switchovers, 0 errors; \
         longest transaction per switchover: {stalls:?}",
        seen.acknowledged.len()
    );
}
