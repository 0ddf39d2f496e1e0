//! `failover`: the primary's host dies, `RUNS` times on one cluster; kill -> first write
//! acknowledged by a survivor, -> quorum again, and the killed node's rejoin.

use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::pg::writable;
use crate::common::{eventually, Node, TestCluster};
use crate::netns_cleanup::{live_postgres, process_gone};
use crate::report::{load_average, ms, stats, verdict};
use crate::setup::{
    healthy, pg_error, print_header, print_line, print_table, print_table_head, Regional, ONE_WAY,
};

/// A failover client's attempts start this far apart (start to start) unless one takes
/// longer.
const POLL: Duration = Duration::from_millis(20);
/// A failover client's connect timeout (a unix socket refuses at once; this is a backstop).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a failover may take before the bench gives up (and panics).
const LIMIT: Duration = Duration::from_secs(60);
/// From the restart of the killed node to a healthy cluster, at most (a pg_rewind and a
/// clone's catch-up over the WAN).
const REJOIN: Duration = Duration::from_secs(180);
/// Issue 7: median unplanned failover time with the WAN profile.
const FAILOVER_GOAL: Duration = Duration::from_secs(6);

/// `runs` kills of the primary's host on one cluster, each followed by the rejoin.
pub(crate) fn failover(runs: usize, command: &str) {
    print_header(
        "failover",
        command,
        &format!(
            "the primary's host dies (SIGKILL of its postmaster's and its daemon's process \
             groups); failover = kill -> first insert acknowledged by a survivor's PostgreSQL \
             (unix socket, as postgres; per survivor one attempt at a time, a new connection \
             each, started every {} ms; connect timeout {} s); quorum again = kill -> the new \
             primary's synchronous_standby_names names a standby (read as often after the \
             first acknowledgement); then the killed node is \
             restarted and rejoin = restart -> healthy (one writable primary, both replicas \
             streaming and named in synchronous_standby_names, every member's view shows \
             them as quorum standbys, members agree on the Raft leader); each run starts \
             from a healthy cluster; RUNS={runs}",
            POLL.as_millis(),
            CONNECT_TIMEOUT.as_secs()
        ),
    );
    let mut regional = Regional::form(ONE_WAY);
    let primary = regional.primary;
    regional
        .cluster
        .node(primary)
        .sql("create table wan_failover (id bigserial primary key, via text not null)")
        .expect("creating the table");
    let header = [
        "run",
        "killed",
        "Raft leader killed too",
        "new primary",
        "failover (ms)",
        "quorum again (ms)",
        "attempts",
        "rejoin (s)",
    ];
    let widths = print_table_head(&header);
    let mut rows = Vec::new();
    let mut primary = primary;
    for run in 1..=runs {
        let row = one_failover(&mut regional.cluster, primary, run);
        print_line(
            &widths,
            &[
                run.to_string(),
                format!("n{}", row.killed),
                if row.raft_leader_killed { "yes" } else { "no" }.to_string(),
                format!("n{}", row.new),
                format!("{:.0}", ms(row.failover)),
                row.quorum
                    .map_or("-".to_string(), |q| format!("{:.0}", ms(q))),
                row.attempts.to_string(),
                format!("{:.1}", row.rejoin.as_secs_f64()),
            ],
        );
        primary = row.new;
        rows.push(row);
    }
    println!();
    println!(
        "(ms after the kill: failover = first insert acknowledged by a survivor; quorum \
         again = the new primary's synchronous_standby_names names a standby again, so \
         commits from then on wait for one, `-` = not within {} s; attempts = inserts tried \
         on both survivors until the first acknowledgement; rejoin = restart of the killed \
         node -> healthy)",
        LIMIT.as_secs()
    );
    println!();
    let failovers: Vec<f64> = rows.iter().map(|r| ms(r.failover)).collect();
    let quorums: Vec<f64> = rows.iter().filter_map(|r| r.quorum).map(ms).collect();
    let rejoins: Vec<f64> = rows.iter().map(|r| r.rejoin.as_secs_f64()).collect();
    let (median, min, max) = stats(&failovers);
    let (rejoin_median, rejoin_min, rejoin_max) = stats(&rejoins);
    let (quorum_median, quorum_min, quorum_max) = stats(&quorums);
    let runs_note = if rows.len() < 5 {
        " (acceptance needs RUNS >= 5)"
    } else {
        ""
    };
    print_table(
        &["metric", "runs", "median", "min", "max", "goal"],
        vec![
            vec![
                "failover: kill -> first write on a survivor (ms)".to_string(),
                rows.len().to_string(),
                format!("{median:.0}"),
                format!("{min:.0}"),
                format!("{max:.0}"),
                format!(
                    "median <= {:.0}: {}{runs_note}",
                    ms(FAILOVER_GOAL),
                    verdict(median <= ms(FAILOVER_GOAL))
                ),
            ],
            vec![
                "quorum again: kill -> new primary names a standby (ms)".to_string(),
                quorums.len().to_string(),
                format!("{quorum_median:.0}"),
                format!("{quorum_min:.0}"),
                format!("{quorum_max:.0}"),
                String::new(),
            ],
            vec![
                "rejoin: restart -> healthy (s)".to_string(),
                rows.len().to_string(),
                format!("{rejoin_median:.1}"),
                format!("{rejoin_min:.1}"),
                format!("{rejoin_max:.1}"),
                String::new(),
            ],
        ],
    );
    println!();
    println!(
        "- logs: target/test-logs/wan.failover/; load: {} (at end)",
        load_average()
    );
}

/// One run's measurements.
struct FailoverRow {
    killed: usize,
    /// Whether the killed member was also the Raft leader (then an election is part of the
    /// failover).
    raft_leader_killed: bool,
    new: usize,
    /// Kill -> first acknowledged insert on a survivor.
    failover: Duration,
    /// Kill -> the new primary names a synchronous standby again.
    quorum: Option<Duration>,
    /// Attempts over both survivors.
    attempts: u32,
    /// Restart of the killed node -> healthy cluster.
    rejoin: Duration,
}

/// Kills the host of `killed` (the primary), measures the failover, restarts it and waits
/// until the cluster is healthy again.
fn one_failover(cluster: &mut TestCluster, killed: usize, run: usize) -> FailoverRow {
    assert_eq!(
        healthy(cluster),
        Ok(killed),
        "before run {run} the cluster is healthy with n{killed} as its primary"
    );
    let view = cluster
        .node(killed)
        .cluster_view()
        .unwrap_or_else(|e| panic!("before run {run}: {e}"));
    let raft_leader_killed = view["leader"].as_u64() == Some(cluster.id_of(&view, killed));
    let survivors: Vec<usize> = (1..=cluster.len()).filter(|&i| i != killed).collect();
    let probe = Probe::spawn(
        survivors
            .iter()
            .map(|&i| (i, socket_config(cluster.node(i))))
            .collect(),
    );
    for i in 1..=cluster.len() {
        cluster.node(i).note(&format!(
            "=== bench: run {run}: killing the host of n{killed} ==="
        ));
    }

    let postmaster = live_postgres(cluster.node(killed).postmaster_pid());
    let started = Instant::now();
    if let Some(pid) = postmaster {
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` was a live `postgres`
        // process (the leader of its own process group) just above.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
    }
    // SIGKILL to the daemon's process group; waits until the daemon is reaped.
    cluster.node_mut(killed).kill();
    let probe = probe.start(started);
    if let Some(pid) = postmaster {
        eventually(
            Duration::from_secs(10),
            "the killed postmaster is gone",
            || process_gone(pid).then_some(()).ok_or(pid),
        );
    }
    let ack = probe
        .finish()
        .unwrap_or_else(|e| panic!("run {run}: no survivor accepted a write: {e}"));
    eventually(
        Duration::from_secs(10),
        "the survivor that acknowledged is the one writable member",
        || match writable(cluster) {
            Ok(p) if p == ack.member => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    let restarted = Instant::now();
    cluster.node_mut(killed).start();
    let primary = eventually(
        REJOIN,
        "the restarted node rejoins and the cluster is healthy",
        || healthy(cluster),
    );
    let rejoin = restarted.elapsed();
    assert_eq!(
        primary, ack.member,
        "run {run}: the primary changed during the rejoin"
    );
    FailoverRow {
        killed,
        raft_leader_killed,
        new: ack.member,
        failover: ack.at,
        quorum: ack.quorum,
        attempts: ack.attempts,
        rejoin,
    }
}

/// A client config for `node`'s PostgreSQL through its unix socket, as `postgres`.
fn socket_config(node: &Node) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(node.state_dir.join("run"))
        .port(node.pg_port)
        .user("postgres")
        .dbname("postgres")
        .application_name("pgquorum-bench-wan")
        .connect_timeout(CONNECT_TIMEOUT);
    config
}

/// The first acknowledged insert of a [`Probe`].
struct Ack {
    /// The member that acknowledged it.
    member: usize,
    /// Since the start the probe was given.
    at: Duration,
    /// Since the start: when that member's `synchronous_standby_names` named a standby again
    /// (commits from then on wait for one); `None` if not within [`LIMIT`] of the start.
    quorum: Option<Duration>,
    /// Attempts started until the acknowledgement, over all members.
    attempts: u32,
}

/// A client thread with a current-thread tokio runtime; once started, one task per member
/// inserts, one attempt at a time every [`POLL`], until a member acknowledges.
struct Probe {
    go: mpsc::Sender<Instant>,
    thread: JoinHandle<Result<Ack, String>>,
}

/// A started [`Probe`].
struct Running(JoinHandle<Result<Ack, String>>);

impl Probe {
    /// Builds the runtime and the thread, ready to start.
    fn spawn(targets: Vec<(usize, tokio_postgres::Config)>) -> Probe {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        let (go, started) = mpsc::channel::<Instant>();
        let thread = thread::spawn(move || {
            let started = started.recv().map_err(|_| "not started".to_string())?;
            runtime.block_on(first_ack(targets, started))
        });
        Probe { go, thread }
    }

    /// Starts attempting, counting from `started`, for at most [`LIMIT`].
    fn start(self, started: Instant) -> Running {
        let _ = self.go.send(started);
        Running(self.thread)
    }
}

impl Running {
    fn finish(self) -> Result<Ack, String> {
        self.0
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// What a member's poll reports.
enum Attempted {
    /// An insert's error.
    Failed(usize, String),
    /// The insert was acknowledged then.
    Acknowledged(usize, Instant),
    /// After the acknowledgement: its `synchronous_standby_names` named a standby then.
    Quorum(usize, Instant),
}

async fn first_ack(
    targets: Vec<(usize, tokio_postgres::Config)>,
    started: Instant,
) -> Result<Ack, String> {
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let polls: Vec<(usize, tokio::task::JoinHandle<()>)> = targets
        .into_iter()
        .map(|(member, config)| {
            let poll = tokio::spawn(poll_member(member, config, report.clone()));
            (member, poll)
        })
        .collect();
    drop(report);
    let mut attempts = 0u32;
    let mut last_errors: Vec<(usize, String)> = Vec::new();
    let mut ack: Option<Ack> = None;
    let deadline = tokio::time::Instant::from_std(started + LIMIT);
    loop {
        let reported = tokio::time::timeout_at(deadline, reports.recv()).await;
        match reported {
            Ok(Some(Attempted::Acknowledged(member, at))) if ack.is_none() => {
                for (_, poll) in polls.iter().filter(|(m, _)| *m != member) {
                    poll.abort();
                }
                ack = Some(Ack {
                    member,
                    at: at - started,
                    quorum: None,
                    attempts: attempts + 1,
                });
            }
            Ok(Some(Attempted::Quorum(member, at))) => {
                if let Some(mut ack) = ack.take().filter(|a| a.member == member) {
                    ack.quorum = Some(at - started);
                    return Ok(ack);
                }
            }
            Ok(Some(Attempted::Failed(member, error))) if ack.is_none() => {
                attempts += 1;
                last_errors.retain(|(m, _)| *m != member);
                last_errors.push((member, error));
            }
            Ok(Some(_)) => {} // the others' reports after the acknowledgement
            Ok(None) => unreachable!("the polls run until the quorum is back or aborted"),
            Err(_) => {
                if let Some(ack) = ack {
                    return Ok(ack);
                }
                let errors: Vec<String> = last_errors
                    .iter()
                    .map(|(m, e)| format!("n{m}: {e}"))
                    .collect();
                return Err(format!(
                    "nothing acknowledged within {LIMIT:?} ({attempts} attempts); last errors: \
                     {}",
                    errors.join("; ")
                ));
            }
        }
    }
}

/// Inserts into `member` one attempt at a time, each started [`POLL`] after the previous
/// one started (at once if that took longer), until one is acknowledged; then reads its
/// `synchronous_standby_names` as often until it names a standby.
async fn poll_member(
    member: usize,
    config: tokio_postgres::Config,
    report: tokio::sync::mpsc::UnboundedSender<Attempted>,
) {
    let sql = format!("insert into wan_failover (via) values ('n{member}')");
    loop {
        let next = tokio::time::Instant::now() + POLL;
        match query(&config, &sql).await {
            Ok(_) => {
                // Stamped as soon as the server's answer is read.
                let _ = report.send(Attempted::Acknowledged(member, Instant::now()));
                break;
            }
            Err(e) => {
                if report.send(Attempted::Failed(member, e)).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep_until(next).await;
    }
    loop {
        let next = tokio::time::Instant::now() + POLL;
        let names = query(&config, "show synchronous_standby_names").await;
        if names.is_ok_and(|names| !names.is_empty()) {
            let _ = report.send(Attempted::Quorum(member, Instant::now()));
            return;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// A new connection and `sql` on it: the first value of its first row ("" if none).
async fn query(config: &tokio_postgres::Config, sql: &str) -> Result<String, String> {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {}", pg_error(&e)))?;
    tokio::spawn(connection);
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{sql}: {}", pg_error(&e)))?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}
