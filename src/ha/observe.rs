//! The input of one HA cycle: everything `decide` may look at, gathered by the loop.
//! Plain data, built by `gather::observe` from what the loop gathered; judging it is
//! `decide`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::{
    DynamicConfig, Epoch, Failover, Lease, LeaseRef, Member, MemberAction, NodeId, Switchover,
    SyncRule, SyncState,
};
use crate::postgres::{DataDir, Lsn, PgStatus};

pub use crate::peers::PeerStatus;

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
    /// A restore of the cluster under way (`pgquorum restore --to`).
    pub restore: Option<crate::cluster::Restore>,
    /// When the last successful restore ended (Unix seconds): backups taken before it may
    /// not be on the restored line of history, so no replica is made of them.
    pub restored_unix: Option<u64>,
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
