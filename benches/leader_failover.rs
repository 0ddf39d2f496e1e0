//! Leader failover: 3 daemons on loopback with the default (LAN) Raft timings. Each run finds
//! the Raft leader, SIGKILLs it, and measures the time until a proposal (`POST /admin/tokens`
//! to a survivor, retried every 20 ms) succeeds; then restarts the killed node and waits until
//! it has caught up before the next run.
//!
//! `cargo bench --bench leader_failover`; env: `PGQ_BENCH_RUNS` (default 7), `PGQUORUM_BIN`.
//! Goal: median < 3 s.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::{Cluster, Http};

const TOKEN_REQUEST: &str = r#"{"uses":1,"ttl":"1h"}"#;

fn main() {
    let runs: usize = std::env::var("PGQ_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    println!("leader_failover: 3 nodes on loopback, default LAN timings (heartbeat 100 ms, election 400-800 ms)");
    println!("binary: {}", support::binary().display());
    println!("machine: {}", support::machine());
    let mut cluster = Cluster::start(3, "");
    println!("cluster up in {}", cluster.root.path().display());
    println!();
    println!(
        "{:>3}  {:>10}  {:>10}  {:>9}",
        "run", "killed", "new leader", "time (ms)"
    );

    let mut times = Vec::new();
    for run in 1..=runs {
        let killed = cluster.leader_index().expect("a leader before the kill");
        let survivor = (killed + 1) % cluster.nodes.len();
        let token = cluster.nodes[survivor].admin_token();
        let mut http = Http::new(&cluster.nodes[survivor].api_addr);

        let started = Instant::now();
        cluster.nodes[killed].kill();
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
        let new_leader = cluster.nodes[survivor]
            .cluster()
            .and_then(|v| v["leader"].as_u64())
            .map_or_else(|| "?".into(), |id| cluster.name_of(id));
        println!(
            "{run:>3}  {:>10}  {new_leader:>10}  {:>9}",
            cluster.nodes[killed].name,
            elapsed.as_millis()
        );

        // Restart the killed node and wait until all three agree on the leader and the
        // restarted one has applied everything the leader had when it came back.
        cluster.nodes[killed].start();
        cluster.wait_for(
            "the restarted node to rejoin",
            Duration::from_secs(60),
            |c| c.voters_seen_by_all() == Some(3),
        );
        let target = cluster
            .leader_index()
            .and_then(|l| cluster.nodes[l].cluster())
            .and_then(|v| v["last_applied"].as_u64())
            .unwrap_or(0);
        cluster.wait_for(
            "the restarted node to catch up",
            Duration::from_secs(60),
            |c| {
                c.nodes[killed]
                    .cluster()
                    .and_then(|v| v["last_applied"].as_u64())
                    .is_some_and(|a| a >= target)
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
