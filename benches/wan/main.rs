//! What three regions cost (issue 7, acceptance items 3 and 4): the commit latency in quorum
//! mode, the unplanned failover time, and a soak without faults that must see no spurious
//! leadership change, no lease loss and no runaway memory or disk growth.
//!
//! Every measurement gets a cluster of its own, built as the fault campaign builds its
//! three-region runs (`tests/campaign/run.rs`, whose modules this bench includes): three
//! hosts as network namespaces on a bridge (`tests/common/netns.rs`); a userspace relay on
//! every path between two hosts, for the peer (7400), API (8008) and PostgreSQL (5432)
//! ports, adding 50 ms each way (`tests/campaign/regions.rs`; created before the cluster, so
//! every member-to-member connection is delayed); members with `[raft] profile = "wan"`;
//! once formed, `config set synchronous_mode=quorum` with the campaign's WAN timings
//! ([`setup::WAN_TIMINGS`]); formed once the primary names its standbys and every member's view
//! shows them as quorum standbys. The bench itself (pgbench, the
//! clients, the pollers) runs in the root namespace and reaches every host directly: a client
//! next to the member it talks to, so only member-to-member paths cross the WAN.
//!
//! - `latency`: `pgbench -i -s 1`, then `pgbench -c 1 -T 30 -n` (TPC-B-like, one client) on
//!   the primary through its unix socket as `postgres`. The socket rather than TCP as the
//!   password role: the client is next to the primary either way, and the socket needs no
//!   role or password. Then the same on a second cluster whose relays add 0 ms: the
//!   difference is what the WAN costs a commit.
//! - `failover`: `RUNS` times, the primary's host dies: SIGKILL of its postmaster's process
//!   group and of its daemon's. The clock starts at the kill and stops at the first insert
//!   acknowledged by a survivor's PostgreSQL (its unix socket, as `postgres`): one client
//!   task per survivor, each attempt a new connection (connect timeout 1 s) and one insert,
//!   the next attempt 20 ms after the previous one started (or at once if it took longer).
//!   Sequential rather than overlapping as in `vip_failover.rs`: over a unix socket a dead
//!   or restarting server refuses at once, so the only thing that holds an attempt up is a
//!   commit waiting for its quorum standby (or for the lease's commit gate), and that wait
//!   ends with the same event for every attempt waiting: a second attempt would be
//!   acknowledged no earlier, while attempts started every 20 ms would each hold a backend
//!   until then, towards `max_connections`. The acknowledging member's
//!   `synchronous_standby_names` is then read as often until it names a standby again
//!   ("quorum again"): a promoted replica starts without one, so the first commits after a
//!   failover are acknowledged by the new primary alone. Then the killed node is restarted
//!   on its state dir and the run ends when the cluster is healthy again (one writable
//!   primary, both replicas streaming, the primary naming its standbys and every member's
//!   view showing them as quorum standbys, members agreeing on the Raft leader). A run
//!   starts only from a healthy cluster: right after a change of its synchronous rule a
//!   primary keeps the old rule recorded next to the new one for at least loop_wait, and
//!   while the old one is "no synchronous standby" (as right after quorum mode is turned
//!   on) an unplanned failover is blocked by design.
//! - `soak`: `SOAK_MINUTES` (default 30) without faults after a 30 s settle. One client
//!   writes one row every 200 ms through the primary's writer port (the proxy on the
//!   primary's host) as the password role `app`, on one connection. Every second every
//!   member's `GET /cluster` is read: any change of the Raft term or leader, or of the lease
//!   epoch or holder, counts. Each daemon's log is searched for "lease renewal not committed
//!   in time" and for fencing. Each daemon's RSS (`VmRSS`) and its state directory's disk
//!   usage without `pgdata` (the Raft store, `postgresql.log`, keys) are read at the start
//!   and at the end.
//!
//! `cargo bench --bench wan -- soak|failover|latency|all` (default `all`: latency, failover,
//! soak; a phase that fails is reported, the next one still runs, and the exit status is 1);
//! env `RUNS` (default 5), `SOAK_MINUTES` (default 30, fractions allowed). Needs root
//! (network namespaces), `ip` (iproute2), `nft` (nftables) and PostgreSQL server binaries
//! with pgbench in `/usr/lib/postgresql/*/bin`. The daemons' logs are in
//! `target/test-logs/wan.<phase>/`. Processes, namespaces and the bridge are removed at the
//! end, on a panic and on SIGINT/SIGTERM/SIGHUP.

#[path = "../../tests/common/mod.rs"]
mod common;

// The campaign's modules: `regions` (the delaying relays between the hosts) and what it
// names through `super::`: `relay` and `nft`. A bench is built with `cfg(test)` but without
// the test harness, so `relay`'s unit tests are compiled out while their imports stay: hence
// `unused_imports` too.
#[path = "../../tests/campaign/nft.rs"]
mod nft;
#[path = "../../tests/campaign/regions.rs"]
mod regions;
#[path = "../../tests/campaign/relay.rs"]
#[allow(dead_code, unused_imports)]
mod relay;

#[path = "../netns_cleanup/mod.rs"]
mod netns_cleanup;
#[path = "../report/mod.rs"]
mod report;

mod failover;
mod latency;
mod setup;
mod soak;

use std::process::{Command, ExitCode};
use std::thread;
use std::time::Duration;

use common::require_postgres;
use failover::failover;
use latency::{latency, pgbench};
use netns_cleanup::install_signal_cleanup;
use soak::soak;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--")) // `cargo bench` appends `--bench`
        .collect();
    let phases = match Phase::parse(&args) {
        Ok(phases) => phases,
        Err(why) => {
            eprintln!("wan: {why}; usage: cargo bench --bench wan -- [soak|failover|latency|all]");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(why) => {
            eprintln!("wan: {why}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "wan: needs root: the hosts are network namespaces (ip netns add) and the relays \
             between them need nftables rules in each; run `sudo -E cargo bench --bench wan`"
        );
        return ExitCode::FAILURE;
    }
    if !Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("wan: needs the `ip` command (iproute2)");
        return ExitCode::FAILURE;
    }
    if !nft::nft_available() {
        eprintln!("wan: needs the `nft` command: apt-get install nftables");
        return ExitCode::FAILURE;
    }
    if !require_postgres() {
        return ExitCode::FAILURE;
    }
    if phases.contains(&Phase::Latency) && pgbench().is_none() {
        eprintln!("wan: latency needs pgbench in /usr/lib/postgresql/<version>/bin");
        return ExitCode::FAILURE;
    }
    install_signal_cleanup();
    let command = command_line(&args);
    let mut failed = Vec::new();
    for phase in phases {
        let command = command.clone();
        // A named thread: the harness names each test's log dir after the running thread.
        let outcome = thread::Builder::new()
            .name(phase.name().to_string())
            .spawn(move || phase.run(&settings, &command))
            .expect("spawning a phase's thread")
            .join();
        if outcome.is_err() {
            // The panic message and the nodes' log tails are printed already.
            eprintln!("wan: {} failed", phase.name());
            failed.push(phase.name());
        }
        println!();
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("wan: failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// One of the three measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Latency,
    Failover,
    Soak,
}

impl Phase {
    /// The phases the arguments ask for; none or `all`: every one, cheapest first.
    fn parse(args: &[String]) -> Result<Vec<Phase>, String> {
        match args {
            [] => Ok(vec![Phase::Latency, Phase::Failover, Phase::Soak]),
            [one] => match one.as_str() {
                "all" => Ok(vec![Phase::Latency, Phase::Failover, Phase::Soak]),
                "latency" => Ok(vec![Phase::Latency]),
                "failover" => Ok(vec![Phase::Failover]),
                "soak" => Ok(vec![Phase::Soak]),
                other => Err(format!("unknown measurement {other:?}")),
            },
            _ => Err(format!("one measurement at most, got {args:?}")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Latency => "latency",
            Phase::Failover => "failover",
            Phase::Soak => "soak",
        }
    }

    fn run(self, settings: &Settings, command: &str) {
        match self {
            Phase::Latency => latency(command),
            Phase::Failover => failover(settings.runs, command),
            Phase::Soak => soak(settings.soak, command),
        }
    }
}

/// What the environment sets.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// `RUNS`: failovers.
    runs: usize,
    /// `SOAK_MINUTES`: the soak's length after the settle.
    soak: Duration,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let runs = match var("RUNS") {
            None => 5,
            Some(v) => v
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or(format!("RUNS={v}: want a positive integer"))?,
        };
        let minutes = match var("SOAK_MINUTES") {
            None => 30.0,
            Some(v) => v
                .parse()
                .ok()
                .filter(|&m: &f64| m > 0.0 && m.is_finite())
                .ok_or(format!(
                    "SOAK_MINUTES={v}: want a positive number of minutes"
                ))?,
        };
        Ok(Settings {
            runs,
            soak: Duration::from_secs_f64(minutes * 60.0),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting

/// How this bench was invoked, with the environment that changes it.
fn command_line(args: &[String]) -> String {
    let env: Vec<String> = ["SOAK_MINUTES", "RUNS", "PGQUORUM_TEST_PATIENCE"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
        .collect();
    let what = if args.is_empty() {
        "all".to_string()
    } else {
        args.join(" ")
    };
    format!("{}cargo bench --bench wan -- {what}", env.concat())
}
