//! Where the proxy sends a new connection (DESIGN §5), decided from the committed cluster
//! state, this member's own judgement of the lease and the members' fresh statuses. Pure:
//! no clock, no IO; the proxy recomputes it whenever one of its inputs changes.
//!
//! - **Writer**: the lease holder, only while this member sees the lease alive on its own
//!   clock (so a member cut off from the quorum, whose view of the lease has expired, routes
//!   no writer connection anywhere) and the holder reports a writable PostgreSQL.
//! - **Readers**: streaming replicas without the `noloadbalance` tag whose replay is within
//!   `max_lag` bytes of the primary's position and `max_delay` in time. Hysteresis: a replica
//!   that is not a reader now is admitted only within three quarters of either limit, so one
//!   hovering at a limit does not flap.
//!   While the primary's position is unknown (a failover), current readers stay and none is
//!   added. With no reader, the writer serves reads if `fallback_to_primary`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::{Epoch, Lease, Member, NodeId};
use crate::postgres::PgStatus;

/// How readers are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Bytes of WAL a replica may have left to replay and still take new reader connections.
    pub max_lag: u64,
    /// How far behind in time (the age of the last replayed transaction while WAL waits to
    /// be replayed) a replica may be and still take new reader connections.
    pub max_delay: Duration,
    /// With no replica qualifying, send readers to the primary.
    pub fallback_to_primary: bool,
    /// How a new reader connection picks among the readers.
    pub balance: Balance,
}

/// How a new reader connection picks among the readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The reader with the fewest open connections (ties in turn).
    #[default]
    LeastConnections,
    /// Each reader in turn.
    RoundRobin,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_lag: 16 * 1024 * 1024,
            max_delay: Duration::from_secs(10),
            fallback_to_primary: true,
            balance: Balance::LeastConnections,
        }
    }
}

/// The part of a limit a replica must come back under before it is admitted again.
fn readmission(limit: u64) -> u64 {
    limit - limit / 4
}

/// What the routes are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The committed lease.
    pub lease: Option<Lease>,
    /// Whether this member sees the lease as alive on its own clock (renewed within ttl, or
    /// held by this member with a fresh renewal). False on the minority side of a partition.
    pub lease_alive: bool,
    pub members: &'a BTreeMap<NodeId, Member>,
    /// Fresh statuses (this member's own and the peers' that answered recently).
    pub statuses: &'a BTreeMap<NodeId, PgStatus>,
}

/// A member's PostgreSQL as a proxy target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub node: NodeId,
    /// `host:port` of its PostgreSQL.
    pub addr: String,
}

/// The routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// The lease epoch the writer belongs to: writer connections opened under another
    /// epoch are closed when it changes.
    pub epoch: Option<Epoch>,
    pub writer: Option<Target>,
    /// Replicas (or the primary, as fallback) for new reader connections, by node id.
    pub readers: Vec<Target>,
}

/// Computes the routes; `previous` is the table in force (for reader hysteresis).
pub fn routes(inputs: &Inputs<'_>, policy: &Policy, previous: &Routes) -> Routes {
    let target = |id: NodeId| -> Option<Target> {
        let member = inputs.members.get(&id)?;
        (!member.is_witness()).then(|| Target {
            node: id,
            addr: member.pg_addr.clone(),
        })
    };
    let holder = inputs.lease.map(|l| l.holder);
    let primary_status = holder
        .and_then(|h| inputs.statuses.get(&h))
        .filter(|pg| pg.is_writable());
    let writer = match (inputs.lease_alive, holder, primary_status) {
        (true, Some(h), Some(_)) => target(h),
        _ => None,
    };
    let primary_position = primary_status.and_then(|pg| pg.wal_position);
    let was_reader = |id: NodeId| previous.readers.iter().any(|t| t.node == id);
    let mut readers: Vec<Target> = inputs
        .members
        .values()
        .filter(|m| Some(m.id) != holder && !m.tags.noloadbalance)
        .filter(|m| {
            let Some(pg) = inputs.statuses.get(&m.id) else {
                return false;
            };
            if !(pg.is_running_replica() && pg.streaming) {
                return false;
            }
            let within = |value: u64, limit: u64| {
                if was_reader(m.id) {
                    value <= limit
                } else {
                    value <= readmission(limit)
                }
            };
            let max_delay = u64::try_from(policy.max_delay.as_millis()).unwrap_or(u64::MAX);
            // Unknown (nothing replayed since it started) is no reason to keep readers away.
            if !within(pg.replay_delay_ms.unwrap_or(0), max_delay) {
                return false;
            }
            let replayed = pg.replayed.or(pg.wal_position);
            match (primary_position, replayed) {
                (Some(primary), Some(replayed)) => {
                    within(primary.bytes_after(replayed), policy.max_lag)
                }
                // The primary's position is unknown (no writable primary right now): keep
                // the readers there are, admit none.
                _ => was_reader(m.id),
            }
        })
        .filter_map(|m| target(m.id))
        .collect();
    if readers.is_empty() && policy.fallback_to_primary {
        readers.extend(writer.clone());
    }
    Routes {
        epoch: writer.as_ref().and(inputs.lease.map(|l| l.epoch)),
        writer,
        readers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Tags;
    use crate::postgres::Lsn;

    const MB: u64 = 1024 * 1024;

    fn member(id: u64, noloadbalance: bool) -> Member {
        Member {
            id: NodeId(id),
            name: format!("n{id}"),
            peer_addr: String::new(),
            api_addr: String::new(),
            pg_addr: format!("10.0.0.{id}:5432"),
            tags: Tags {
                noloadbalance,
                ..Tags::default()
            },
        }
    }

    fn primary(at: u64) -> PgStatus {
        PgStatus {
            running: true,
            timeline: 1,
            wal_position: Some(Lsn(at)),
            ..PgStatus::default()
        }
    }

    fn delayed(replayed: u64, delay_ms: u64) -> PgStatus {
        PgStatus {
            replay_delay_ms: Some(delay_ms),
            ..replica(replayed)
        }
    }

    fn replica(replayed: u64) -> PgStatus {
        PgStatus {
            running: true,
            in_recovery: true,
            timeline: 1,
            wal_position: Some(Lsn(replayed)),
            replayed: Some(Lsn(replayed)),
            streaming: true,
            pending_restart: false,
            replay_delay_ms: None,
            primary_end: Some(Lsn(replayed)),
        }
    }

    fn t(id: u64) -> Target {
        Target {
            node: NodeId(id),
            addr: format!("10.0.0.{id}:5432"),
        }
    }

    fn lease(holder: u64) -> Option<Lease> {
        Some(Lease {
            holder: NodeId(holder),
            epoch: Epoch(7),
            seq: 1,
        })
    }

    /// (case, lease, alive, statuses by id, previous readers, noloadbalance ids, policy
    /// fallback, want writer, want readers)
    type Case = (
        &'static str,
        Option<Lease>,
        bool,
        Vec<(u64, PgStatus)>,
        Vec<u64>,
        Vec<u64>,
        bool,
        Option<u64>,
        Vec<u64>,
    );

    #[test]
    fn routing_table() {
        let p = 100 * MB;
        let not_streaming = PgStatus {
            streaming: false,
            ..replica(p)
        };
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("healthy: writer to the holder, readers to both replicas",
                lease(1), true, vec![(1, primary(p)), (2, replica(p)), (3, replica(p))],
                vec![], vec![], true, Some(1), vec![2, 3]),
            ("no lease: no writer, readers fall back to nothing",
                None, false, vec![(2, replica(p)), (3, replica(p))],
                vec![2], vec![], true, None, vec![2]),
            ("lease not alive on my clock (minority side): no writer",
                lease(1), false, vec![(1, primary(p)), (2, replica(p))],
                vec![], vec![], true, None, vec![2]),
            ("holder not writable (still promoting): no writer",
                lease(2), true, vec![(2, replica(p)), (3, replica(p))],
                vec![], vec![], true, None, vec![]),
            ("holder's status unknown: no writer",
                lease(1), true, vec![(2, replica(p))],
                vec![], vec![], false, None, vec![]),
            ("a writable member without the lease gets nothing",
                lease(2), true, vec![(1, primary(p)), (2, primary(p)), (3, replica(p))],
                vec![], vec![], true, Some(2), vec![3]),
            ("a replica not streaming is no reader",
                lease(1), true, vec![(1, primary(p)), (2, not_streaming), (3, replica(p))],
                vec![], vec![], true, Some(1), vec![3]),
            ("noloadbalance replicas are no readers",
                lease(1), true, vec![(1, primary(p)), (2, replica(p)), (3, replica(p))],
                vec![], vec![2], true, Some(1), vec![3]),
            ("a lagging replica is dropped",
                lease(1), true, vec![(1, primary(p)), (2, replica(p - 17 * MB)), (3, replica(p))],
                vec![2, 3], vec![], true, Some(1), vec![3]),
            ("a reader within the limit stays (hysteresis)",
                lease(1), true, vec![(1, primary(p)), (2, replica(p - 14 * MB))],
                vec![2], vec![], true, Some(1), vec![2]),
            ("a replica back within the limit but not below it minus hysteresis waits",
                lease(1), true, vec![(1, primary(p)), (2, replica(p - 14 * MB))],
                vec![], vec![], true, Some(1), vec![1]),
            ("a replica well within the limit is admitted",
                lease(1), true, vec![(1, primary(p)), (2, replica(p - 12 * MB))],
                vec![], vec![], true, Some(1), vec![2]),
            ("a replica whose replay is too far behind in time is dropped",
                lease(1), true, vec![(1, primary(p)), (2, delayed(p, 10_001)), (3, delayed(p, 0))],
                vec![2, 3], vec![], true, Some(1), vec![3]),
            ("a reader within the time limit stays (hysteresis)",
                lease(1), true, vec![(1, primary(p)), (2, delayed(p, 9_000))],
                vec![2], vec![], true, Some(1), vec![2]),
            ("a replica back within the time limit but above three quarters of it waits",
                lease(1), true, vec![(1, primary(p)), (2, delayed(p, 9_000))],
                vec![], vec![], true, Some(1), vec![1]),
            ("a replica at three quarters of the time limit is admitted",
                lease(1), true, vec![(1, primary(p)), (2, delayed(p, 7_500))],
                vec![], vec![], true, Some(1), vec![2]),
            ("an unknown replay delay does not keep a replica out",
                lease(1), true, vec![(1, primary(p)), (2, PgStatus { replay_delay_ms: None, ..replica(p) })],
                vec![], vec![], true, Some(1), vec![2]),
            ("no replica qualifies: readers fall back to the primary",
                lease(1), true, vec![(1, primary(p))],
                vec![], vec![], true, Some(1), vec![1]),
            ("no replica qualifies and no fallback: no reader",
                lease(1), true, vec![(1, primary(p))],
                vec![], vec![], false, Some(1), vec![]),
            ("primary position unknown: readers kept, none added",
                None, false, vec![(2, replica(p)), (3, replica(p))],
                vec![3], vec![], false, None, vec![3]),
        ];
        for (case, lease, alive, statuses, previous, noload, fallback, writer, readers) in cases {
            let members = (1..=3)
                .map(|id| (NodeId(id), member(id, noload.contains(&id))))
                .collect();
            let statuses = statuses
                .into_iter()
                .map(|(id, pg)| (NodeId(id), pg))
                .collect();
            let inputs = Inputs {
                lease,
                lease_alive: alive,
                members: &members,
                statuses: &statuses,
            };
            let policy = Policy {
                max_lag: 16 * MB,
                max_delay: Duration::from_secs(10),
                fallback_to_primary: fallback,
                balance: Balance::LeastConnections,
            };
            let previous = Routes {
                epoch: None,
                writer: None,
                readers: previous.into_iter().map(t).collect(),
            };
            let got = routes(&inputs, &policy, &previous);
            assert_eq!(got.writer, writer.map(t), "{case}: writer");
            assert_eq!(
                got.readers,
                readers.into_iter().map(t).collect::<Vec<_>>(),
                "{case}: readers"
            );
            assert_eq!(
                got.epoch,
                got.writer.as_ref().map(|_| Epoch(7)),
                "{case}: epoch"
            );
        }
    }
}
