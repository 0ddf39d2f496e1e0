//! Building one cycle's [`Observation`] from what the loop gathered (the committed view,
//! this member's PostgreSQL, the peers' answers, the lease as seen on this clock) and the
//! engine's memory. No I/O and no clock: the instant is given, so the same inputs give the
//! same observation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::memory::Memory;
use super::observe::{LeaseClockView, Observation, PeerStatus};
use crate::cluster::{Lease, NodeId};
use crate::postgres::{DataDir, PgStatus};

/// What the loop gathered for one cycle, for [`observe`].
pub struct Gathered<'a> {
    pub me: NodeId,
    pub view: &'a crate::raft::ClusterView,
    pub pg: PgStatus,
    pub data_dir: DataDir,
    pub following: Option<NodeId>,
    pub peers: &'a crate::peers::PeerStatuses,
    pub lease_clock: &'a crate::lease::LeaseObservation,
    pub needs_rewind: bool,
    pub rejoin_blocked: Option<String>,
    pub now: Instant,
    /// The wall clock, milliseconds since the Unix epoch.
    pub now_unix_ms: u64,
}

/// Builds the cycle's [`Observation`] from what the loop gathered and the engine's memory
/// (whose trackers it advances: see [`Memory::track`]). No I/O and no clock: `now` is given.
pub fn observe(g: Gathered<'_>, memory: &mut Memory) -> Observation {
    let state = &g.view.state;
    let config = &state.config;
    let horizon = config.status_horizon();
    let fresh: Vec<(NodeId, &crate::peers::PeerReport)> = g.peers.fresh(horizon, g.now).collect();
    let status_age = fresh
        .iter()
        .map(|(id, report)| (*id, g.now.saturating_duration_since(report.taken)))
        .collect();
    let peers: BTreeMap<NodeId, PeerStatus> = fresh
        .into_iter()
        .map(|(id, report)| (id, report.status.clone()))
        .collect();
    let lease = state.lease;
    let epoch = lease.map_or(state.last_epoch, |l| l.epoch);
    let holder_position = lease
        .and_then(|l| peers.get(&l.holder))
        .filter(|p| p.pg.is_writable())
        .and_then(|p| p.pg.wal_position);
    let tracked = memory.track(g.me, &g.pg, lease.as_ref(), epoch, holder_position, g.now);
    Observation {
        me: g.me,
        lease,
        lease_clock: lease_clock_view(
            g.me,
            lease.as_ref(),
            memory.holder_clock(),
            g.lease_clock,
            config.ttl,
            g.now,
        ),
        database: state.database,
        config: config.clone(),
        members: state.members.clone(),
        peers,
        status_age,
        quiet_replicas: quiet_replicas(g.peers, horizon, g.now),
        data_dir: g.data_dir,
        pg: g.pg,
        following: g.following,
        down_for: tracked.down_for,
        start_failure: memory.start_failure(),
        pre_promote_refused: memory.pre_promote_refused(g.now),
        not_streaming_for: tracked.not_streaming_for,
        switchover: state.switchover.clone(),
        paused: state.paused,
        lease_unchanged_for: g.lease_clock.unchanged_for(g.now),
        needs_rewind: g.needs_rewind,
        rewind_retry_in: memory.rewind_retry_in(g.now),
        rejoin_blocked: g.rejoin_blocked,
        sync: state.sync.clone(),
        last_epoch: state.last_epoch,
        last_holder: state.last_holder,
        last_primary_position: tracked.last_primary_position,
        failover: state.failover.clone(),
        action: state.actions.get(&g.me).copied(),
        recorded_timeline: state.history.last().map_or(0, |s| s.new_timeline),
        restore: state.restore.clone(),
        restored_unix: (state.last_restore.as_ref())
            .filter(|r| r.ok)
            .map(|r| r.finished_unix),
        now_unix_ms: g.now_unix_ms,
    }
}

/// Judges the lease on this member's clock at `now`.
pub fn lease_clock_view(
    me: NodeId,
    lease: Option<&Lease>,
    holder_clock: &super::HolderClock,
    lease_clock: &crate::lease::LeaseObservation,
    ttl: Duration,
    now: Instant,
) -> LeaseClockView {
    use crate::lease::TakeoverRefused;
    match lease {
        None => LeaseClockView::Free,
        Some(lease) if lease.holder == me => match holder_clock.deadline(lease, ttl) {
            Some(deadline) if now < deadline => LeaseClockView::HeldByMe,
            _ => LeaseClockView::HeldByMeExpiring,
        },
        Some(lease) => match lease_clock.takeover(me, Some(lease), ttl, now) {
            Ok(Some(expected)) => LeaseClockView::Expired {
                holder: lease.holder,
                expected,
            },
            Ok(None) | Err(TakeoverRefused::AlreadyHolder { .. }) => LeaseClockView::Free,
            Err(TakeoverRefused::StillRenewed { .. }) => LeaseClockView::HeldByOther {
                holder: lease.holder,
            },
        },
    }
}

/// The members whose last answer, a running replica, arrived more than `horizon` ago (so
/// they do not count as answering) but no more than twice that.
pub fn quiet_replicas(
    reports: &crate::peers::PeerStatuses,
    horizon: Duration,
    now: Instant,
) -> BTreeSet<NodeId> {
    reports
        .iter()
        .filter(|(_, report)| report.status.pg.is_running_replica())
        .filter(|(_, report)| {
            let quiet_for = now.saturating_duration_since(report.received);
            quiet_for > horizon && quiet_for <= horizon * 2
        })
        .map(|(id, _)| *id)
        .collect()
}
