//! One campaign from start to verdict: hosts, cluster, observers, nemesis, heal, final read,
//! checker. [`Settings`] says how big and in which mode; [`run`] returns the report and
//! leaves the history and the report as files under `target/campaign/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checker::{self, Report};
use super::clients::{Observers, Recorder, SamplePoint, WritePath, ROLE, SAMPLE_EVERY, TABLE};
use super::common::netns::Hosts;
use super::common::pg::{replicas_streaming, writable};
use super::common::{eventually, require_postgres, TestCluster, FORMATION};
use super::history::{Clock, FaultKind, FinalRead, Meta, Outcome, Record};
use super::nemesis::{Nemesis, Schedule, Timing};
use super::nft::nft_available;
use super::regions::Regions;

/// How a campaign is run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub faults: usize,
    /// `quorum` (every commit confirmed by a standby) or `off` (asynchronous replication).
    pub synchronous_mode: String,
    pub kinds: Vec<FaultKind>,
    /// A name for the files, e.g. `short`.
    pub name: String,
    /// Delay added to each direction of every path between hosts (zero: no relays).
    pub one_way: Duration,
    /// The cluster's dynamic timings, as `config set` arguments (`ttl=2s`, ...): the LAN
    /// defaults, or the WAN profile's for a delayed campaign.
    pub timings: Vec<String>,
    /// The lease ttl those timings set.
    pub ttl: Duration,
}

/// The dynamic timings a three-region cluster (100 ms round trip) runs with; the `[raft]`
/// side is `profile = "wan"`. See the README's "Three regions".
pub const WAN_TIMINGS: [&str; 4] = [
    "ttl=4s",
    "loop_wait=1s",
    "retry_timeout=2s",
    "member_timeout=3s",
];
/// The ttl of [`WAN_TIMINGS`].
pub const WAN_TTL: Duration = Duration::from_secs(4);

impl Settings {
    /// The CI campaign: every kind once and a few more, quorum mode, seed 1.
    pub fn short() -> Settings {
        Settings {
            seed: 1,
            faults: FaultKind::ALL.len() + 2,
            synchronous_mode: "quorum".to_string(),
            kinds: FaultKind::ALL.to_vec(),
            name: "short".to_string(),
            one_way: Duration::ZERO,
            timings: Vec::new(),
            ttl: TTL,
        }
    }

    /// A campaign from the environment (the documented long runs):
    /// `PGQ_CAMPAIGN_SEED` (default 1), `PGQ_CAMPAIGN_FAULTS` (200), `PGQ_CAMPAIGN_MODE`
    /// (`quorum` or `async`, default quorum), `PGQ_CAMPAIGN_DELAY_MS` (one-way delay between
    /// hosts, default 0; above 0 the cluster runs the WAN profile and [`WAN_TIMINGS`]),
    /// `PGQ_CAMPAIGN_KINDS` (comma-separated fault kinds as the history names them, e.g.
    /// `partition,kill_both`; default all).
    pub fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let seed = var("PGQ_CAMPAIGN_SEED").map_or(1, |v| {
            v.parse()
                .expect("PGQ_CAMPAIGN_SEED must be a non-negative integer")
        });
        let faults = var("PGQ_CAMPAIGN_FAULTS").map_or(200, |v| {
            v.parse()
                .expect("PGQ_CAMPAIGN_FAULTS must be a positive integer")
        });
        let mode = var("PGQ_CAMPAIGN_MODE").unwrap_or_else(|| "quorum".to_string());
        let synchronous_mode = match mode.as_str() {
            "quorum" => "quorum",
            "async" => "off",
            other => panic!("PGQ_CAMPAIGN_MODE is {other:?}: use quorum or async"),
        };
        let delay_ms: u64 = var("PGQ_CAMPAIGN_DELAY_MS").map_or(0, |v| {
            v.parse()
                .expect("PGQ_CAMPAIGN_DELAY_MS must be a non-negative integer")
        });
        let wan = delay_ms > 0;
        let kinds = match var("PGQ_CAMPAIGN_KINDS") {
            None => FaultKind::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .map(|name| {
                    let quoted = format!("\"{}\"", name.trim());
                    serde_json::from_str(&quoted).unwrap_or_else(|_| {
                        panic!(
                            "PGQ_CAMPAIGN_KINDS: unknown fault kind {name:?}; the kinds are \
                             kill_daemon, kill_postgres, kill_both, pause_daemon_short, \
                             pause_daemon_long, pause_postgres_short, pause_postgres_long, \
                             partition, partition_inbound, partition_outbound, restart_host, \
                             rolling_restart, switchover"
                        )
                    })
                })
                .collect(),
        };
        Settings {
            seed,
            faults,
            synchronous_mode: synchronous_mode.to_string(),
            kinds,
            name: format!("{mode}-{delay_ms}ms-seed{seed}-{faults}"),
            one_way: Duration::from_millis(delay_ms),
            timings: if wan {
                WAN_TIMINGS.iter().map(|t| t.to_string()).collect()
            } else {
                Vec::new()
            },
            ttl: if wan { WAN_TTL } else { TTL },
        }
    }

    fn wan(&self) -> bool {
        !self.one_way.is_zero()
    }

    fn description(&self) -> String {
        let timings = if self.wan() {
            format!("WAN profile, {}", self.timings.join(" "))
        } else {
            "LAN profile, ttl=2s loop_wait=500ms (defaults)".to_string()
        };
        format!(
            "{} faults, synchronous_mode={}, remove_data_directory_on_rewind_failure=true, \
             {timings}, {} ms added one way between hosts, samples every {} ms",
            self.faults,
            self.synchronous_mode,
            self.one_way.as_millis(),
            SAMPLE_EVERY.as_millis()
        )
    }
}

/// The lease ttl the cluster runs with (the default).
const TTL: Duration = Duration::from_secs(2);
/// The ports members reach each other on (peer gRPC, REST API, PostgreSQL): every one is
/// relayed between regions.
const PEER_PORTS: [u16; 3] = [7400, 8008, 5432];
/// From a heal to a healthy cluster, at most, before a fault counts as not recovered.
const RECOVERY: Duration = Duration::from_secs(60);

/// What [`run`] leaves behind.
pub struct Finished {
    pub report: Report,
    pub history_path: PathBuf,
    pub report_path: PathBuf,
}

/// Runs the campaign; `None` if this machine cannot (no PostgreSQL or no root, outside CI).
pub fn run(settings: &Settings) -> Option<Finished> {
    if !require_postgres() {
        return None;
    }
    let hosts = Hosts::create(3)?;
    assert!(
        nft_available(),
        "the campaign's partitions need nftables: apt-get install nftables"
    );
    // Before the cluster forms, so that every connection between members is relayed.
    let regions = settings
        .wan()
        .then(|| Regions::create(&hosts, settings.one_way, &PEER_PORTS));
    let vip = format!("[vip]\naddress = \"{}/24\"\n", hosts.vip());
    let profile = if settings.wan() { "wan" } else { "lan" };
    let mut cluster = TestCluster::start_on_hosts_with_profile(&hosts, &vip, profile);
    let primary = eventually(FORMATION, "one writable primary", || writable(&cluster));
    eventually(FORMATION, "two replicas stream", || {
        replicas_streaming(&cluster, primary)
    });
    // Unattended, as an operator who runs no one at night sets it: a former primary whose
    // pg_rewind failed part-way (its source restarted under it) is cloned afresh, its old
    // data directory moved aside, instead of staying out until someone runs `reinit`.
    let mut set_args = vec![
        "config".to_string(),
        "set".to_string(),
        format!("synchronous_mode={}", settings.synchronous_mode),
        "remove_data_directory_on_rewind_failure=true".to_string(),
    ];
    set_args.extend(settings.timings.iter().cloned());
    let set_args: Vec<&str> = set_args.iter().map(String::as_str).collect();
    let set = cluster.node(primary).cli(&set_args);
    super::common::assert_success(&set, "config set");
    if settings.synchronous_mode != "off" {
        eventually(FORMATION, "the primary names its standbys", || {
            let names = cluster
                .node(primary)
                .sql("show synchronous_standby_names")?;
            if names.is_empty() {
                Err(format!("synchronous_standby_names is empty on n{primary}"))
            } else {
                Ok(())
            }
        });
    }
    cluster
        .node(primary)
        .sql(&format!(
            "create role {ROLE} login password '{ROLE}'; \
             create table {TABLE} (v bigint primary key); grant all on {TABLE} to {ROLE}"
        ))
        .expect("creating the campaign's table");

    let dir = campaign_dir();
    std::fs::create_dir_all(&dir).expect("creating target/campaign");
    let history_path = dir.join(format!("{}.jsonl", settings.name));
    let report_path = dir.join(format!("{}.report.txt", settings.name));
    let clock = Clock::start();
    let recorder = Recorder::create(&history_path, clock).expect("creating the history file");
    recorder.record(Record::Campaign(Meta {
        seed: settings.seed,
        description: settings.description(),
    }));
    let mut paths = Vec::new();
    for i in 1..=cluster.len() {
        let node = cluster.node(i);
        paths.push(WritePath {
            name: format!("writer port of {}", node.name),
            host: node.host_ip.clone(),
            port: node.writer_port,
        });
    }
    paths.push(WritePath {
        name: "VIP".to_string(),
        host: hosts.vip(),
        port: 5432,
    });
    for i in 1..=cluster.len() {
        let node = cluster.node(i);
        paths.push(WritePath {
            name: format!("direct {}", node.name),
            host: node.host_ip.clone(),
            port: node.pg_port,
        });
    }
    let points: Vec<SamplePoint> = (1..=cluster.len())
        .map(|i| {
            let node = cluster.node(i);
            SamplePoint {
                member: node.name.clone(),
                socket_dir: node.state_dir.join("run"),
                port: node.pg_port,
            }
        })
        .collect();
    let mut observers = Observers::start(&paths, &points, &recorder);
    wait_for_acknowledged_write(&recorder, 0, "the first write is acknowledged");

    let timing = Timing {
        ttl: settings.ttl,
        recovery_deadline: RECOVERY,
    };
    let mut schedule = Schedule::new(settings.seed, &settings.kinds);
    let started = Instant::now();
    {
        let mut nemesis = Nemesis {
            cluster: &mut cluster,
            hosts: &hosts,
            recorder: &recorder,
            timing,
            synchronous: settings.synchronous_mode != "off",
        };
        for k in 0..settings.faults {
            let planned = schedule.next(k, timing);
            let done = nemesis.run(planned);
            let health = match &done.healthy_after {
                Ok(after) => format!("healthy {:.1} s after the undo", after.as_secs_f64()),
                Err(why) => format!("NOT healthy after {RECOVERY:?}: {why}"),
            };
            let midway = if planned.switchover_midway {
                ", a switchover midway"
            } else {
                ""
            };
            eprintln!(
                "campaign {}: fault {}/{} at {:.0} s: {} (held {:.1} s{midway}); {health}",
                settings.name,
                k + 1,
                settings.faults,
                started.elapsed().as_secs_f64(),
                done.fault,
                planned.hold.as_secs_f64(),
            );
        }
        if let Err(why) = nemesis.wait_healthy() {
            eprintln!("campaign {}: not healthy at the end: {why}", settings.name);
        }
    }
    // Every fault needs a durable write after it to count as recovered: keep writing until one
    // is acknowledged after the last fault's injection, then stop the clients.
    let last_fault_ms = recorder.snapshot().faults.last().map_or(0, |f| f.start_ms);
    wait_for_acknowledged_write(&recorder, last_fault_ms, "a write after the last fault");
    observers.stop_clients();

    let primary = eventually(FORMATION, "one writable primary for the final read", || {
        writable(&cluster)
    });
    let text = cluster
        .node(primary)
        .sql(&format!("select v from {TABLE} order by v"))
        .expect("the final read");
    let values: Vec<i64> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().expect("the table holds bigints"))
        .collect();
    recorder.record(Record::FinalRead(FinalRead {
        ms: clock.now_ms(),
        member: cluster.node(primary).name.clone(),
        values,
    }));
    // A last round of samples after the read, so the samples cover it.
    let read_ms = clock.now_ms();
    eventually(
        Duration::from_secs(5),
        "samples after the final read",
        || {
            let history = recorder.snapshot();
            let members: std::collections::BTreeSet<&str> = history
                .samples
                .iter()
                .filter(|s| s.ms > read_ms)
                .map(|s| s.member.as_str())
                .collect();
            (members.len() == points.len()).then_some(())
        },
    );
    observers.stop();
    if let Some(regions) = &regions {
        assert!(
            regions.relayed_connections() > 0,
            "no connection went through the relays: the regions' NAT rules do not apply"
        );
    }

    let history = recorder.snapshot();
    history
        .save(&history_path)
        .expect("saving the campaign's history");
    let final_read = history.final_read.clone().expect("recorded above");
    let report = checker::check(&history, &final_read).unwrap_or_else(|e| {
        panic!(
            "the history in {} is inconsistent: {e}",
            history_path.display()
        )
    });
    let rendered = format!(
        "campaign {} (seed {}): {}\n\n{}",
        settings.name,
        settings.seed,
        settings.description(),
        report.render()
    );
    std::fs::write(&report_path, &rendered).expect("writing the report");
    eprintln!("{rendered}\nhistory: {}", history_path.display());
    Some(Finished {
        report,
        history_path,
        report_path,
    })
}

/// Waits until a write invoked at or after `after_ms` is acknowledged.
fn wait_for_acknowledged_write(recorder: &Recorder, after_ms: u64, what: &str) {
    eventually(RECOVERY, what, || {
        let history = recorder.snapshot();
        history
            .writes
            .iter()
            .any(|w| w.outcome == Outcome::Acknowledged && w.invoked_ms >= after_ms)
            .then_some(())
    });
}

/// `target/campaign`, found from `CARGO_TARGET_TMPDIR` (`target/tmp`).
fn campaign_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("campaign")
}
