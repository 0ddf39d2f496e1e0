//! What the soak watches on every member: its `/cluster` view's leadership, its daemon's log,
//! and its daemon's memory and state directory's disk usage.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use crate::common::{Node, TestCluster};

use super::{FENCING, LATE_RENEWAL};

/// The poller's state, whoever panicked while holding it.
pub(crate) fn lock(watch: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(|e| e.into_inner())
}

/// A daemon's memory and its state directory's disk usage at one moment.
pub(crate) struct Footprint {
    pub(crate) pid: Option<u32>,
    pub(crate) rss_kib: Option<u64>,
    /// `<state_dir>` without `<state_dir>/pgdata`.
    pub(crate) state_bytes: u64,
    /// `<state_dir>/raft`: the Raft log, vote and snapshots (sled).
    pub(crate) raft_bytes: u64,
    /// `<state_dir>/postgresql.log`: PostgreSQL's own log.
    pub(crate) pg_log_bytes: u64,
}

impl Footprint {
    pub(crate) fn of(node: &Node) -> Footprint {
        let pid = node.pid();
        Footprint {
            pid,
            rss_kib: pid.and_then(rss_kib),
            state_bytes: disk_usage(&node.state_dir, &node.state_dir.join("pgdata")),
            raft_bytes: disk_usage(&node.state_dir.join("raft"), Path::new("")),
            pg_log_bytes: disk_usage(&node.state_dir.join("postgresql.log"), Path::new("")),
        }
    }
}

/// `VmRSS` of process `pid`, in KiB, if it is alive and a pgquorum daemon (the harness
/// starts it through `ip netns exec`, which execs it in place).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let name = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
    if name != "pgquorum" {
        return None;
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Bytes allocated on disk (as `du` counts them) under `path`, without `skip` and what is
/// under it. Files that vanish during the walk count as nothing.
fn disk_usage(path: &Path, skip: &Path) -> u64 {
    if path == skip {
        return 0;
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children: u64 = fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| disk_usage(&e.path(), skip))
                .sum()
        })
        .unwrap_or(0);
    own + children
}

/// What one member's `/cluster` says about leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Leadership {
    term: u64,
    leader: Option<u64>,
    epoch: u64,
    holder: Option<u64>,
}

impl Leadership {
    fn of(view: &Value) -> Leadership {
        Leadership {
            term: view["term"].as_u64().unwrap_or(0),
            leader: view["leader"].as_u64(),
            epoch: view["lease_epoch"].as_u64().unwrap_or(0),
            holder: view["lease"]["holder"].as_u64(),
        }
    }
}

impl fmt::Display for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = |id: Option<u64>| id.map_or("none".to_string(), |id| format!("node {id}"));
        write!(
            f,
            "term {} leader {}, lease epoch {} held by {}",
            self.term,
            id(self.leader),
            self.epoch,
            id(self.holder)
        )
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Changes {
    pub(crate) term: u32,
    pub(crate) leader: u32,
    pub(crate) epoch: u32,
    pub(crate) holder: u32,
}

/// What the soak's poller saw of one member.
pub(crate) struct Seen {
    last: Option<Leadership>,
    pub(crate) changes: Changes,
    pub(crate) polls: u32,
    pub(crate) failed_polls: u32,
}

/// The soak's view poller's state: every member's leadership as last seen, and every change.
pub(crate) struct Watch {
    pub(crate) members: Vec<Seen>,
    /// One line per change, with when and where it was seen.
    pub(crate) events: Vec<String>,
}

impl Watch {
    /// Reads every member's view now: the baseline. Panics if one does not answer.
    pub(crate) fn start(cluster: &TestCluster) -> Watch {
        let members = (1..=cluster.len())
            .map(|i| {
                let view = cluster
                    .node(i)
                    .cluster_view()
                    .unwrap_or_else(|e| panic!("the soak's baseline: {e}"));
                Seen {
                    last: Some(Leadership::of(&view)),
                    changes: Changes::default(),
                    polls: 0,
                    failed_polls: 0,
                }
            })
            .collect();
        Watch {
            members,
            events: Vec::new(),
        }
    }

    /// Reads every member's view once and counts what changed since its last one.
    pub(crate) fn poll(&mut self, cluster: &TestCluster, started: Instant) {
        for i in 1..=cluster.len() {
            let seen = &mut self.members[i - 1];
            seen.polls += 1;
            let now = match cluster.node(i).cluster_view() {
                Ok(view) => Leadership::of(&view),
                Err(e) => {
                    seen.failed_polls += 1;
                    if seen.failed_polls <= 3 {
                        self.events.push(format!(
                            "{:.1} s: n{i} did not answer: {e}",
                            started.elapsed().as_secs_f64()
                        ));
                    }
                    continue;
                }
            };
            if let Some(last) = seen.last.filter(|last| *last != now) {
                seen.changes.term += u32::from(last.term != now.term);
                seen.changes.leader += u32::from(last.leader != now.leader);
                seen.changes.epoch += u32::from(last.epoch != now.epoch);
                seen.changes.holder += u32::from(last.holder != now.holder);
                self.events.push(format!(
                    "{:.1} s: n{i} saw {last} -> {now}",
                    started.elapsed().as_secs_f64()
                ));
            }
            seen.last = Some(now);
        }
    }

    /// (Raft leadership changes, lease changes): the most any one member saw. Each member
    /// sees the same changes unless it misses one between two polls.
    pub(crate) fn totals(&self) -> (u32, u32) {
        let raft = self
            .members
            .iter()
            .map(|s| s.changes.term.max(s.changes.leader))
            .max()
            .unwrap_or(0);
        let lease = self
            .members
            .iter()
            .map(|s| s.changes.epoch.max(s.changes.holder))
            .max()
            .unwrap_or(0);
        (raft, lease)
    }
}

/// Lines of a daemon's log after the soak started that tell of lease trouble.
pub(crate) struct LogCounts {
    pub(crate) late_renewals: u32,
    pub(crate) fencing: u32,
}

impl LogCounts {
    /// Counts in `log` from byte `offset` on.
    pub(crate) fn of(log: &str, offset: usize) -> LogCounts {
        let tail = log.get(offset..).unwrap_or_default();
        let count = |matches: &dyn Fn(&str) -> bool| tail.lines().filter(|l| matches(l)).count();
        LogCounts {
            late_renewals: count(&|l| l.contains(LATE_RENEWAL)) as u32,
            fencing: count(&|l| FENCING.iter().any(|f| l.contains(f))) as u32,
        }
    }
}
