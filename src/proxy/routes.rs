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
mod tests;
