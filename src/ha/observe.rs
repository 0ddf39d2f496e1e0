//! The input of one HA cycle: everything `decide` may look at, gathered by the loop.
//! Plain data, built by [`observe`] from what the loop gathered; judging it is `decide`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::memory::Memory;

use crate::cluster::{
    DynamicConfig, Epoch, Failover, Lease, LeaseRef, Member, MemberAction, NodeId, Switchover,
    SyncRule, SyncState,
};
use crate::postgres::{DataDir, Lsn, PgStatus};

/// What one member reports of itself through the peer status exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node_id: NodeId,
    pub pg: PgStatus,
    pub data_dir: DataDir,
    /// The node this member's PostgreSQL streams from, if it is a replica.
    pub following: Option<NodeId>,
    /// The member's last HA sentence ("n2: replica of n1, streaming, 0 B behind"): what
    /// `list` shows to say why nothing happens.
    #[serde(default)]
    pub summary: String,
    /// Its `pre_promote` hook refused a promotion lately: it stands aside.
    #[serde(default)]
    pub pre_promote_refused: bool,
    /// Its interface carries the floating VIP.
    #[serde(default)]
    pub vip: bool,
}

/// The lease as this member judges it on its own clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseClockView {
    /// Nobody holds the lease.
    Free,
    /// This member holds it and its last committed renewal is recent enough.
    HeldByMe,
    /// This member holds it in the committed state, but its last committed renewal is older
    /// than `ttl - safety margin`: it must stop being writable now (DESIGN §3).
    HeldByMeExpiring,
    /// Another member holds it and has renewed within ttl.
    HeldByOther { holder: NodeId },
    /// Another member holds it but has not renewed for ttl: a takeover may be proposed,
    /// as a compare-and-set on `expected`.
    Expired { holder: NodeId, expected: LeaseRef },
}

/// Everything one cycle of `decide` looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub me: NodeId,
    /// The committed lease (for its epoch and holder) and this member's judgement of it.
    pub lease: Option<Lease>,
    pub lease_clock: LeaseClockView,
    /// Whether a database exists in this cluster (some member ran initdb and recorded it),
    /// and its system identifier.
    pub database: Option<u64>,
    pub config: DynamicConfig,
    pub members: BTreeMap<NodeId, Member>,
    /// Peer statuses that answered within `member_timeout` this cycle (not including me).
    pub peers: BTreeMap<NodeId, PeerStatus>,
    /// For each of `peers`, at most how long ago it took its status (my clock).
    pub status_age: BTreeMap<NodeId, Duration>,
    /// Members not in `peers` whose last answer, a running replica, arrived more than
    /// `member_timeout + loop_wait` ago but no more than twice that: a takeover waits for
    /// them, since a member that was answering a moment ago may be ahead of me (a poll slowed
    /// by load must not make a less advanced replica the healthiest).
    pub quiet_replicas: BTreeSet<NodeId>,
    /// My own PostgreSQL.
    pub data_dir: DataDir,
    pub pg: PgStatus,
    /// The node my PostgreSQL is configured to stream from, if any.
    pub following: Option<NodeId>,
    /// How long my PostgreSQL has been down while it should be running (for the crash
    /// restart budget); zero when running.
    pub down_for: Duration,
    /// Consecutive failed attempts to start my PostgreSQL as primary, and the last error.
    pub start_failure: Option<StartFailure>,
    /// Why my `pre_promote` hook refused a promotion, within the last
    /// [`REFUSAL_HOLD`](crate::hooks::REFUSAL_HOLD): I stand aside.
    pub pre_promote_refused: Option<String>,
    /// How long my PostgreSQL has run as a replica without streaming; zero otherwise.
    pub not_streaming_for: Duration,
    pub switchover: Option<Switchover>,
    /// Maintenance mode: no automatic actions.
    pub paused: bool,
    /// My data directory was last used by a primary (no `standby.signal` when the daemon
    /// started, or fenced since): it may hold WAL a new primary never had, so it must be
    /// rewound from the new primary before following it.
    pub needs_rewind: bool,
    /// A rewind failed lately without touching anything (its source unreachable, a
    /// password not yet replicated): how long until it may be tried again.
    pub rewind_retry_in: Option<Duration>,
    /// How long the committed lease (holder, epoch, renewal) has been unchanged, on my clock.
    /// During a switchover, only the named candidate may take a freshly released lease;
    /// after `ttl` anyone eligible may, so a dead candidate cannot stall the cluster.
    pub lease_unchanged_for: Duration,
    /// Why this member cannot rejoin automatically (a failed rewind), if so. Nothing is
    /// deleted: the operator decides (`pgquorum reinit`).
    pub rejoin_blocked: Option<String>,
    /// The synchronous rules as recorded (`cluster::sync`), `None` in asynchronous mode.
    pub sync: Option<SyncState>,
    /// The epoch of the current lease, or of the last one when the lease is free.
    pub last_epoch: Epoch,
    /// The holder of `last_epoch` (`cluster::ClusterState::last_holder`).
    pub last_holder: Option<NodeId>,
    /// The highest WAL position the lease holder of the current (or last) epoch reported as
    /// a primary: after it is lost, replicas are measured against it for
    /// `maximum_lag_on_failover` (as Patroni measures against the leader's last position).
    pub last_primary_position: Option<Lsn>,
    /// A pending forced failover (`pgquorum failover`).
    pub failover: Option<Failover>,
    /// An operation an operator asked of this member (`pgquorum restart`, `reinit`).
    pub action: Option<MemberAction>,
    /// The newest timeline the cluster's timeline history has a promotion for (0: none).
    pub recorded_timeline: u32,
    /// The wall clock, milliseconds since the Unix epoch: only for a scheduled switchover.
    pub now_unix_ms: u64,
}

impl Observation {
    /// The epoch of the current lease, or of the last one when it is free.
    pub fn current_epoch(&self) -> Epoch {
        self.lease.map_or(self.last_epoch, |l| l.epoch)
    }

    /// The synchronous rules a failover must satisfy now (see [`SyncState::rules_for`]).
    pub fn sync_rules(&self) -> Vec<SyncRule> {
        SyncState::rules_for(self.sync.as_ref(), self.current_epoch())
    }
}

/// Failed attempts to start PostgreSQL (as primary), counted by the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub attempts: u32,
    pub error: String,
}

/// Why a member is not eligible for promotion; shown in logs and `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    NoFailoverTag,
    NotReplica,
    LagTooHigh { lag: u64, limit: u64 },
    NotSynchronous,
    BetterCandidate { node: NodeId },
}

/// Helper: the highest WAL position among `peers` and me, for lag comparisons.
pub fn highest_position(obs: &Observation) -> Option<Lsn> {
    obs.peers
        .values()
        .filter_map(|p| p.pg.wal_position)
        .chain(obs.pg.wal_position)
        .chain(obs.last_primary_position)
        .max()
}

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
    let fresh: Vec<(NodeId, &crate::peers::PeerReport)> = g
        .peers
        .iter()
        .filter(|(_, report)| g.now.saturating_duration_since(report.received) <= horizon)
        .map(|(id, report)| (*id, report))
        .collect();
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
