//! What the three measurements share: the three-region cluster and its health checks, the
//! PostgreSQL client's errors, named threads and the printed tables.

use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::netns::Hosts;
use crate::common::pg::{replicas_streaming, writable, FORMATION};
use crate::common::{assert_success, eventually, TestCluster};
use crate::netns_cleanup::{register_dirs, register_hosts, Reaper};
use crate::regions::Regions;
use crate::report::{command_output, describe_binary, load_average, machine, pg_bin_dir};

/// 50 ms each way: 100 ms round trip between every two hosts.
pub(crate) const ONE_WAY: Duration = Duration::from_millis(50);
/// The ports members reach each other on (peer gRPC, REST API, PostgreSQL): all relayed, as
/// in the campaign (`PEER_PORTS` in tests/campaign/run.rs).
const PEER_PORTS: [u16; 3] = [7400, 8008, 5432];
/// The dynamic timings of a three-region cluster, applied with `config set` after
/// formation. A copy: `WAN_TIMINGS` in tests/campaign/run.rs is the source of truth, keep
/// them equal.
const WAN_TIMINGS: [&str; 4] = [
    "ttl=4s",
    "loop_wait=1s",
    "retry_timeout=2s",
    "member_timeout=3s",
];
/// The PostgreSQL port on every host (the harness's standard port in a namespace).
const PG_PORT: u16 = 5432;

// ---------------------------------------------------------------------------------------------
// The three regions

/// A formed three-region cluster: its hosts, relays and members. The fields drop in order:
/// the daemons first (SIGKILL), then the relays, whatever still runs in the namespaces, and
/// the namespaces last.
pub(crate) struct Regional {
    pub(crate) cluster: TestCluster,
    pub(crate) regions: Regions,
    _reaper: Reaper,
    _hosts: Hosts,
    /// The primary right after formation.
    pub(crate) primary: usize,
    /// From the first host to the primary naming its standbys.
    pub(crate) formed_in: Duration,
}

impl Regional {
    /// Hosts, relays adding `one_way` to each direction of every path between two hosts
    /// (before the cluster, so every connection between members is relayed), the members
    /// with the WAN profile, then quorum mode and the WAN timings. Returns once the primary
    /// names its standbys; panics if that takes longer than the harness's deadlines.
    pub(crate) fn form(one_way: Duration) -> Regional {
        let started = Instant::now();
        let hosts = Hosts::create(3).expect("creating the network namespace hosts");
        register_hosts(&hosts);
        let reaper = Reaper::new(&hosts);
        let regions = Regions::create(&hosts, one_way, &PEER_PORTS);
        eprintln!(
            "wan: forming a cluster on {} with {} ms added each way between hosts",
            (1..=3)
                .map(|i| format!("{} ({})", hosts.netns(i), hosts.ip(i)))
                .collect::<Vec<_>>()
                .join(", "),
            one_way.as_millis()
        );
        let cluster = TestCluster::start_on_hosts_with_profile(&hosts, "", "wan");
        register_dirs(&cluster);
        let primary = eventually(FORMATION, "one writable primary", || writable(&cluster));
        eventually(FORMATION, "two replicas stream", || {
            replicas_streaming(&cluster, primary)
        });
        let mut set = vec!["config", "set", "synchronous_mode=quorum"];
        set.extend(WAN_TIMINGS);
        assert_success(&cluster.node(primary).cli(&set), "config set");
        eventually(FORMATION, "the primary names its standbys", || {
            standby_names(&cluster, primary)
        });
        eventually(
            FORMATION,
            "every member sees both replicas as quorum standbys",
            || failover_ready(&cluster, primary),
        );
        assert_eq!(
            writable(&cluster),
            Ok(primary),
            "the primary changed while the WAN timings were applied"
        );
        let formed_in = started.elapsed();
        eprintln!(
            "wan: formed in {:.1} s: n{primary} is the primary",
            formed_in.as_secs_f64()
        );
        Regional {
            cluster,
            regions,
            _reaper: reaper,
            _hosts: hosts,
            primary,
            formed_in,
        }
    }
}

/// `synchronous_standby_names` on `primary`, if it names any.
pub(crate) fn standby_names(cluster: &TestCluster, primary: usize) -> Result<String, String> {
    let names = cluster
        .node(primary)
        .sql("show synchronous_standby_names")?;
    if names.is_empty() {
        Err(format!("synchronous_standby_names is empty on n{primary}"))
    } else {
        Ok(names)
    }
}

/// Whether every running member's view has `primary` as the lease holder and every other
/// member as a quorum standby: the synchronous rules the primary recorded in Raft are then
/// all satisfiable by a failover. Not yet while the primary still records the rule it had
/// before next to its new one (for at least loop_wait after it switched PostgreSQL to the
/// new one): if the old one is "no synchronous standby" (as right after quorum mode is
/// turned on), an unplanned failover is blocked by design until then, and a kill in that
/// window would measure that instead.
fn failover_ready(cluster: &TestCluster, primary: usize) -> Result<(), String> {
    let primary_name = cluster.node(primary).name.as_str();
    for i in cluster.running() {
        let view = cluster.node(i).cluster_view()?;
        let members = view["members"]
            .as_array()
            .ok_or(format!("n{i}: no members"))?;
        for member in members {
            let name = member["name"].as_str().unwrap_or("?");
            let role = member["role"].as_str().unwrap_or("?");
            let want = if name == primary_name {
                "Leader"
            } else {
                "Quorum Standby"
            };
            if role != want {
                return Err(format!("n{i} sees {name} as {role:?}, not {want:?}"));
            }
        }
    }
    Ok(())
}

/// The primary if the cluster is healthy: every member runs, exactly one PostgreSQL is
/// writable, the others stream from it, it names its standbys, every member sees them as
/// quorum standbys ([`failover_ready`]), and the members agree on the Raft leader and term.
pub(crate) fn healthy(cluster: &TestCluster) -> Result<usize, String> {
    if cluster.running().len() != cluster.len() {
        return Err(format!("running: {:?}", cluster.running()));
    }
    let primary = writable(cluster)?;
    replicas_streaming(cluster, primary)?;
    standby_names(cluster, primary)?;
    failover_ready(cluster, primary)?;
    cluster.converged()?;
    Ok(primary)
}

/// The server's message if it sent one, else the client's error.
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and cleanup (as in vip_failover.rs)

/// Runs `f` in a thread named `name` (the harness names the nodes' log dir after it) and
/// returns its value; a panic in it goes on in the caller.
pub(crate) fn in_named_thread<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(scope, f)
            .expect("spawning a named thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

// ---------------------------------------------------------------------------------------------
// Reporting

/// The settings every phase prints.
pub(crate) fn print_header(phase: &str, command: &str, method: &str) {
    let pg_version = pg_bin_dir()
        .map(|bin| command_output(&bin.join("postgres"), &["--version"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("## wan {phase}");
    println!();
    println!("- command: `{command}`");
    println!("- binary: {}", describe_binary(&common::node::bin()));
    println!("- postgres: {pg_version} (0.0.0.0:{PG_PORT} on each host)");
    println!("- machine: {}", machine());
    println!("- load: {} (at start)", load_average());
    println!(
        "- settings: 3 members, one per network namespace host; a relay on every path \
         between two hosts (ports {}) adding {} ms each way ({} ms round trip); [raft] \
         profile = \"wan\" (heartbeat 500 ms, elections after 1.5-3 s); config set \
         synchronous_mode=quorum {} (WAN_TIMINGS of tests/campaign/run.rs)",
        PEER_PORTS.map(|p| p.to_string()).join(", "),
        ONE_WAY.as_millis(),
        2 * ONE_WAY.as_millis(),
        WAN_TIMINGS.join(" ")
    );
    println!("- method: {method}");
    println!();
}

/// A Markdown table, columns padded so it also reads as plain text.
pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    print_line(&widths, header);
    print_separator(&widths);
    for row in &rows {
        print_line(&widths, row);
    }
}

/// A Markdown table's head, for rows printed as they come: the columns are as wide as their
/// headers (at least 8).
pub(crate) fn print_table_head(header: &[&str]) -> Vec<usize> {
    let widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(8)).collect();
    print_line(&widths, header);
    print_separator(&widths);
    widths
}

pub(crate) fn print_line<S: AsRef<str>>(widths: &[usize], cells: &[S]) {
    let cells: Vec<String> = widths
        .iter()
        .zip(cells)
        .map(|(w, c)| format!("{:<w$}", c.as_ref(), w = *w))
        .collect();
    println!("| {} |", cells.join(" | "));
}

fn print_separator(widths: &[usize]) {
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", dashes.join("-|-"));
}
