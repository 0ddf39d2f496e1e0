//! `decide` as a table of cases (openraft engine-test style): one line per behaviour, built
//! from an observation where everything not mentioned is ordinary. Every case also checks the
//! safety invariant and the sentence; a sweep checks the invariant over all combinations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::SynchronousMode::{On, Quorum};
use crate::cluster::{DynamicConfig, Epoch, Lease, Member, Switchover, Tags};
use crate::postgres::DataDir::{Foreign, Initialised, Missing};
use crate::postgres::PgStatus;

use super::*;
use Decision as D;

// ---- builders ----------------------------------------------------------------------------

const EPOCH: u64 = 7;
const SEQ: u64 = 3;
const DB: u64 = 42;
/// The WAL position of the primary and replicas unless a case says otherwise.
const P: &str = "0/5000000";
/// Ahead of `P`, within the default `maximum_lag_on_failover`.
const AHEAD: &str = "0/5000100";

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn lsn(text: &str) -> Lsn {
    text.parse().unwrap()
}

/// The compare-and-set point of an expired lease (`expired(..)`).
fn seen() -> Option<LeaseRef> {
    Some(LeaseRef {
        epoch: Epoch(EPOCH),
        seq: SEQ,
    })
}

fn release(reason: &str) -> Decision {
    D::ReleaseLease {
        reason: reason.to_string(),
    }
}

fn member(id: u64) -> Member {
    Member {
        id: n(id),
        name: format!("n{id}"),
        peer_addr: format!("10.0.0.{id}:7400"),
        api_addr: format!("10.0.0.{id}:8008"),
        pg_addr: format!("10.0.0.{id}:5432"),
        tags: Tags::default(),
    }
}

/// Member `me` of n1..n3 in a cluster whose database 42 exists; my data is database 42's,
/// PostgreSQL is stopped, the lease is free, no peer answered, default config.
fn obs(me: u64) -> Observation {
    Observation {
        me: n(me),
        lease: None,
        lease_clock: LeaseClockView::Free,
        database: Some(DB),
        config: DynamicConfig::default(),
        members: (1..=3).map(|id| (n(id), member(id))).collect(),
        peers: BTreeMap::new(),
        status_age: BTreeMap::new(),
        quiet_replicas: BTreeSet::new(),
        data_dir: Initialised { system_id: DB },
        pg: PgStatus::default(),
        following: None,
        down_for: Duration::ZERO,
        not_streaming_for: Duration::ZERO,
        start_failure: None,
        pre_promote_refused: None,
        switchover: None,
        paused: false,
        needs_rewind: false,
        rewind_retry_in: None,
        rejoin_blocked: None,
        // Unchanged for ttl: a status taken in the last 500 ms is fresh (see `aged`).
        lease_unchanged_for: Duration::from_secs(2),
        sync: None,
        last_epoch: Epoch(EPOCH),
        last_holder: None,
        last_primary_position: None,
        failover: None,
        action: None,
        recorded_timeline: 0,
        now_unix_ms: 1_000_000,
    }
}

/// The lease as committed and judged by me; `.lease(..)` resolves `Mine` against `me`.
#[derive(Clone, Copy, Debug)]
enum L {
    Free,
    Mine,
    Expiring,
    Other(u64),
    Expired(u64),
}

fn free() -> L {
    L::Free
}
fn mine() -> L {
    L::Mine
}
fn expiring() -> L {
    L::Expiring
}
fn held_by_other(id: u64) -> L {
    L::Other(id)
}
fn expired(id: u64) -> L {
    L::Expired(id)
}

fn writable_pg(at: &str) -> PgStatus {
    PgStatus {
        running: true,
        timeline: 1,
        wal_position: Some(lsn(at)),
        ..PgStatus::default()
    }
}

fn recovering_pg(at: &str) -> PgStatus {
    PgStatus {
        running: true,
        in_recovery: true,
        timeline: 1,
        wal_position: Some(lsn(at)),
        replayed: Some(lsn(at)),
        streaming: true,
        pending_restart: false,
        replay_delay_ms: None,
        primary_end: Some(lsn(at)),
    }
}

fn peer_with(pg: PgStatus) -> PeerStatus {
    PeerStatus {
        node_id: n(0),
        pg,
        data_dir: Initialised { system_id: DB },
        following: None,
        summary: String::new(),
        pre_promote_refused: false,
        vip: false,
    }
}

/// A peer reporting a writable primary at `at`.
fn primary(at: &str) -> PeerStatus {
    peer_with(writable_pg(at))
}

/// A peer reporting a streaming replica at `at`.
fn replica(at: &str) -> PeerStatus {
    peer_with(recovering_pg(at))
}

/// A peer streaming at `at` from `upstream`.
fn replica_following(at: &str, upstream: u64) -> PeerStatus {
    PeerStatus {
        following: Some(n(upstream)),
        ..replica(at)
    }
}

/// A switchover requested from `from`, to `to` if given.
fn switchover(from: u64, to: Option<u64>) -> Switchover {
    Switchover {
        from: n(from),
        to: to.map(n),
        at_unix_ms: None,
    }
}

/// A peer whose PostgreSQL is down but last reached `at`.
fn stopped(at: &str) -> PeerStatus {
    peer_with(PgStatus {
        wal_position: Some(lsn(at)),
        ..PgStatus::default()
    })
}

/// A replica at `at` of another database.
fn other_db_replica(at: &str) -> PeerStatus {
    PeerStatus {
        data_dir: Initialised { system_id: 99 },
        ..replica(at)
    }
}

trait Build: Sized {
    fn primary(self) -> Self;
    fn replica_of(self, upstream: u64, at: &str) -> Self;
    fn not_streaming(self) -> Self;
    fn following(self, upstream: Option<u64>) -> Self;
    fn wal_unknown(self) -> Self;
    fn lease(self, lease: L) -> Self;
    fn peer(self, id: u64, status: PeerStatus) -> Self;
    fn tags(self, id: u64, nofailover: bool, failover_priority: u32) -> Self;
    fn tag_nofailover(self) -> Self;
    /// My pre_promote hook refused lately, for `why`.
    fn refused(self, why: &str) -> Self;
    fn no_database(self) -> Self;
    fn data(self, data_dir: DataDir) -> Self;
    fn down_for(self, secs: u64) -> Self;
    fn paused(self) -> Self;
    fn sync_mode(self, mode: SynchronousMode) -> Self;
    fn lag_limit(self, bytes: u64) -> Self;
    fn needs_rewind(self) -> Self;
    fn blocked(self, reason: &str) -> Self;
    fn switching(self, switchover: Switchover) -> Self;
    fn unchanged_for_ms(self, ms: u64) -> Self;
    /// Synchronous rules recorded in lease epoch `epoch`: `(members, quorum)` each.
    fn synced(self, epoch: u64, rules: &[(&[u64], u32)]) -> Self;
    /// Member `holder` held the latest lease epoch.
    fn last_held_by(self, holder: u64) -> Self;
    /// Peer `id`'s status was taken `ms` ago.
    fn aged(self, id: u64, ms: u64) -> Self;
}

impl Build for Observation {
    /// Running writable at `0/5000000`.
    fn primary(mut self) -> Self {
        self.pg = writable_pg(P);
        self.following = None;
        self
    }
    fn replica_of(mut self, upstream: u64, at: &str) -> Self {
        self.pg = recovering_pg(at);
        self.following = Some(n(upstream));
        self
    }
    fn not_streaming(mut self) -> Self {
        self.pg.streaming = false;
        self
    }
    fn following(mut self, upstream: Option<u64>) -> Self {
        self.following = upstream.map(n);
        self
    }
    fn wal_unknown(mut self) -> Self {
        self.pg.wal_position = None;
        self
    }
    fn lease(mut self, lease: L) -> Self {
        let held = |holder: NodeId| {
            Some(Lease {
                holder,
                epoch: Epoch(EPOCH),
                seq: SEQ,
            })
        };
        (self.lease, self.lease_clock) = match lease {
            L::Free => (None, LeaseClockView::Free),
            L::Mine => (held(self.me), LeaseClockView::HeldByMe),
            L::Expiring => (held(self.me), LeaseClockView::HeldByMeExpiring),
            L::Other(id) => (held(n(id)), LeaseClockView::HeldByOther { holder: n(id) }),
            L::Expired(id) => (
                held(n(id)),
                LeaseClockView::Expired {
                    holder: n(id),
                    expected: seen().unwrap(),
                },
            ),
        };
        self
    }
    fn peer(mut self, id: u64, status: PeerStatus) -> Self {
        self.status_age.insert(n(id), Duration::from_millis(100));
        self.peers.insert(
            n(id),
            PeerStatus {
                node_id: n(id),
                ..status
            },
        );
        self
    }
    fn tags(mut self, id: u64, nofailover: bool, failover_priority: u32) -> Self {
        let tags = &mut self.members.get_mut(&n(id)).unwrap().tags;
        (tags.nofailover, tags.failover_priority) = (nofailover, failover_priority);
        self
    }
    fn tag_nofailover(self) -> Self {
        let me = self.me.0;
        self.tags(me, true, 1)
    }
    fn refused(mut self, why: &str) -> Self {
        self.pre_promote_refused = Some(why.to_string());
        self
    }
    fn no_database(mut self) -> Self {
        self.database = None;
        self
    }
    fn data(mut self, data_dir: DataDir) -> Self {
        self.data_dir = data_dir;
        self
    }
    fn down_for(mut self, secs: u64) -> Self {
        self.down_for = Duration::from_secs(secs);
        self
    }
    fn paused(mut self) -> Self {
        self.paused = true;
        self
    }
    fn needs_rewind(mut self) -> Self {
        self.needs_rewind = true;
        self
    }
    fn blocked(mut self, reason: &str) -> Self {
        self.rejoin_blocked = Some(reason.to_string());
        self
    }
    fn switching(mut self, switchover: Switchover) -> Self {
        self.switchover = Some(switchover);
        self
    }
    fn unchanged_for_ms(mut self, ms: u64) -> Self {
        self.lease_unchanged_for = Duration::from_millis(ms);
        self
    }
    fn synced(mut self, epoch: u64, rules: &[(&[u64], u32)]) -> Self {
        let rules = rules
            .iter()
            .map(|(members, quorum)| crate::cluster::SyncRule {
                members: members.iter().map(|id| n(*id)).collect(),
                quorum: *quorum,
            })
            .collect();
        self.sync = Some(crate::cluster::SyncState {
            epoch: Epoch(epoch),
            rules,
        });
        self
    }
    fn last_held_by(mut self, holder: u64) -> Self {
        self.last_holder = Some(n(holder));
        self
    }
    fn aged(mut self, id: u64, ms: u64) -> Self {
        self.status_age.insert(n(id), Duration::from_millis(ms));
        self
    }
    fn sync_mode(mut self, mode: SynchronousMode) -> Self {
        self.config.synchronous_mode = mode;
        self
    }
    fn lag_limit(mut self, bytes: u64) -> Self {
        self.config.maximum_lag_on_failover = bytes;
        self
    }
}

// ---- invariants checked on every outcome -------------------------------------------------

/// Never two primaries: a decision that leaves or makes me writable needs my lease, renewing
/// needs a fresh one, only a writable holder of a fresh lease keeps the VIP, the lease is
/// released only once I am not writable, and writable without a fresh lease of my own is
/// always fenced. The sentence names me.
fn check_invariants(obs: &Observation, out: &Outcome) -> Result<(), String> {
    let clock = &obs.lease_clock;
    let mine = matches!(
        clock,
        LeaseClockView::HeldByMe | LeaseClockView::HeldByMeExpiring
    );
    if out.decision.leaves_me_writable() && !mine {
        return Err(format!(
            "{:?} without holding the lease ({clock:?})",
            out.decision
        ));
    }
    let writable = obs.pg.running && !obs.pg.in_recovery;
    if out.decision.leaves_me_writable() && !writable && *clock != LeaseClockView::HeldByMe {
        return Err(format!(
            "{:?} makes me writable on a lease that is not fresh ({clock:?})",
            out.decision
        ));
    }
    let expiring_not_writable = *clock == LeaseClockView::HeldByMeExpiring && !writable;
    if out.decision == D::ReclaimLease && !expiring_not_writable {
        return Err(format!("reclaiming with {clock:?}, writable: {writable}"));
    }
    if out.decision == D::RenewLease && *clock != LeaseClockView::HeldByMe {
        return Err(format!("renewing a lease that is not fresh ({clock:?})"));
    }
    if out.decision.keeps_vip() && !(writable && *clock == LeaseClockView::HeldByMe) {
        return Err(format!(
            "{:?} keeps the VIP without a writable PostgreSQL and a fresh lease ({clock:?})",
            out.decision
        ));
    }
    if writable && matches!(out.decision, D::ReleaseLease { .. }) {
        return Err("releasing the lease while still writable".to_string());
    }
    if writable && *clock != LeaseClockView::HeldByMe && !matches!(out.decision, D::Fence { .. }) {
        return Err(format!(
            "writable with {clock:?} but not fenced: {:?}",
            out.decision
        ));
    }
    let me = name(obs, obs.me);
    if !out.sentence.starts_with(&format!("{me}: ")) || out.sentence.len() <= me.len() + 2 {
        return Err(format!(
            "sentence does not start with {me:?}: {:?}",
            out.sentence
        ));
    }
    Ok(())
}

// ---- the table ---------------------------------------------------------------------------

#[test]
fn decisions() {
    #[rustfmt::skip]
    let cases: Vec<(&str, Observation, Decision, &str)> = vec![
        // 1. fencing comes first
        ("writable while another holds the lease fences and follows the holder",
            obs(1).primary().lease(held_by_other(2)),
            D::Fence { follow: Some(n(2)) }, "(n2 holds it, epoch 7); fencing (demoting) now"),
        ("writable with an expiring lease of its own fences",
            obs(1).primary().lease(expiring()),
            D::Fence { follow: None }, "expiring without a committed renewal"),
        ("writable while the lease of another expired fences without following",
            obs(1).primary().lease(expired(2)),
            D::Fence { follow: None }, "fencing (demoting) now"),
        ("writable while the lease is free fences",
            obs(1).primary(),
            D::Fence { follow: None }, "n1: writable without the lease"),
        ("writable without the lease fences even when paused",
            obs(1).primary().lease(held_by_other(2)).paused(),
            D::Fence { follow: Some(n(2)) }, "then following n2"),
        // 2. paused
        ("paused replica does not take an expired lease",
            obs(3).replica_of(2, P).lease(expired(2)).paused(),
            D::Paused, "paused (maintenance mode)"),
        ("paused stopped member does not start postgres",
            obs(3).lease(held_by_other(2)).peer(2, primary(P)).paused(),
            D::Paused, "no automatic action"),
        ("paused holder keeps renewing so pausing never demotes it",
            obs(1).primary().lease(mine()).paused(),
            D::RenewLease, "renewing lease epoch 7 only"),
        ("paused holder does not restart a stopped postgres",
            obs(1).lease(mine()).paused(),
            D::Paused, "PostgreSQL stopped"),
        // bootstrap: one eligible member, the lowest id that answers
        ("the lowest answering eligible member bootstraps",
            obs(1).no_database().data(Missing).lease(free()).peer(2, stopped(P)),
            D::AcquireLease { expected: None }, "taking the lease to bootstrap"),
        ("a higher id leaves the bootstrap to a lower one that answers",
            obs(2).no_database().data(Missing).lease(free()).peer(1, stopped(P)),
            D::Wait, "leaving the bootstrap to n1"),
        ("a higher id bootstraps when the lower one does not answer",
            obs(2).no_database().data(Missing).lease(free()).peer(3, stopped(P)),
            D::AcquireLease { expected: None }, "taking the lease to bootstrap"),
        ("a nofailover member never bootstraps",
            obs(1).no_database().data(Missing).lease(free()).tag_nofailover(),
            D::Wait, "may never be primary"),
        ("a nofailover lower id does not hold back the bootstrap",
            obs(2).no_database().data(Missing).lease(free()).peer(1, stopped(P)).tags(1, true, 1),
            D::AcquireLease { expected: None }, "taking the lease to bootstrap"),
        // planned switchover
        ("the primary hands over once the named candidate streams from it and caught up",
            obs(1).primary().lease(mine()).switching(switchover(1, Some(2)))
                .peer(2, replica_following(P, 1)).peer(3, replica_following(P, 1)),
            D::HandOver { to: n(2) }, "handing lease epoch 7 over to n2"),
        ("the primary keeps renewing while the candidate is far behind",
            obs(1).primary().lease(mine()).switching(switchover(1, Some(2)))
                .peer(2, replica_following("0/1000000", 1)),
            D::RenewLease, "waits for it to catch up (67108864 B behind)"),
        ("the primary keeps renewing while the candidate streams from someone else",
            obs(1).primary().lease(mine()).switching(switchover(1, Some(2)))
                .peer(2, replica_following(P, 3)),
            D::RenewLease, "waits for it to catch up"),
        ("with no candidate named the best replica is chosen",
            obs(1).primary().lease(mine()).switching(switchover(1, None))
                .peer(2, replica_following("0/4FFFFFF", 1)).peer(3, replica_following(P, 1)),
            D::HandOver { to: n(3) }, "over to n3"),
        ("quorum mode: no handover before this tenure records the candidate as synchronous",
            obs(1).primary().lease(mine()).sync_mode(Quorum).synced(EPOCH - 1, &[(&[2, 3], 1)])
                .switching(switchover(1, Some(2))).peer(2, replica_following(P, 1)),
            D::RenewLease, "switchover to n2 waits: it is not in the recorded synchronous set"),
        ("quorum mode: nor while it is missing from the recorded set",
            obs(1).primary().lease(mine()).sync_mode(Quorum).synced(EPOCH, &[(&[3], 1)])
                .switching(switchover(1, Some(2))).peer(2, replica_following(P, 1)),
            D::RenewLease, "not in the recorded synchronous set (ANY 1 of nodes [3])"),
        ("quorum mode: a recorded synchronous candidate that caught up gets the lease",
            obs(1).primary().lease(mine()).sync_mode(Quorum).synced(EPOCH, &[(&[2, 3], 1)])
                .switching(switchover(1, Some(2))).peer(2, replica_following(P, 1)),
            D::HandOver { to: n(2) }, "handing lease epoch 7 over to n2"),
        ("quorum mode: with none named, only a recorded synchronous member is chosen",
            obs(1).primary().lease(mine()).sync_mode(Quorum).synced(EPOCH, &[(&[2], 1)])
                .switching(switchover(1, None))
                .peer(2, replica_following("0/4FFFFFF", 1)).peer(3, replica_following(P, 1)),
            D::HandOver { to: n(2) }, "over to n2"),
        ("during an untargeted switchover nobody defers to the old primary",
            obs(3).replica_of(1, P).lease(free()).switching(switchover(1, None))
                .peer(1, replica(P)).peer(2, replica("0/4FFFFFF")).unchanged_for_ms(600),
            D::TakeOver { expected: None }, "taking over as the healthiest replica"),
        ("the named candidate takes the freshly released lease",
            obs(2).replica_of(1, P).lease(free()).switching(switchover(1, Some(2)))
                .unchanged_for_ms(100),
            D::TakeOver { expected: None }, "taking over as the switchover candidate"),
        ("another replica leaves a freshly released lease to the candidate",
            obs(3).replica_of(1, "0/6000000").lease(free()).switching(switchover(1, Some(2)))
                .unchanged_for_ms(100),
            D::Wait, "switchover to n2 in progress"),
        ("after ttl the reservation lapses and the healthiest replica takes over",
            obs(3).replica_of(1, P).lease(free()).switching(switchover(1, Some(2)))
                .unchanged_for_ms(2000),
            D::TakeOver { expected: None }, "taking over as the healthiest replica"),
        // rejoin of a former primary
        ("a stopped former primary rewinds from the new primary before following it",
            obs(1).needs_rewind().lease(held_by_other(2)).peer(2, primary(P)),
            D::Rewind { source: n(2) }, "rewinding from n2"),
        ("a running former primary in recovery rewinds from the new primary",
            obs(1).replica_of(3, P).needs_rewind().lease(held_by_other(2)).peer(2, primary(P)),
            D::Rewind { source: n(2) }, "rewinding from n2"),
        ("a rewind that failed cleanly lately is not tried again before its back-off",
            Observation { rewind_retry_in: Some(Duration::from_secs(3)), ..obs(1).needs_rewind()
                .lease(held_by_other(2)).peer(2, primary(P)) },
            D::Wait, "the rewind from n2 failed, trying again in 3s"),
        ("a former primary with no new primary yet starts as a standby to join the race",
            obs(1).needs_rewind().lease(expired(2)),
            D::StartReplica { follow: None }, "no primary to follow yet"),
        ("a failed rewind blocks rejoin and says why",
            obs(1).needs_rewind().blocked("pg_rewind failed").lease(held_by_other(2)).peer(2, primary(P)),
            D::Wait, "cannot rejoin automatically: pg_rewind failed"),
        // 3. the holder
        ("holder with no database and an empty data dir bootstraps",
            obs(1).no_database().data(Missing).lease(mine()),
            D::Bootstrap, "lease epoch 7"),
        ("holder with an empty data dir while a database exists releases",
            obs(1).data(Missing).lease(mine()),
            release("my data directory is empty while database 42 exists"), "releasing"),
        ("holder with a foreign data dir releases",
            obs(1).data(Foreign).lease(mine()),
            release("my data directory is not a PostgreSQL data directory"), "releasing"),
        ("holder with another database's data releases",
            obs(1).data(Initialised { system_id: 99 }).lease(mine()),
            release("my data directory belongs to another database (system id 99, the \
                     cluster's is 42)"), "releasing"),
        ("holder writable on another database's data fences before releasing",
            obs(1).primary().data(Initialised { system_id: 99 }).lease(mine()),
            D::Fence { follow: None }, "fencing (demoting) before releasing it"),
        ("holder running a writable primary renews",
            obs(1).primary().lease(mine()),
            D::RenewLease, "n1: primary, renewing lease epoch 7"),
        ("holder whose initdb was not recorded renews and records it",
            obs(1).no_database().primary().lease(mine()),
            D::RenewLease, "recording the database"),
        ("holder whose initdb was not recorded starts it as primary",
            obs(1).no_database().lease(mine()),
            D::StartPrimary, "starting it as primary"),
        ("holder running in recovery promotes",
            obs(2).replica_of(1, P).lease(mine()),
            D::Promote, "promoting"),
        ("holder whose pre_promote hook refused releases instead of promoting",
            obs(2).replica_of(1, P).lease(mine()).refused("exit status: 1"),
            release("the pre_promote hook refused promotion: exit status: 1"),
            "another member takes over"),
        ("holder in recovery with an expiring lease renews before promoting",
            obs(2).replica_of(1, P).lease(expiring()),
            D::ReclaimLease, "no renewal of mine has committed within its deadline; renewing it before promoting"),
        ("holder whose postgres is down briefly starts it as primary",
            obs(1).lease(mine()).down_for(4),
            D::StartPrimary, "down for 4s"),
        // A cut-off member after fencing, or a restarted daemon: never "starting it as
        // primary" on a lease that may have expired, only a renewal; its commit decides.
        ("holder with an expiring lease and postgres down renews before starting it",
            obs(1).lease(expiring()).down_for(1),
            D::ReclaimLease, "renewing it before starting PostgreSQL as primary (down for 1s)"),
        ("holder with an expiring lease and postgres down too long releases it",
            obs(1).lease(expiring()).down_for(5),
            release("PostgreSQL has been down for 5s (primary_start_timeout 5s)"),
            "another member takes over"),
        ("holder with an expiring lease and no database renews before bootstrapping",
            obs(1).no_database().data(Missing).lease(expiring()),
            D::ReclaimLease, "renewing it before bootstrapping"),
        ("holder whose postgres is down for primary_start_timeout releases",
            obs(1).lease(mine()).down_for(5),
            release("PostgreSQL has been down for 5s (primary_start_timeout 5s)"),
            "another member takes over"),
        // 4. not the holder: no data
        ("empty member with no database takes a free lease to bootstrap",
            obs(1).no_database().data(Missing),
            D::AcquireLease { expected: None }, "lease is free"),
        ("empty member with no database takes an expired lease by compare-and-set",
            obs(1).no_database().data(Missing).lease(expired(2)),
            D::AcquireLease { expected: seen() }, "lease of n2 expired (epoch 7)"),
        ("empty member waits while the holder initialises the database",
            obs(2).no_database().data(Missing).lease(held_by_other(1)),
            D::Wait, "waiting for n1 to initialise the database"),
        ("empty member clones from the holder's writable primary",
            obs(3).data(Missing).lease(held_by_other(2)).peer(2, primary(P)),
            D::Clone { source: n(2) }, "cloning from n2"),
        ("empty member does not clone from a holder that is not yet writable",
            obs(3).data(Missing).lease(held_by_other(2)).peer(2, replica(P)),
            D::Wait, "n2 holds lease epoch 7 but reports no writable primary"),
        ("empty member does not clone from a holder that did not answer",
            obs(3).data(Missing).lease(held_by_other(2)),
            D::Wait, "clone from: n2 holds lease epoch 7 but did not answer"),
        ("empty member does not clone while the lease is free",
            obs(3).data(Missing).peer(2, primary(P)),
            D::Wait, "clone from: lease is free"),
        // 4. not the holder: unusable data
        ("foreign data dir is left untouched",
            obs(3).data(Foreign).lease(held_by_other(2)),
            D::Wait, "not a PostgreSQL data directory; left untouched"),
        ("data of another database waits for reinit",
            obs(3).data(Initialised { system_id: 99 }).lease(held_by_other(2)).peer(2, primary(P)),
            D::Wait, "needs `pgquorum reinit`"),
        // 4. not the holder: postgres stopped
        ("stopped member starts as a replica of the holder's primary",
            obs(3).lease(held_by_other(2)).peer(2, primary(P)),
            D::StartReplica { follow: Some(n(2)) }, "starting it as a replica of n2"),
        ("stopped member starts without upstream when the holder is not writable",
            obs(3).lease(held_by_other(2)).peer(2, stopped(P)),
            D::StartReplica { follow: None }, "no primary to follow yet"),
        ("stopped member starts without upstream when the lease expired",
            obs(3).lease(expired(2)),
            D::StartReplica { follow: None }, "lease of n2 expired"),
        // 4. not the holder: running replica
        ("streaming replica of the holder is idle",
            obs(3).replica_of(2, P).lease(held_by_other(2)).peer(2, primary(P)),
            D::Idle, "n3: replica of n2, streaming, 0 B behind"),
        ("replica of the holder reports lag and a broken stream",
            obs(3).replica_of(2, P).not_streaming().lease(held_by_other(2))
                .peer(2, primary("0/5000400")),
            D::Idle, "not streaming, 1024 B behind"),
        ("replica of a holder that did not answer is idle with unknown lag",
            obs(3).replica_of(2, P).lease(held_by_other(2)),
            D::Idle, "lag unknown"),
        ("replica of the old primary re-points to the holder",
            obs(3).replica_of(1, P).lease(held_by_other(2)).peer(2, primary(P)),
            D::Follow { leader: n(2) }, "re-pointing to n2"),
        ("replica with no upstream points at the holder",
            obs(3).replica_of(1, P).following(None).lease(held_by_other(2)).peer(2, primary(P)),
            D::Follow { leader: n(2) }, "following nobody"),
        ("replica does not re-point to a holder that is not yet writable",
            obs(3).replica_of(1, P).lease(held_by_other(2)).peer(2, replica(P)),
            D::Idle, "not re-pointing yet"),
        // 4. takeover
        ("healthiest replica takes an expired lease by compare-and-set",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, replica("0/4000000")),
            D::TakeOver { expected: seen() },
            "n3: lease of n2 expired (epoch 7); taking over as the healthiest replica (0/5000000)"),
        ("healthiest replica takes a free lease",
            obs(3).replica_of(2, P).peer(1, replica("0/4000000")),
            D::TakeOver { expected: None }, "lease is free; taking over"),
        ("lone replica takes an expired lease",
            obs(3).replica_of(2, P).lease(expired(2)),
            D::TakeOver { expected: seen() }, "taking over"),
        ("replica tagged nofailover does not take over",
            obs(3).replica_of(2, P).lease(expired(2)).tag_nofailover(),
            D::Wait, "not eligible: tagged nofailover"),
        ("replica whose pre_promote hook refused does not take over",
            obs(3).replica_of(2, P).lease(expired(2)).refused("exit status: 1"),
            D::Wait, "not eligible: the pre_promote hook refused promotion: exit status: 1"),
        ("an equally advanced lower id takes precedence",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, replica(P)),
            D::Wait, "n1 is a better candidate"),
        ("a peer whose pre_promote hook refused is passed over",
            obs(3).replica_of(2, P).lease(expired(2))
                .peer(1, PeerStatus { pre_promote_refused: true, ..replica(P) }),
            D::TakeOver { expected: seen() }, "taking over as the healthiest replica"),
        ("replica with failover_priority 0 does not take over",
            obs(3).replica_of(2, P).lease(expired(2)).tags(3, false, 0),
            D::Wait, "not eligible: failover_priority is 0"),
        ("replica with an unknown WAL position does not take over",
            obs(3).replica_of(2, P).wal_unknown().lease(expired(2)),
            D::Wait, "not eligible: my WAL position is unknown"),
        ("synchronous mode without a recorded synchronous set: no takeover",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(On),
            D::Wait, "only a member of the recorded synchronous set may be promoted; none is \
                      recorded"),
        ("quorum mode without a recorded synchronous set: no takeover",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(Quorum),
            D::Wait, "synchronous set"),
        // Synchronous modes: the recorded rules (epoch 7 is the expired lease's). The lease
        // expired 2 s after it was last seen renewed; its holder stopped 0.5 s before, so
        // statuses younger than 500 ms are fresh.
        ("on: the recorded synchronous standby takes over alone",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(On).synced(EPOCH, &[(&[3], 1)])
                .unchanged_for_ms(2000),
            D::TakeOver { expected: seen() }, "taking over as the healthiest replica"),
        ("on: a member outside the set may take over when the set's member is behind it",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(On).synced(EPOCH, &[(&[1], 1)])
                .peer(1, replica("0/4000000")).aged(1, 100).unchanged_for_ms(2000),
            D::TakeOver { expected: seen() }, "taking over"),
        ("on: the synchronous standby is ahead: it must take over, not me",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(On).synced(EPOCH, &[(&[1], 1)])
                .peer(1, replica(AHEAD)).aged(1, 100).unchanged_for_ms(2000),
            D::Wait, "synchronous member n1 is ahead (0/5000100; I am at 0/5000000)"),
        ("on: the synchronous standby did not answer: no takeover",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(On).synced(EPOCH, &[(&[1], 1)])
                .unchanged_for_ms(2000),
            D::Wait, "synchronous set [n1] needs 1 of its members to report a position taken \
                      after the old primary stopped, 0 did"),
        ("quorum: a status taken before the old primary stopped does not count",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(Quorum)
                .synced(EPOCH, &[(&[1, 3], 1)]).peer(1, replica(P)).aged(1, 600)
                .unchanged_for_ms(2000),
            D::Wait, "needs 2 of its members"),
        ("quorum: both members of ANY 1 answered fresh; the most advanced takes over",
            obs(3).replica_of(2, AHEAD).lease(expired(2)).sync_mode(Quorum)
                .synced(EPOCH, &[(&[1, 3], 1)]).peer(1, replica(P)).aged(1, 400)
                .unchanged_for_ms(2000),
            D::TakeOver { expected: seen() }, "taking over"),
        ("quorum: while the set changes, every recorded rule must be met",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(Quorum)
                .synced(EPOCH, &[(&[3], 1), (&[1, 3], 1)]).unchanged_for_ms(2000),
            D::Wait, "synchronous set [n1, n3] needs 2"),
        ("a recorded rule without synchronous standby blocks failover",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(Quorum)
                .synced(EPOCH, &[(&[], 0)]).unchanged_for_ms(2000),
            D::Wait, "recorded \"no synchronous standby\" (synchronous mode), so no member is \
                      known to hold every acknowledged commit"),
        ("the last holder takes its released lease back despite \"no synchronous standby\"",
            obs(3).replica_of(2, P).following(None).lease(L::Free).sync_mode(Quorum)
                .synced(EPOCH, &[(&[], 0)]).last_held_by(3).unchanged_for_ms(200),
            D::TakeOver { expected: None }, "taking over"),
        ("... or an earlier tenure's rules (it promoted and released before recording any)",
            obs(3).replica_of(2, P).following(None).lease(L::Free).sync_mode(Quorum)
                .synced(EPOCH - 1, &[(&[1, 2], 1)]).last_held_by(3).unchanged_for_ms(200),
            D::TakeOver { expected: None }, "taking over"),
        ("... and its expired lease",
            obs(3).replica_of(2, P).following(None).lease(expired(3)).sync_mode(Quorum)
                .synced(EPOCH, &[(&[], 0)]).last_held_by(3).unchanged_for_ms(2000),
            D::TakeOver { expected: seen() }, "taking over"),
        ("the last holder does not defer to an equally advanced peer that may not take over",
            obs(3).replica_of(2, P).following(None).lease(L::Free).sync_mode(Quorum)
                .synced(EPOCH, &[(&[], 0)]).last_held_by(3).peer(1, replica(P))
                .unchanged_for_ms(600),
            D::TakeOver { expected: None }, "taking over"),
        ("another member still may not, on that record",
            obs(3).replica_of(2, P).following(None).lease(L::Free).sync_mode(Quorum)
                .synced(EPOCH, &[(&[], 0)]).last_held_by(1).unchanged_for_ms(200),
            D::Wait, "no member is known to hold every acknowledged commit"),
        ("rules of an earlier tenure do not cover what the new primary acknowledged",
            obs(3).replica_of(2, P).lease(expired(2)).sync_mode(On).synced(EPOCH - 1, &[(&[3], 1)])
                .unchanged_for_ms(2000),
            D::Wait, "no synchronous standby"),
        ("a released lease: statuses taken after the release count",
            obs(3).replica_of(2, AHEAD).sync_mode(Quorum).synced(EPOCH, &[(&[1, 3], 1)])
                .peer(1, replica(P)).aged(1, 100).unchanged_for_ms(200),
            D::TakeOver { expected: None }, "taking over"),
        ("a replica waits for the others' positions taken after the old primary stopped",
            obs(3).replica_of(2, AHEAD).lease(expired(2)).peer(1, replica(P)).aged(1, 600),
            D::Wait, "waiting for a position from n1 taken after the old primary stopped"),
        ("a replica waits for one that answered a moment ago but not within member_timeout",
            Observation { quiet_replicas: [n(1)].into(),
                ..obs(3).replica_of(2, AHEAD).lease(expired(2)) },
            D::Wait, "n1 stopped answering a moment ago, as a replica; waiting for it (at most \
                      3s after its last answer) in case it is ahead"),
        ("the takeover names the others' positions",
            obs(3).replica_of(2, AHEAD).lease(expired(2)).peer(1, replica(P))
                .peer(2, stopped("0/4000000")),
            D::TakeOver { expected: seen() }, "taking over as the healthiest replica \
                (0/5000100); n1 at 0/5000000"),
        ("a replica behind the new primary's timeline that does not stream is rewound",
            Observation { not_streaming_for: Duration::from_secs(3), ..obs(3).replica_of(2, P)
                .not_streaming().lease(held_by_other(2))
                .peer(2, peer_with(PgStatus { timeline: 2, ..writable_pg(P) })) },
            D::Rewind { source: n(2) }, "on timeline 1 while n2 is on timeline 2"),
        ("a replica briefly not streaming after a timeline switch is left alone",
            Observation { not_streaming_for: Duration::from_secs(1), ..obs(3).replica_of(2, P)
                .not_streaming().lease(held_by_other(2))
                .peer(2, peer_with(PgStatus { timeline: 2, ..writable_pg(P) })) },
            D::Idle, "replica of n2, not streaming"),
        ("a stalled replica whose rewind failed lately waits for the back-off",
            Observation { not_streaming_for: Duration::from_secs(9),
                rewind_retry_in: Some(Duration::from_secs(2)), ..obs(3).replica_of(2, P)
                .not_streaming().lease(held_by_other(2))
                .peer(2, peer_with(PgStatus { timeline: 2, ..writable_pg(P) })) },
            D::Idle, "replica of n2, not streaming"),
        ("a member that could not be rewound stays out by default",
            obs(3).replica_of(1, P).lease(held_by_other(2)).peer(2, primary(P))
                .blocked("pg_rewind failed part-way"),
            D::Wait, "cannot rejoin automatically: pg_rewind failed part-way"),
        ("with remove_data_directory_on_rewind_failure it is cloned afresh",
            Observation { config: DynamicConfig { remove_data_directory_on_rewind_failure: true,
                ..DynamicConfig::default() }, ..obs(3).lease(held_by_other(2))
                .peer(2, primary(P)).blocked("pg_rewind failed part-way") },
            D::Reclone { source: n(2) }, "moving the data directory aside and cloning from n2"),
        // Operators' requests.
        ("a forced failover makes the named replica take over despite its lag",
            Observation { failover: Some(crate::cluster::Failover { to: n(3) }),
                ..obs(3).replica_of(2, P).lease(expired(2)).peer(2, stopped("0/6000000")) },
            D::TakeOver { expected: seen() }, "taking over as the candidate of a forced failover"),
        ("a forced failover overrides the synchronous set",
            Observation { failover: Some(crate::cluster::Failover { to: n(3) }),
                ..obs(3).replica_of(2, P).lease(expired(2)).sync_mode(On)
                    .synced(EPOCH, &[(&[1], 1)]) },
            D::TakeOver { expected: seen() }, "forced failover"),
        ("others leave the lease to the forced failover's candidate",
            Observation { failover: Some(crate::cluster::Failover { to: n(1) }),
                ..obs(3).replica_of(2, AHEAD).lease(expired(2)) },
            D::Wait, "forced failover to n1 requested"),
        ("a forced failover still waits for a member that reports itself writable",
            Observation { failover: Some(crate::cluster::Failover { to: n(3) }),
                ..obs(3).replica_of(2, P).lease(expired(2)).peer(1, primary(P)) },
            D::Wait, "n1 still reports itself writable"),
        ("a scheduled switchover waits for its time",
            Observation { switchover: Some(Switchover { at_unix_ms: Some(2_000_000),
                ..switchover(1, Some(2)) }), ..obs(1).primary().lease(mine())
                .peer(2, replica_following(P, 1)) },
            D::RenewLease, "switchover scheduled at 1970-01-01T00:33:20Z"),
        ("a scheduled switchover whose time has come hands over",
            Observation { switchover: Some(Switchover { at_unix_ms: Some(900_000),
                ..switchover(1, Some(2)) }), ..obs(1).primary().lease(mine())
                .peer(2, replica_following(P, 1)) },
            D::HandOver { to: n(2) }, "handing lease epoch 7 over to n2"),
        ("a restart of the primary keeps its lease",
            Observation { action: Some(crate::cluster::MemberAction::Restart),
                ..obs(1).primary().lease(mine()) },
            D::Restart { primary: true }, "restarting PostgreSQL as primary, keeping lease epoch 7"),
        ("a restart of a replica",
            Observation { action: Some(crate::cluster::MemberAction::Restart),
                ..obs(3).replica_of(1, P).lease(held_by_other(1)).paused() },
            D::Restart { primary: false }, "restarting PostgreSQL as replica"),
        ("a restart with PostgreSQL stopped is dropped",
            Observation { action: Some(crate::cluster::MemberAction::Restart), ..obs(3) },
            D::DropAction { action: crate::cluster::MemberAction::Restart,
                reason: "PostgreSQL is not running".into() }, "nothing to restart"),
        ("a restart never lets an unleased writable member be",
            Observation { action: Some(crate::cluster::MemberAction::Restart),
                ..obs(1).primary().lease(expiring()) },
            D::Fence { follow: None }, "fencing"),
        ("a reinit of a replica clones the primary afresh",
            Observation { action: Some(crate::cluster::MemberAction::Reinit),
                ..obs(3).replica_of(1, P).lease(held_by_other(1)).peer(1, primary(P)) },
            D::Reinit { source: n(1) }, "removing my data directory and cloning from n1"),
        ("a reinit waits for a primary",
            Observation { action: Some(crate::cluster::MemberAction::Reinit),
                ..obs(3).replica_of(1, P).lease(expired(1)) },
            D::Wait, "waiting for a primary to clone from"),
        ("the holder refuses a reinit",
            Observation { action: Some(crate::cluster::MemberAction::Reinit),
                ..obs(1).primary().lease(mine()) },
            D::DropAction { action: crate::cluster::MemberAction::Reinit,
                reason: "this member holds the lease (the primary is never re-initialised; \
                         switch over first)".into() }, "reinit refused"),
        ("an interrupted bootstrap is finished by the member that has the data",
            obs(1).no_database().replica_of(1, P).following(None),
            D::AcquireLease { expected: None }, "taking the lease to finish the bootstrap"),
        ("a member with old data leaves an interrupted bootstrap to a lower id",
            obs(2).no_database().peer(1, stopped(P)),
            D::Wait, "no database is recorded and lease is free; leaving the bootstrap to n1"),
        ("a member that is not registered yet does not bootstrap",
            Observation { members: BTreeMap::new(), ..obs(2).no_database().data(Missing) },
            D::Wait, "not bootstrapping: this member is not registered yet"),
        ("a primary whose PostgreSQL failed to start once tries again",
            Observation { start_failure: Some(super::super::observe::StartFailure { attempts: 1,
                error: "exited with 1".into() }), ..obs(1).lease(mine()) },
            D::StartPrimary, "starting it as primary"),
        ("a primary whose PostgreSQL failed to start twice releases the lease at once",
            Observation { start_failure: Some(super::super::observe::StartFailure { attempts: 2,
                error: "exited with 1".into() }), ..obs(1).lease(mine()) },
            release("PostgreSQL failed to start 2 times in a row (last: exited with 1)"),
            "releasing it so another member takes over"),
        ("replica lagging beyond maximum_lag_on_failover does not take over",
            obs(3).replica_of(2, P).lease(expired(2)).peer(2, stopped("0/6000000")),
            D::Wait, "16777216 B behind the highest known position 0/6000000, more than \
                      maximum_lag_on_failover (1048576 B)"),
        ("replicas are measured against the lost primary's last known position",
            Observation { last_primary_position: Some(lsn("0/6000000")),
                ..obs(3).replica_of(2, P).lease(expired(2)) },
            D::Wait, "16777216 B behind the highest known position 0/6000000"),
        ("replica lagging exactly maximum_lag_on_failover may take over",
            obs(3).replica_of(2, P).lease(expired(2)).lag_limit(0x1000)
                .peer(2, stopped("0/5001000")),
            D::TakeOver { expected: seen() }, "taking over"),
        ("replica does not take over before a database is recorded",
            obs(3).no_database().replica_of(2, P).peer(1, replica(P)),
            D::Wait, "leaving the bootstrap to n1"),
        ("replica does not take over while a peer still reports itself writable",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, primary(P)),
            D::Wait, "n1 still reports itself writable"),
        // 4. takeover tie-breaks
        ("a peer further ahead is the better candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, replica(AHEAD)),
            D::Wait, "n1 is a better candidate (at 0/5000100 with failover_priority 1; I am at \
                      0/5000000 with 1)"),
        ("at equal WAL a peer with higher failover_priority is the better candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, replica(P)).tags(1, false, 2),
            D::Wait, "n1 is a better candidate"),
        ("at equal WAL my higher failover_priority wins",
            obs(1).replica_of(2, P).lease(expired(2)).peer(3, replica(P)).tags(1, false, 2),
            D::TakeOver { expected: seen() }, "taking over"),
        ("at equal WAL and priority the lower node id is the better candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, replica(P)),
            D::Wait, "n1 is a better candidate"),
        ("at equal WAL and priority my lower node id wins",
            obs(1).replica_of(2, P).lease(expired(2)).peer(3, replica(P)),
            D::TakeOver { expected: seen() }, "taking over"),
        ("a higher WAL position beats a higher priority",
            obs(3).replica_of(2, AHEAD).lease(expired(2)).peer(1, replica(P)).tags(1, false, 9),
            D::TakeOver { expected: seen() }, "healthiest replica (0/5000100)"),
        ("a peer ahead but tagged nofailover is not a candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, replica(AHEAD)).tags(1, true, 1),
            D::TakeOver { expected: seen() }, "taking over"),
        ("a peer ahead with failover_priority 0 is not a candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, replica(AHEAD)).tags(1, false, 0),
            D::TakeOver { expected: seen() }, "taking over"),
        ("a peer ahead whose postgres is down is not a candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, stopped(AHEAD)),
            D::TakeOver { expected: seen() }, "taking over"),
        ("a peer ahead on another database is not a candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(1, other_db_replica(AHEAD)),
            D::TakeOver { expected: seen() }, "taking over"),
        ("a peer ahead that is not a registered member is not a candidate",
            obs(3).replica_of(2, P).lease(expired(2)).peer(4, replica(AHEAD)),
            D::TakeOver { expected: seen() }, "taking over"),
    ];

    let mut failures = Vec::new();
    for (name, obs, want, says) in &cases {
        let out = decide(obs);
        if out.decision != *want {
            failures.push(format!(
                "{name}:\n    want {want:?}\n    got  {:?}: {}",
                out.decision, out.sentence
            ));
        } else if !out.sentence.contains(says) {
            failures.push(format!(
                "{name}:\n    sentence {:?}\n    lacks    {says:?}",
                out.sentence
            ));
        }
        if let Err(broken) = check_invariants(obs, &out) {
            failures.push(format!("{name}: invariant broken: {broken}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---- properties --------------------------------------------------------------------------

/// Every observation in `all`, once with each of `values` applied by `set`.
fn vary<T: Clone>(
    all: Vec<Observation>,
    values: &[T],
    set: fn(Observation, T) -> Observation,
) -> Vec<Observation> {
    all.into_iter()
        .flat_map(|o| values.iter().map(move |v| set(o.clone(), v.clone())))
        .collect()
}

/// Over every combination of lease clock, PostgreSQL state, data dir, database, pause, down
/// time, holder status and synchronous mode: never writable without the lease, and every
/// sentence names me.
#[test]
fn never_two_primaries() {
    let leases = [free(), mine(), expiring(), held_by_other(2), expired(2)];
    let data_dirs = [
        Missing,
        Foreign,
        Initialised { system_id: DB },
        Initialised { system_id: 99 },
    ];
    let holders = [None, Some(primary(P)), Some(replica(P)), Some(stopped(P))];
    let mut all = vec![obs(3)];
    all = vary(all, &leases, Observation::lease);
    all = vary(all, &[0, 1, 2], |o, pg| match pg {
        0 => o,
        1 => o.replica_of(2, P),
        _ => o.primary(),
    });
    all = vary(all, &data_dirs, Observation::data);
    all = vary(all, &[None, Some(DB)], |o, database| Observation {
        database,
        ..o
    });
    all = vary(all, &[false, true], |o, paused| Observation { paused, ..o });
    all = vary(all, &[0, 5, 10], Observation::down_for);
    all = vary(all, &holders, |o, peer| match peer {
        Some(peer) => o.peer(2, peer),
        None => o,
    });
    all = vary(all, &[SynchronousMode::Off, On], Observation::sync_mode);
    assert_eq!(all.len(), 5 * 3 * 4 * 2 * 2 * 3 * 4 * 2);
    for o in &all {
        let out = decide(o);
        if let Err(broken) = check_invariants(o, &out) {
            panic!("{broken}\nsentence: {}\nobservation: {o:#?}", out.sentence);
        }
    }
}

#[test]
fn sentences_name_members_and_fall_back_to_node_ids() {
    let mut o = obs(3)
        .replica_of(2, P)
        .lease(held_by_other(2))
        .peer(2, primary(P));
    o.members.get_mut(&n(3)).unwrap().name = "pg-east".into();
    o.members.get_mut(&n(2)).unwrap().name = "pg-west".into();
    assert_eq!(
        decide(&o).sentence,
        "pg-east: replica of pg-west, streaming, 0 B behind"
    );

    o.members.remove(&n(3));
    assert_eq!(
        decide(&o).sentence,
        "n3: replica of pg-west, streaming, 0 B behind"
    );
}

#[test]
fn unregistered_member_never_takes_over() {
    let o = obs(4).replica_of(2, P).lease(expired(2));
    let out = decide(&o);
    assert_eq!(out.decision, D::Wait);
    assert!(
        out.sentence.starts_with("n4: ") && out.sentence.contains("not a registered member"),
        "{}",
        out.sentence
    );
}

#[test]
fn durations_in_sentences_are_rounded() {
    for (ms, want) in [
        (450, "450ms"),
        (1_234, "1s 200ms"),
        (9_058, "9s"),
        (5_000, "5s"),
    ] {
        let d = Duration::from_millis(ms) + Duration::from_nanos(670_360);
        assert_eq!(super::human(d), want, "{ms} ms");
    }
}
