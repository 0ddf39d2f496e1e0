//! The nemesis: draws a schedule of faults from a seed and does each one to the real
//! daemons, PostgreSQL servers and network namespaces, then undoes it and waits until the
//! cluster has recovered before the next.
//!
//! Owns the fault vocabulary's mechanics (signals, nftables rules, restarts, the switchover
//! request) and its timings; records each fault in the history once it is over. The waits
//! inside a fault (how long a pause or a partition lasts, the gap between faults) are part of
//! the schedule drawn from the seed, not waits for a condition; every wait *for* something
//! (the cluster recovering, a daemon exiting) polls with a deadline.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::clients::Recorder;
use super::common::netns::Hosts;
use super::common::pg::{replicas_streaming, writable};
use super::common::TestCluster;
use super::history::{Fault, FaultKind, Record};
use super::nft::nft;

/// How the schedule scales with the cluster's timings: pauses and partitions are drawn
/// around the lease ttl, so the same kinds mean the same thing on a LAN and over a WAN.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The cluster's lease ttl.
    pub ttl: Duration,
    /// How long recovery after a heal may take before the fault counts as unrecovered and the
    /// campaign moves on.
    pub recovery_deadline: Duration,
}

/// The next faults, drawn from a seed: the same seed gives the same kinds, targets and
/// durations in the same order.
pub struct Schedule {
    rng: StdRng,
    kinds: Vec<FaultKind>,
}

/// Whom a fault is done to, resolved when it is injected: the primary of that moment or one
/// of its replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Primary,
    /// The k-th replica (modulo the number of replicas).
    Replica(usize),
    Cluster,
}

/// One fault to do.
#[derive(Clone, Copy, Debug)]
pub struct Planned {
    pub kind: FaultKind,
    pub target: Target,
    /// How long the fault lasts before the nemesis undoes it (a pause, a partition, the time
    /// a killed daemon stays down); unused by kinds that are not undone.
    pub hold: Duration,
    /// Normal operation after recovery, before the next fault.
    pub gap: Duration,
    /// Request a switchover halfway through the hold (a fault held on a replica only): a
    /// planned change of primary in the middle of an unplanned fault.
    pub switchover_midway: bool,
}

/// How often a fault held on a replica gets a switchover halfway through.
const SWITCHOVER_MIDWAY: f64 = 0.25;

impl Schedule {
    /// A schedule over `kinds` (each drawn with equal probability).
    pub fn new(seed: u64, kinds: &[FaultKind]) -> Schedule {
        assert!(
            !kinds.is_empty(),
            "a campaign needs at least one fault kind"
        );
        Schedule {
            rng: StdRng::seed_from_u64(seed),
            kinds: kinds.to_vec(),
        }
    }

    /// The next fault. The first `kinds.len()` faults are every kind once, in a shuffled
    /// order, so even a short campaign covers them all; after that each kind is drawn at
    /// random.
    pub fn next(&mut self, index: usize, timing: Timing) -> Planned {
        let n = self.kinds.len();
        if index == 0 {
            // Fisher-Yates over the kinds, once.
            for i in (1..n).rev() {
                let j = self.rng.random_range(0..=i);
                self.kinds.swap(i, j);
            }
        }
        let kind = if index < n {
            self.kinds[index]
        } else {
            self.kinds[self.rng.random_range(0..n)]
        };
        let target = match kind {
            FaultKind::RollingRestart | FaultKind::Switchover => Target::Cluster,
            _ if self.rng.random_bool(0.6) => Target::Primary,
            _ => Target::Replica(self.rng.random_range(0..2)),
        };
        let ttl = timing.ttl;
        let hold = match kind {
            FaultKind::PauseDaemonShort | FaultKind::PausePostgresShort => {
                ttl.mul_f64(self.rng.random_range(0.15..0.45))
            }
            FaultKind::PauseDaemonLong | FaultKind::PausePostgresLong => {
                ttl.mul_f64(self.rng.random_range(1.5..3.0))
            }
            FaultKind::Partition | FaultKind::PartitionInbound | FaultKind::PartitionOutbound => {
                ttl.mul_f64(self.rng.random_range(1.5..4.0))
            }
            FaultKind::KillDaemon | FaultKind::KillBoth | FaultKind::RestartHost => {
                ttl.mul_f64(self.rng.random_range(0.2..2.0))
            }
            FaultKind::KillPostgres | FaultKind::RollingRestart | FaultKind::Switchover => {
                Duration::ZERO
            }
        };
        let gap = ttl.mul_f64(self.rng.random_range(0.5..1.5));
        let held_on_replica = matches!(target, Target::Replica(_))
            && matches!(
                kind,
                FaultKind::PauseDaemonLong
                    | FaultKind::PausePostgresLong
                    | FaultKind::Partition
                    | FaultKind::PartitionInbound
                    | FaultKind::PartitionOutbound
                    | FaultKind::KillDaemon
                    | FaultKind::KillBoth
                    | FaultKind::RestartHost
            );
        let switchover_midway = held_on_replica && self.rng.random_bool(SWITCHOVER_MIDWAY);
        Planned {
            kind,
            target,
            hold,
            gap,
            switchover_midway,
        }
    }
}

/// Does faults to one cluster on its hosts.
pub struct Nemesis<'a> {
    pub cluster: &'a mut TestCluster,
    pub hosts: &'a Hosts,
    pub recorder: &'a Recorder,
    pub timing: Timing,
    /// Synchronous or quorum mode: healthy includes a primary that names its standbys.
    pub synchronous: bool,
}

/// What one fault came to, for the campaign's progress lines.
pub struct Done {
    pub fault: Fault,
    /// From the undo to a healthy cluster; `Err` with what was seen last if the deadline
    /// passed first.
    pub healthy_after: Result<Duration, String>,
}

impl Nemesis<'_> {
    /// Does `planned`, undoes it, records it, and waits (up to the recovery deadline) until
    /// the cluster is healthy again; then waits the planned gap.
    pub fn run(&mut self, planned: Planned) -> Done {
        let primary = self.primary();
        let target = match planned.target {
            Target::Cluster => None,
            Target::Primary => Some(primary.unwrap_or(1)),
            Target::Replica(k) => {
                let replicas: Vec<usize> = (1..=self.cluster.len())
                    .filter(|&i| Some(i) != primary)
                    .collect();
                Some(replicas[k % replicas.len()])
            }
        };
        let clock = self.recorder.clock();
        for i in 1..=self.cluster.len() {
            let on = target.map_or(String::new(), |t| format!(" of n{t}"));
            self.cluster.node(i).note(&format!(
                "=== nemesis at {} ms: {}{on} (hold {:?}) ===",
                clock.now_ms(),
                planned.kind,
                planned.hold
            ));
        }
        let start_ms = clock.now_ms();
        self.inject(planned, target);
        let end_ms = clock.now_ms();
        let fault = Fault {
            kind: planned.kind,
            target: target.map(|t| self.cluster.node(t).name.clone()),
            start_ms,
            end_ms,
        };
        self.recorder.record(Record::Fault(fault.clone()));
        let healed = Instant::now();
        let healthy_after = self.wait_healthy().map(|()| healed.elapsed());
        std::thread::sleep(planned.gap);
        Done {
            fault,
            healthy_after,
        }
    }

    /// Injects the fault and, for the kinds that are undone, undoes it after `hold`.
    fn inject(&mut self, planned: Planned, target: Option<usize>) {
        let hold = planned;
        match (planned.kind, target) {
            (FaultKind::KillDaemon, Some(i)) => {
                self.cluster.node_mut(i).kill();
                self.hold(hold, i);
                self.cluster.node_mut(i).start();
            }
            (FaultKind::KillPostgres, Some(i)) => {
                if let Some(pid) = self.cluster.node(i).postmaster_pid() {
                    signal_group(pid, libc::SIGKILL);
                }
            }
            (FaultKind::KillBoth, Some(i)) => {
                let postmaster = self.cluster.node(i).postmaster_pid();
                self.cluster.node_mut(i).kill();
                if let Some(pid) = postmaster {
                    signal_group(pid, libc::SIGKILL);
                }
                self.hold(hold, i);
                self.cluster.node_mut(i).start();
            }
            (FaultKind::PauseDaemonShort | FaultKind::PauseDaemonLong, Some(i)) => {
                if let Some(pid) = self.cluster.node(i).pid() {
                    signal_group(pid as i32, libc::SIGSTOP);
                    self.hold(hold, i);
                    signal_group(pid as i32, libc::SIGCONT);
                }
            }
            (FaultKind::PausePostgresShort | FaultKind::PausePostgresLong, Some(i)) => {
                if let Some(pid) = self.cluster.node(i).postmaster_pid() {
                    signal_group(pid, libc::SIGSTOP);
                    self.hold(hold, i);
                    signal_group(pid, libc::SIGCONT);
                }
            }
            (
                kind @ (FaultKind::Partition
                | FaultKind::PartitionInbound
                | FaultKind::PartitionOutbound),
                Some(i),
            ) => {
                let peers: Vec<String> = (1..=self.hosts.len())
                    .filter(|&j| j != i)
                    .map(|j| self.hosts.ip(j))
                    .collect();
                let ns = self.hosts.netns(i);
                partition(&ns, &peers, kind);
                self.hold(hold, i);
                heal(&ns);
            }
            (FaultKind::RestartHost, Some(i)) => {
                self.restart(i, Some(hold));
            }
            (FaultKind::RollingRestart, _) => {
                for i in 1..=self.cluster.len() {
                    self.restart(i, None);
                    if let Err(why) = self.wait_healthy() {
                        self.cluster
                            .node(i)
                            .note(&format!("=== nemesis: rolling restart goes on: {why} ==="));
                    }
                }
            }
            (FaultKind::Switchover, _) => self.request_switchover(None),
            (kind, None) => panic!("{kind} needs a target"),
        }
    }

    /// Waits out the fault's hold on member `target`; with `switchover_midway`, requests a
    /// switchover halfway (of another member: the target may be paused or cut off) and
    /// records it as a fault of its own.
    fn hold(&mut self, planned: Planned, target: usize) {
        if !planned.switchover_midway {
            std::thread::sleep(planned.hold);
            return;
        }
        std::thread::sleep(planned.hold / 2);
        let clock = self.recorder.clock();
        let start_ms = clock.now_ms();
        self.request_switchover(Some(target));
        self.recorder.record(Record::Fault(Fault {
            kind: FaultKind::Switchover,
            target: None,
            start_ms,
            end_ms: clock.now_ms(),
        }));
        std::thread::sleep(planned.hold - planned.hold / 2);
    }

    /// `pgquorum switchover` (to the best replica) on the primary, or on the first member
    /// other than `busy` if none is known; a refusal is noted in that member's log. `busy`
    /// is the target of the fault being held: asked while SIGSTOPped, its daemon would not
    /// answer until the nemesis, waiting for that answer, resumed it.
    fn request_switchover(&self, busy: Option<usize>) {
        let asked = ask_whom(self.primary(), busy, self.cluster.len());
        let output = self.cluster.node(asked).cli(&["switchover"]);
        if !output.status.success() {
            self.cluster.node(asked).note(&format!(
                "=== nemesis: switchover refused: {} ===",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }

    /// A host restarted with its data: the daemon stopped gracefully (it stops its
    /// PostgreSQL), any PostgreSQL left over stopped hard, both started again after the
    /// hold of `planned` (at once without one).
    fn restart(&mut self, i: usize, planned: Option<Planned>) {
        if self.cluster.node(i).is_running() {
            self.cluster.node_mut(i).terminate();
        }
        if let Some(pid) = self.cluster.node(i).postmaster_pid() {
            if process_exists(pid) {
                signal_group(pid, libc::SIGKILL);
            }
        }
        if let Some(planned) = planned {
            self.hold(planned, i);
        }
        self.cluster.node_mut(i).start();
    }

    /// The member whose PostgreSQL is the one writable primary, if there is exactly one.
    fn primary(&self) -> Option<usize> {
        writable(self.cluster).ok()
    }

    /// Polls until every member runs, exactly one PostgreSQL is writable, the others stream
    /// from it, and the members agree on the cluster; `Err` with the last observation after
    /// the recovery deadline.
    pub fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.timing.recovery_deadline;
        loop {
            let seen = self.healthy();
            match seen {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() >= deadline => return Err(why),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn healthy(&self) -> Result<(), String> {
        if self.cluster.running().len() != self.cluster.len() {
            return Err("a member is not running".to_string());
        }
        let primary = writable(self.cluster)?;
        replicas_streaming(self.cluster, primary)?;
        if self.synchronous {
            let names = self
                .cluster
                .node(primary)
                .sql("show synchronous_standby_names")?;
            if names.is_empty() {
                return Err(format!("n{primary} has no synchronous standby yet"));
            }
        }
        self.cluster.converged().map(|_| ())
    }
}

/// Whom to ask for a switchover: the primary when known and not `busy`, else the first of
/// `members` members that is not `busy`.
fn ask_whom(primary: Option<usize>, busy: Option<usize>, members: usize) -> usize {
    primary
        .filter(|&p| Some(p) != busy)
        .or_else(|| (1..=members).find(|&i| Some(i) != busy))
        .unwrap_or(1)
}

/// The nftables table the partitions live in, in the host's namespace.
const TABLE: &str = "pgq_nemesis";

/// Cuts host namespace `ns` off from `peers` (their addresses) in the directions `kind`
/// says. The test process and the client namespace still reach it: a partition between the
/// members, not between the application and its database.
fn partition(ns: &str, peers: &[String], kind: FaultKind) {
    let set = peers.join(", ");
    let mut rules = format!(
        "table inet {TABLE} {{\n\
         chain input {{ type filter hook input priority 0; policy accept; }}\n\
         chain output {{ type filter hook output priority 0; policy accept; }}\n}}\n"
    );
    if matches!(kind, FaultKind::Partition | FaultKind::PartitionInbound) {
        rules.push_str(&format!(
            "add rule inet {TABLE} input ip saddr {{ {set} }} drop\n"
        ));
    }
    if matches!(kind, FaultKind::Partition | FaultKind::PartitionOutbound) {
        rules.push_str(&format!(
            "add rule inet {TABLE} output ip daddr {{ {set} }} drop\n"
        ));
    }
    nft(ns, &rules);
}

/// Undoes [`partition`].
fn heal(ns: &str) {
    nft(ns, &format!("delete table inet {TABLE}\n"));
}

/// Sends `signal` to process group `pgid` (the daemon and the postmaster each lead their
/// own).
fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, signal) };
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::ask_whom;

    #[test]
    fn a_switchover_is_never_asked_of_the_member_held_in_a_fault() {
        for (primary, busy, want) in [
            (Some(2), Some(1), 2),
            (Some(2), None, 2),
            (None, Some(1), 2),
            (None, Some(2), 1),
            (None, None, 1),
            // The harness saw the held member as the one writable member: ask another.
            (Some(3), Some(3), 1),
        ] {
            assert_eq!(ask_whom(primary, busy, 3), want, "{primary:?} {busy:?}");
        }
    }
}
