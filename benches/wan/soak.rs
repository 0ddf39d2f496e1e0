//! `soak`: `SOAK_MINUTES` of light writes without faults after a settle, and what they
//! showed (the leadership views, the logs, memory and disk are watched in `watch`).

mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::common::pg::writable;
use crate::common::{Node, TestCluster};
use crate::report::{load_average, ms, stats, verdict};
use crate::setup::{pg_error, print_header, print_table, Regional, ONE_WAY};
use watch::{lock, Footprint, LogCounts, Watch};

/// Formation to the soak's first measurement: the clones' catch-up, the switch to quorum
/// mode and the first lease renewals under the WAN timings happen before the baseline, not
/// in it. A fixed wait on purpose: the soak measures steady state, and this is its
/// definition.
const SETTLE: Duration = Duration::from_secs(30);
/// The soak client's pace: one write started every 200 ms (later if one takes longer).
const WRITE_EVERY: Duration = Duration::from_millis(200);
/// A soak write without an answer by then counts as unknown and its connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every member's `/cluster` is read during the soak.
const VIEW_EVERY: Duration = Duration::from_secs(1);
/// How often the soak prints a progress line (stderr).
const PROGRESS_EVERY: Duration = Duration::from_secs(60);
/// A daemon log line with this in it: a lease renewal that missed its deadline.
const LATE_RENEWAL: &str = "lease renewal not committed in time";
/// Daemon log lines with any of these in them: a primary fenced (demoted by its daemon, or
/// its postmaster killed by the fence process).
const FENCING: [&str; 2] = ["fencing", "pgquorum fence:"];

/// `length` of light writes without faults after the settle, watching leadership, the logs,
/// memory and disk.
pub(crate) fn soak(length: Duration, command: &str) {
    print_header(
        "soak",
        command,
        &format!(
            "{:.1} min without faults after a {} s settle; one client writes a row every {} \
             ms through the primary's writer port as app, on one connection (write timeout \
             {} s); every {} s each member's GET /cluster: a change of Raft term or leader, \
             or of lease epoch or holder, counts; daemon logs searched for {LATE_RENEWAL:?} \
             and fencing ({}); RSS = VmRSS of each daemon; disk = allocated blocks of \
             <state_dir> without <state_dir>/pgdata",
            length.as_secs_f64() / 60.0,
            SETTLE.as_secs(),
            WRITE_EVERY.as_millis(),
            WRITE_TIMEOUT.as_secs(),
            VIEW_EVERY.as_secs(),
            FENCING.map(|f| format!("{f:?}")).join(", ")
        ),
    );
    let regional = Regional::form(ONE_WAY);
    let cluster = &regional.cluster;
    cluster
        .node(regional.primary)
        .sql(
            "create role app login password 'app'; \
             create table wan_soak (id bigserial primary key, at timestamptz not null default \
             now()); grant insert on wan_soak to app; grant usage on sequence wan_soak_id_seq \
             to app",
        )
        .expect("creating the table and the role app");
    eprintln!("wan: settling for {} s", SETTLE.as_secs());
    thread::sleep(SETTLE);
    let soaked = Soaked::measure(cluster, regional.primary, length);
    println!(
        "soak: {:.1} min measured (after formation in {:.1} s and a {} s settle); primary n{} \
         at the start, {} at the end",
        soaked.elapsed.as_secs_f64() / 60.0,
        regional.formed_in.as_secs_f64(),
        SETTLE.as_secs(),
        regional.primary,
        soaked
            .end_primary
            .as_ref()
            .map_or_else(|e| format!("none ({e})"), |p| format!("n{p}"))
    );
    println!();
    soaked.print_footprints();
    println!();
    soaked.print_leadership();
    println!();
    soaked.print_writes();
    println!();
    soaked.print_checks();
    println!();
    println!(
        "- logs: target/test-logs/wan.soak/; load: {} (at end)",
        load_average()
    );
}

/// What a soak saw, member `i` at index `i - 1`.
struct Soaked {
    elapsed: Duration,
    before: Vec<Footprint>,
    after: Vec<Footprint>,
    logs: Vec<LogCounts>,
    watch: Watch,
    writes: Writes,
    end_primary: Result<usize, String>,
}

impl Soaked {
    /// Writes to `primary` and watches every member for `length`, printing progress (stderr)
    /// every [`PROGRESS_EVERY`]; the footprints are taken before and after.
    fn measure(cluster: &TestCluster, primary: usize, length: Duration) -> Soaked {
        let members: Vec<usize> = (1..=cluster.len()).collect();
        let footprints = || -> Vec<Footprint> {
            members
                .iter()
                .map(|&i| Footprint::of(cluster.node(i)))
                .collect()
        };
        let before = footprints();
        let log_offsets: Vec<usize> = members
            .iter()
            .map(|&i| cluster.node(i).log().len())
            .collect();
        let watch = Mutex::new(Watch::start(cluster));
        for &i in &members {
            cluster.node(i).note("=== bench: soak starts ===");
        }
        let stop = CancellationToken::new();
        let acknowledged = AtomicU64::new(0);
        let started = Instant::now();
        let writes = thread::scope(|scope| {
            let config = writer_config(cluster.node(primary));
            let writer = thread::Builder::new()
                .name("soak-writer".to_string())
                .spawn_scoped(scope, || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("building a tokio runtime")
                        .block_on(write_every(config, stop.clone(), &acknowledged))
                })
                .expect("spawning the soak writer");
            let poller = thread::Builder::new()
                .name("soak-views".to_string())
                .spawn_scoped(scope, || {
                    let mut next = Instant::now();
                    while !stop.is_cancelled() {
                        lock(&watch).poll(cluster, started);
                        next += VIEW_EVERY;
                        match next.checked_duration_since(Instant::now()) {
                            Some(wait) => thread::sleep(wait),
                            None => next = Instant::now(), // behind: no burst of polls
                        }
                    }
                })
                .expect("spawning the soak's view poller");
            let end = started + length;
            let mut next_progress = started + PROGRESS_EVERY;
            while Instant::now() < end {
                thread::sleep((end - Instant::now()).min(Duration::from_secs(1)));
                if Instant::now() >= next_progress {
                    next_progress += PROGRESS_EVERY;
                    let (raft, lease) = lock(&watch).totals();
                    let now: Vec<String> = footprints()
                        .iter()
                        .zip(&members)
                        .map(|(f, i)| {
                            format!(
                                "n{i} {} MiB, {} KiB",
                                opt_mib(f.rss_kib),
                                kib(f.state_bytes)
                            )
                        })
                        .collect();
                    eprintln!(
                        "wan: soak {:.0}/{:.0} s: {} writes acknowledged, {raft} Raft \
                         leadership and {lease} lease changes; RSS, state dir: {}",
                        started.elapsed().as_secs_f64(),
                        length.as_secs_f64(),
                        acknowledged.load(Ordering::Relaxed),
                        now.join("; ")
                    );
                }
            }
            stop.cancel();
            poller.join().expect("the view poller");
            writer.join().expect("the soak writer")
        });
        let elapsed = started.elapsed();
        for &i in &members {
            cluster.node(i).note("=== bench: soak ends ===");
        }
        Soaked {
            elapsed,
            before,
            after: footprints(),
            logs: members
                .iter()
                .zip(&log_offsets)
                .map(|(&i, &offset)| LogCounts::of(&cluster.node(i).log(), offset))
                .collect(),
            watch: watch.into_inner().unwrap_or_else(|e| e.into_inner()),
            writes,
            end_primary: writable(cluster),
        }
    }

    fn print_footprints(&self) {
        print_table(
            &[
                "member",
                "RSS start (MiB)",
                "RSS end (MiB)",
                "RSS growth (MiB)",
                "state dir w/o pgdata start (KiB)",
                "end (KiB)",
                "growth (KiB)",
                "raft/ start -> end (KiB)",
                "postgresql.log start -> end (KiB)",
            ],
            self.before
                .iter()
                .zip(&self.after)
                .enumerate()
                .map(|(k, (b, a))| {
                    vec![
                        format!(
                            "n{} (pid {})",
                            k + 1,
                            b.pid.map_or("-".to_string(), |p| p.to_string())
                        ),
                        opt_mib(b.rss_kib),
                        opt_mib(a.rss_kib),
                        match (b.rss_kib, a.rss_kib) {
                            (Some(b), Some(a)) => {
                                format!("{:+.1}", (a as f64 - b as f64) / 1024.0)
                            }
                            _ => "-".to_string(),
                        },
                        kib(b.state_bytes),
                        kib(a.state_bytes),
                        format!("{:+}", (a.state_bytes as i64 - b.state_bytes as i64) / 1024),
                        format!("{} -> {}", kib(b.raft_bytes), kib(a.raft_bytes)),
                        format!("{} -> {}", kib(b.pg_log_bytes), kib(a.pg_log_bytes)),
                    ]
                })
                .collect(),
        );
    }

    fn print_leadership(&self) {
        print_table(
            &[
                "member",
                "views read (failed)",
                "term changes",
                "Raft leader changes",
                "lease epoch changes",
                "lease holder changes",
                "log: renewal not committed in time",
                "log: fencing",
            ],
            self.watch
                .members
                .iter()
                .zip(&self.logs)
                .enumerate()
                .map(|(k, (seen, log))| {
                    vec![
                        format!("n{}", k + 1),
                        format!("{} ({})", seen.polls, seen.failed_polls),
                        seen.changes.term.to_string(),
                        seen.changes.leader.to_string(),
                        seen.changes.epoch.to_string(),
                        seen.changes.holder.to_string(),
                        log.late_renewals.to_string(),
                        log.fencing.to_string(),
                    ]
                })
                .collect(),
        );
        let events = &self.watch.events;
        if !events.is_empty() {
            println!();
            println!("changes seen ({} in all, at most 20 shown):", events.len());
            for event in events.iter().take(20) {
                println!("- {event}");
            }
        }
    }

    fn print_writes(&self) {
        let writes = &self.writes;
        let latencies: Vec<f64> = writes.acknowledged.iter().map(|d| ms(*d)).collect();
        let (median, _, max) = stats(&latencies);
        print_table(
            &[
                "writes",
                "acknowledged",
                "failed",
                "unknown (timeout)",
                "connect failures",
                "latency median (ms)",
                "p99 (ms)",
                "max (ms)",
            ],
            vec![vec![
                (writes.acknowledged.len() as u64 + writes.failed + writes.unknown).to_string(),
                writes.acknowledged.len().to_string(),
                writes.failed.to_string(),
                writes.unknown.to_string(),
                writes.connect_failures.to_string(),
                format!("{median:.1}"),
                format!("{:.1}", percentile(&latencies, 0.99)),
                format!("{max:.1}"),
            ]],
        );
        if let Some(error) = &writes.first_error {
            println!();
            println!("first write error: {error}");
        }
    }

    fn print_checks(&self) {
        let (raft, lease) = self.watch.totals();
        let late: u32 = self.logs.iter().map(|l| l.late_renewals).sum();
        let fencing: u32 = self.logs.iter().map(|l| l.fencing).sum();
        print_table(
            &["check", "count", "goal"],
            vec![
                vec![
                    "spurious Raft leadership changes (term or leader, most seen by one member)"
                        .to_string(),
                    raft.to_string(),
                    format!("0: {}", verdict(raft == 0)),
                ],
                vec![
                    "lease losses (epoch or holder changes, most seen by one member)".to_string(),
                    lease.to_string(),
                    format!("0: {}", verdict(lease == 0)),
                ],
                vec![
                    "log lines: renewal not committed in time / fencing (all members)".to_string(),
                    format!("{late} / {fencing}"),
                    "(near-misses; 0 expected)".to_string(),
                ],
            ],
        );
    }
}

/// The soak client's config: `node`'s writer port (its proxy) as the password role `app`.
fn writer_config(node: &Node) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&node.host_ip)
        .port(node.writer_port)
        .user("app")
        .password("app")
        .dbname("postgres")
        .application_name("pgquorum-bench-wan-soak")
        .connect_timeout(Duration::from_secs(2));
    config
}

/// What the soak client saw.
#[derive(Default)]
struct Writes {
    /// The latency of each acknowledged insert (on an open connection).
    acknowledged: Vec<Duration>,
    /// Inserts answered with an error.
    failed: u64,
    /// Inserts without an answer within [`WRITE_TIMEOUT`].
    unknown: u64,
    /// Connections that could not be opened.
    connect_failures: u64,
    first_error: Option<String>,
}

impl Writes {
    fn note(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }
}

/// Starts an insert every [`WRITE_EVERY`] (later if one takes longer) on one connection
/// (opened again after an error) until `stop`; counts each acknowledged in `acknowledged`.
async fn write_every(
    config: tokio_postgres::Config,
    stop: CancellationToken,
    acknowledged: &AtomicU64,
) -> Writes {
    let mut writes = Writes::default();
    let mut ticks = tokio::time::interval(WRITE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection: Option<tokio_postgres::Client> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return writes,
        }
        let client = match &connection {
            Some(client) if !client.is_closed() => client,
            _ => match config.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    connection.insert(client)
                }
                Err(e) => {
                    writes.connect_failures += 1;
                    writes.note(format!("connect: {}", pg_error(&e)));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            WRITE_TIMEOUT,
            client.simple_query("insert into wan_soak default values"),
        )
        .await;
        match answer {
            Ok(Ok(_)) => {
                writes.acknowledged.push(sent.elapsed());
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                writes.failed += 1;
                writes.note(format!("insert: {}", pg_error(&e)));
                connection = None;
            }
            Err(_) => {
                writes.unknown += 1;
                writes.note(format!("insert: no answer within {WRITE_TIMEOUT:?}"));
                connection = None;
            }
        }
    }
}

/// The value below which a fraction `p` of `values` lie (nearest rank); NaN if empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn kib(bytes: u64) -> String {
    (bytes / 1024).to_string()
}

fn opt_mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0))
}
