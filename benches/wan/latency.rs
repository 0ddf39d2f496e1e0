//! `latency`: pgbench on the primary of a cluster whose relays add 50 ms each way, then of
//! one whose relays add 0 ms.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pg::writable;
use crate::common::Node;
use crate::report::{load_average, pg_bin_dir};
use crate::setup::{in_named_thread, print_header, print_table, standby_names, Regional, ONE_WAY};

/// pgbench's run, `-T`.
const PGBENCH_SECONDS: u32 = 30;

/// pgbench on the primary of a cluster with 100 ms round trip, then of one with 0 ms.
pub(crate) fn latency(command: &str) {
    print_header(
        "latency",
        command,
        &format!(
            "pgbench -i -s 1, then pgbench -c 1 -T {PGBENCH_SECONDS} -n (TPC-B-like, one \
             client, one connection) on the primary's unix socket as postgres: the client is \
             next to the primary, only its commits' quorum acknowledgements cross the WAN; \
             then the same on a new cluster whose relays add 0 ms"
        ),
    );
    let rows: Vec<Pgbench> = [ONE_WAY, Duration::ZERO]
        .into_iter()
        .map(|one_way| {
            let name = format!("latency-{}ms", (2 * one_way).as_millis());
            in_named_thread(&name, move || pgbench_on(one_way))
        })
        .collect();
    print_table(
        &[
            "round trip added",
            "formed (s)",
            "pgbench -i -s 1 (s)",
            "transactions",
            "failed",
            "latency average (ms)",
            "tps",
            "synchronous_standby_names",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    format!("{} ms", r.round_trip.as_millis()),
                    format!("{:.1}", r.formed_in.as_secs_f64()),
                    format!("{:.1}", r.init.as_secs_f64()),
                    r.transactions.clone(),
                    r.failed.clone(),
                    r.latency_ms.clone(),
                    r.tps.clone(),
                    format!("`{}`", r.standby_names),
                ]
            })
            .collect(),
    );
    println!();
    println!(
        "(latency average and tps as pgbench prints them; tps without the initial connection \
         time)"
    );
    println!();
    println!("- load: {} (at end)", load_average());
}

/// One pgbench measurement.
struct Pgbench {
    round_trip: Duration,
    formed_in: Duration,
    init: Duration,
    transactions: String,
    failed: String,
    latency_ms: String,
    tps: String,
    standby_names: String,
}

/// Forms a cluster with `one_way` between hosts and runs pgbench on its primary.
fn pgbench_on(one_way: Duration) -> Pgbench {
    let regional = Regional::form(one_way);
    let primary = regional.primary;
    let node = regional.cluster.node(primary);
    let standby_names =
        standby_names(&regional.cluster, primary).expect("the primary names its standbys");
    let started = Instant::now();
    run_pgbench(node, &["-i", "-s", "1"]);
    let init = started.elapsed();
    eprintln!(
        "wan: pgbench -i -s 1 took {:.1} s; running pgbench for {PGBENCH_SECONDS} s",
        init.as_secs_f64()
    );
    let seconds = PGBENCH_SECONDS.to_string();
    let out = run_pgbench(node, &["-c", "1", "-T", &seconds, "-n"]);
    assert_eq!(
        writable(&regional.cluster),
        Ok(primary),
        "the primary changed during pgbench"
    );
    assert!(
        regional.regions.relayed_connections() > 0,
        "no connection went through the relays: the regions' NAT rules do not apply"
    );
    let field = |prefix: &str, end: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.split(end).next().unwrap_or(rest).trim().to_string())
            .unwrap_or_else(|| panic!("pgbench printed no {prefix:?}:\n{out}"))
    };
    Pgbench {
        round_trip: 2 * one_way,
        formed_in: regional.formed_in,
        init,
        transactions: field("number of transactions actually processed:", "/"),
        failed: out
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions:"))
            .map_or_else(|| "-".to_string(), |rest| rest.trim().to_string()),
        latency_ms: field("latency average =", "ms"),
        tps: field("tps =", "("),
        standby_names,
    }
}

/// `<pg bin dir>/pgbench`, if there is one.
pub(crate) fn pgbench() -> Option<PathBuf> {
    pg_bin_dir()
        .map(|bin| bin.join("pgbench"))
        .filter(|p| p.exists())
}

/// Runs pgbench with `args` against `node`'s unix socket as `postgres`; its stdout. Panics
/// with its output if it fails.
fn run_pgbench(node: &Node, args: &[&str]) -> String {
    let program = pgbench().expect("checked in main");
    let out = Command::new(&program)
        .args(args)
        .arg("-h")
        .arg(node.state_dir.join("run"))
        .args([
            "-p",
            &node.pg_port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench {} on {} exited with {}:\n{stdout}\n{}",
        args.join(" "),
        node.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
