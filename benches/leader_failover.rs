//! Leader failover: 3 daemons on loopback with the default (LAN) Raft timings. Each run finds
//! the Raft leader, SIGKILLs it, and measures the time until a proposal (`POST /admin/tokens`
//! to a survivor, retried every 20 ms) succeeds; then restarts the killed node and waits until
//! it has caught up before the next run.
//!
//! `cargo bench --bench leader_failover`; env: `PGQ_BENCH_RUNS` (default 7), `PGQUORUM_BIN`.
//! Goal: median < 3 s.

#[path = "../tests/common/mod.rs"]
mod common;
mod report;
mod support;

use std::thread;
use std::time::{Duration, Instant};

use common::TestCluster;
use support::Http;

const TOKEN_REQUEST: &str = r#"{"uses":1,"ttl":"1h"}"#;

fn main() {
    let runs: usize = std::env::var("PGQ_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    println!("leader_failover: 3 nodes on loopback, default LAN timings (heartbeat 100 ms, election 400-800 ms)");
    println!("binary: {}", report::describe_binary(&common::node::bin()));
    println!("machine: {}", report::machine());
    let mut cluster = TestCluster::start(3);
    println!("cluster up; logs in target/test-logs/leader_failover.unnamed/");
    println!();
    println!(
        "{:>3}  {:>10}  {:>10}  {:>9}",
        "run", "killed", "new leader", "time (ms)"
    );

    let mut times = Vec::new();
    for run in 1..=runs {
        // 1-based, as the harness counts members.
        let killed = cluster.leader_index();
        let survivor = killed % cluster.len() + 1;
        let token = cluster.node(survivor).admin_token();
        let mut http = Http::new(&cluster.node(survivor).api_addr());

        let started = Instant::now();
        cluster.node_mut(killed).kill();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let reply = http.request("POST", "/admin/tokens", Some(&token), Some(TOKEN_REQUEST));
            if matches!(reply, Ok((200, _))) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no proposal succeeded within 60 s of killing the leader ({attempts} attempts)"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed();
        times.push(elapsed);
        let new_leader = cluster
            .node(survivor)
            .cluster_view()
            .ok()
            .and_then(|v| Some(cluster.name_of(&v, v["leader"].as_u64()?)))
            .unwrap_or_else(|| "?".into());
        println!(
            "{run:>3}  {:>10}  {new_leader:>10}  {:>9}",
            cluster.node(killed).name,
            elapsed.as_millis()
        );

        // Restart the killed node and wait until all three agree on the leader and the
        // restarted one has applied everything the leader had when it came back.
        cluster.node_mut(killed).start();
        let leader_view =
            cluster.wait_converged(Duration::from_secs(60), "the restarted node to rejoin");
        let target = leader_view["last_applied"].as_u64().unwrap_or(0);
        common::eventually(
            Duration::from_secs(60),
            "the restarted node to catch up",
            || {
                let applied = cluster.node(killed).cluster_view()?["last_applied"].as_u64();
                match applied {
                    Some(a) if a >= target => Ok(()),
                    other => Err(format!("applied {other:?} of {target}")),
                }
            },
        );
    }

    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = if times.len() % 2 == 1 {
        ms(times[times.len() / 2])
    } else {
        (ms(times[times.len() / 2 - 1]) + ms(times[times.len() / 2])) / 2.0
    };
    println!();
    println!(
        "median {median:.0} ms, min {:.0} ms, max {:.0} ms over {} runs (goal: median < 3000 ms: {})",
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len(),
        if median < 3000.0 { "met" } else { "NOT met" }
    );
}
