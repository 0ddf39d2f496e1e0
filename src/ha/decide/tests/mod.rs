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

mod cases;
mod restore;
mod sweep;

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
        restore: None,
        restored_unix: None,
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
        archive: None,
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
        backrest: None,
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

#[test]
fn members_whose_slot_was_lost_are_cloned_afresh_unless_paused_or_archived() {
    let mut o = obs(1);
    o.members.get_mut(&n(3)).unwrap().pg_addr.clear(); // n3: a witness
    let lost = [n(2), n(3)];
    assert_eq!(
        super::reinit_after_lost_slots(&lost, &o),
        [n(2)],
        "witnesses have no data"
    );
    let paused = Observation {
        paused: true,
        ..o.clone()
    };
    assert!(
        super::reinit_after_lost_slots(&lost, &paused).is_empty(),
        "paused: no action"
    );
    let mut archived = o.clone();
    (archived.config.postgresql_parameters)
        .insert("restore_command".into(), "cp /archive/%f %p".into());
    assert!(
        super::reinit_after_lost_slots(&lost, &archived).is_empty(),
        "restore_command: the replica may catch up from the archive"
    );
    archived
        .config
        .postgresql_parameters
        .insert("restore_command".into(), " ".into());
    assert_eq!(super::reinit_after_lost_slots(&lost, &archived), [n(2)]);
    let mut backed_up = o.clone();
    backed_up.config.backup = Some(crate::cluster::BackupConfig {
        repo_path: "/mnt/b".into(),
        ..Default::default()
    });
    assert!(
        super::reinit_after_lost_slots(&lost, &backed_up).is_empty(),
        "[backup]: the replica catches up from the pgBackRest repository"
    );
}

/// Runs a table of cases: each gives the decision wanted and words its sentence must have,
/// and every outcome must keep the invariants.
fn check_table(cases: &[(&str, Observation, Decision, &str)]) {
    let mut failures = Vec::new();
    for (name, obs, want, says) in cases {
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
