//! Lease renewals: 3 daemons on loopback; the member that is the Raft leader acquires the
//! lease, then N committed renewals go through `POST /admin/lease/renew` on it, over a few
//! concurrent HTTP/1.1 keep-alive connections. Every renewal must return 200. Reports the
//! rate, the on-disk size of each node's Raft store (`state_dir/raft`) and each daemon's RSS
//! at the start and the end.
//!
//! `cargo bench --bench lease_renewals`; env: `PGQ_BENCH_RENEWALS` (default 100000),
//! `PGQ_BENCH_CONNS` (default 8), `PGQ_BENCH_SNAPSHOT_EVERY` (default: the config default,
//! 1000), `PGQUORUM_BIN`. Goals: Raft store under 50 MB on disk, RSS under 30 MB.

#[path = "../tests/common/mod.rs"]
mod common;
mod report;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::TestCluster;
use support::{mb, Http};

const DISK_GOAL_MB: f64 = 50.0;
const RSS_GOAL_MB: f64 = 30.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Disk and RSS of every node, for the table.
fn sample(cluster: &TestCluster) -> Vec<(u64, u64)> {
    (1..=cluster.len())
        .map(|i| cluster.node(i))
        .map(|n| (n.raft_dir_bytes(), n.rss_bytes().unwrap_or(0)))
        .collect()
}

fn main() {
    let total = env_u64("PGQ_BENCH_RENEWALS", 100_000);
    let conns = env_u64("PGQ_BENCH_CONNS", 8).max(1);
    let raft_toml = match std::env::var("PGQ_BENCH_SNAPSHOT_EVERY") {
        Ok(n) => format!("snapshot_every = {n}"),
        Err(_) => String::new(),
    };
    println!(
        "lease_renewals: 3 nodes on loopback, default LAN timings, {conns} keep-alive connections"
    );
    println!(
        "raft settings: {}",
        if raft_toml.is_empty() {
            "defaults (snapshot_every = 1000)"
        } else {
            &raft_toml
        }
    );
    println!("binary: {}", report::describe_binary(&common::node::bin()));
    println!("machine: {}", report::machine());
    let cluster = TestCluster::start_with_raft(3, &raft_toml);
    println!("cluster up; logs in target/test-logs/lease_renewals.unnamed/");

    // 1-based, as the harness counts members.
    let holder = cluster.leader_index();
    let api = cluster.node(holder).api_addr();
    let token = cluster.node(holder).admin_token();
    let mut http = Http::new(&api);
    let (status, body) = http
        .request("POST", "/admin/lease/acquire", Some(&token), None)
        .expect("acquire lease");
    assert_eq!(status, 200, "acquire: {body}");
    println!(
        "lease acquired by {} (the raft leader): {body}",
        cluster.node(holder).name
    );
    let before = sample(&cluster);

    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (next, done, api, token) = (next.clone(), done.clone(), api.clone(), token.clone());
            thread::spawn(move || {
                let mut http = Http::new(&api);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    match http.request("POST", "/admin/lease/renew", Some(&token), None) {
                        Ok((200, _)) => {}
                        Ok((status, body)) => panic!("renewal returned {status}: {body}"),
                        Err(e) => panic!("renewal failed: {e}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Progress and growth every 10% (stderr, so stdout stays the table).
    let mut reported = 0;
    let mut peaks = vec![(0u64, 0u64); cluster.len()];
    while workers.iter().any(|w| !w.is_finished()) {
        thread::sleep(Duration::from_millis(200));
        for (peak, (disk, rss)) in peaks.iter_mut().zip(sample(&cluster)) {
            peak.0 = peak.0.max(disk);
            peak.1 = peak.1.max(rss);
        }
        let d = done.load(Ordering::Relaxed);
        if d >= reported + total / 10 || (d == total && reported < total) {
            reported = d;
            let s = sample(&cluster);
            eprintln!(
                "{d:>7} renewals, {:>6.1} s, disk MB {:?}, RSS MB {:?}",
                started.elapsed().as_secs_f64(),
                s.iter()
                    .map(|x| (mb(x.0) * 10.0).round() / 10.0)
                    .collect::<Vec<_>>(),
                s.iter()
                    .map(|x| (mb(x.1) * 10.0).round() / 10.0)
                    .collect::<Vec<_>>(),
            );
        }
    }
    for w in workers {
        w.join().expect("renewal worker");
    }
    let elapsed = started.elapsed();
    let renewed = done.load(Ordering::Relaxed);
    let after = sample(&cluster);

    let final_lease = cluster.node(holder).cluster_view().expect("cluster view")["lease"].clone();
    println!("final lease: {final_lease}");
    println!();
    println!("renewals  elapsed (s)  renewals/s");
    println!(
        "{renewed:>8}  {:>11.1}  {:>10.0}",
        elapsed.as_secs_f64(),
        renewed as f64 / elapsed.as_secs_f64()
    );
    println!();
    println!(
        "{:<5}  {:>15}  {:>13}  {:>14}  {:>14}  {:>12}  {:>13}",
        "node",
        "raft disk start",
        "raft disk end",
        "raft disk peak",
        "RSS start",
        "RSS end",
        "RSS peak"
    );
    for i in 0..cluster.len() {
        let node = cluster.node(i + 1);
        println!(
            "{:<5}  {:>11.1} MB  {:>9.1} MB  {:>10.1} MB  {:>10.1} MB  {:>8.1} MB  {:>9.1} MB",
            format!("{}{}", node.name, if i + 1 == holder { "*" } else { "" }),
            mb(before[i].0),
            mb(after[i].0),
            mb(peaks[i].0),
            mb(before[i].1),
            mb(after[i].1),
            mb(peaks[i].1),
        );
    }
    println!("(* = lease holder and raft leader)");
    let max_disk = after.iter().map(|s| mb(s.0)).fold(0.0, f64::max);
    let max_rss = after.iter().map(|s| mb(s.1)).fold(0.0, f64::max);
    println!();
    println!(
        "goal disk < {DISK_GOAL_MB} MB: {} (max end {max_disk:.1} MB); goal RSS < {RSS_GOAL_MB} MB: {} (max end {max_rss:.1} MB)",
        if max_disk < DISK_GOAL_MB { "met" } else { "NOT met" },
        if max_rss < RSS_GOAL_MB { "met" } else { "NOT met" },
    );
}
