//! Decides what this member does next with its PostgreSQL and the leader lease. Reads one
//! [`Observation`]; emits one [`Decision`] and the sentence the loop logs for the cycle
//! (Patroni's one line per cycle). Performs no IO and reads no clock: time arrives already
//! judged in `lease_clock` and `down_for`. Acting on the decision is `execute`'s job.
//!
//! The rules, in priority order (safety first, DESIGN §3):
//!
//! 1. **Fence.** Writable (running, not in recovery) without a valid lease of my own, that is
//!    with any `lease_clock` but `HeldByMe`: stop being writable now. This applies even when
//!    paused: maintenance mode suspends automation, never the one-writable-primary guarantee.
//! 2. **Restore.** While a restore of the cluster is under way (`cluster::restore`), each
//!    member stops PostgreSQL and puts its data directory away, then only the restore's
//!    runner acts: it takes the lease and restores (`decide/restore.rs`).
//! 3. **Paused.** No automatic action, with one exception: a writable holder keeps renewing
//!    its lease, otherwise its lease would expire and rule 1 would demote it.
//! 4. **Holder** (`HeldByMe`, or `HeldByMeExpiring` with PostgreSQL not writable): with a
//!    fresh lease, bootstrap, renew, promote or start as primary; with an expiring one,
//!    reclaim it first (a committed renewal makes it fresh again); or release the lease at
//!    once when this member cannot serve (demoting first if writable).
//! 5. **Not the holder**: clone, start as a replica, follow the holder, or take a free or
//!    expired lease when this member is the healthiest eligible one; otherwise wait.

use std::time::Duration;

use humantime_serde::re::humantime::format_duration;

use crate::cluster::{LeaseRef, MemberAction, NodeId, SynchronousMode};
use crate::postgres::{DataDir, Lsn};

use super::observe::{highest_position, LeaseClockView, Observation, PeerStatus};

mod holder;
mod other;
mod restore;
mod takeover;

#[cfg(test)]
mod tests;

use holder::as_holder;
use other::as_other;
use takeover::take_over;

/// What this member does in one HA cycle. `execute` carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to change this cycle.
    Idle,
    /// Paused (maintenance mode): no automatic action.
    Paused,
    /// No database exists yet and the lease is free (or expired): take it to become the
    /// bootstrap primary.
    AcquireLease { expected: Option<LeaseRef> },
    /// I hold the lease, no database exists, my data dir is Missing: initdb, start as
    /// primary, record it.
    Bootstrap,
    /// I hold the lease and run a writable primary: renew the lease (and record the database
    /// if `obs.database` is still `None`).
    RenewLease,
    /// I hold the lease by the record, but no renewal of my own committed within the
    /// holder's deadline (`HeldByMeExpiring`: a restarted daemon, or a member cut off from
    /// the quorum) and PostgreSQL is not writable: renew it, and nothing else. Once the
    /// renewal commits, the next cycle starts, bootstraps or promotes; a member that cannot
    /// reach the quorum never decides to become writable on a lease it may have lost.
    ReclaimLease,
    /// I hold a fresh lease, my data is Initialised but PostgreSQL is not running, and it has
    /// been down for less than `config.primary_start_timeout`: start it as primary (the
    /// executor also renews the lease).
    StartPrimary,
    /// I hold a fresh lease and my PostgreSQL runs in recovery: promote it (the executor
    /// renews too, and reserves the new timeline in the same Raft round).
    Promote,
    /// I am writable but do not hold a valid lease (or hold it but must release it): stop
    /// being writable now. `follow` is the current holder if another member holds it.
    Fence { follow: Option<NodeId> },
    /// I hold the lease but cannot serve: no data while a database exists, a Foreign data
    /// dir, a data dir of another database, or PostgreSQL down for `primary_start_timeout`.
    /// Release it so another member takes over at once. Never returned while I am writable
    /// (that case is fenced first).
    ReleaseLease { reason: String },
    /// No data dir, a database exists, and `source` (the lease holder) runs a writable
    /// primary according to its peer status: clone it.
    Clone { source: NodeId },
    /// Data Initialised, PostgreSQL not running, I do not hold the lease: start as a replica
    /// following `follow` (the holder if it runs a writable primary per its peer status).
    StartReplica { follow: Option<NodeId> },
    /// Running replica whose upstream is not the holder, and the holder runs a writable
    /// primary: re-point to it.
    Follow { leader: NodeId },
    /// My data directory was last a primary's and `source` (the holder) now runs a writable
    /// primary: stop, rewind from it with pg_rewind, and start following it.
    Rewind { source: NodeId },
    /// The lease is free or expired, a database exists, I am a running replica and the
    /// healthiest eligible member: take the lease (compare-and-set on `expected`; `None`
    /// when free).
    TakeOver { expected: Option<LeaseRef> },
    /// My data directory could not be rewound and the configuration allows a fresh clone:
    /// move it aside and clone from `source` (the holder, a writable primary).
    Reclone { source: NodeId },
    /// Planned switchover: I hold the lease, run a writable primary, and the candidate has
    /// caught up. Stop PostgreSQL (a fast shutdown sends the remaining WAL to connected
    /// standbys), then release the lease for the candidate.
    HandOver { to: NodeId },
    /// An operator asked for a restart: restart PostgreSQL in its current role (a primary
    /// keeps renewing its lease meanwhile).
    Restart { primary: bool },
    /// An operator asked to re-initialise this replica: remove its data directory and clone
    /// `source` (the holder, a writable primary) afresh.
    Reinit { source: NodeId },
    /// An operator's request that cannot or need not be carried out: clear it.
    DropAction {
        action: MemberAction,
        reason: String,
    },
    /// A restore of the cluster was requested: stop PostgreSQL, move my data directory
    /// aside or `remove` it, report it done for `restore`, then `release` the lease (I hold
    /// it and another member restores).
    StandDown {
        restore: u64,
        remove: bool,
        release: bool,
    },
    /// Every member stopped for `restore`, which I run, and I hold a fresh lease: restore
    /// from the repository to its target and become the primary on a new timeline.
    Restore { restore: u64 },
    /// Waiting; the sentence says for what.
    Wait,
}

impl Decision {
    /// True for the decisions that leave or make this member writable. `decide` returns
    /// them only while this member holds a fresh lease (`HeldByMe`).
    pub fn leaves_me_writable(&self) -> bool {
        matches!(
            self,
            Decision::RenewLease
                | Decision::Promote
                | Decision::StartPrimary
                | Decision::Bootstrap
                | Decision::Restore { .. }
        )
    }

    /// True for the one decision under which this member may carry the floating VIP: a
    /// healthy writable primary renewing its lease (DESIGN §5). Every other decision removes
    /// the VIP before it acts, so it goes first on fencing, a switchover or a restart.
    pub fn keeps_vip(&self) -> bool {
        matches!(self, Decision::RenewLease)
    }

    /// Decisions that build a data directory (initdb, a clone, a rewind).
    pub fn builds_data_dir(&self) -> bool {
        matches!(
            self,
            Decision::Bootstrap
                | Decision::Clone { .. }
                | Decision::Rewind { .. }
                | Decision::Reinit { .. }
                | Decision::Reclone { .. }
                | Decision::Restore { .. }
        )
    }

    /// Decisions that legitimately take long (they renew the lease while they run).
    pub fn takes_long(&self) -> bool {
        self.builds_data_dir() || matches!(self, Decision::StartPrimary | Decision::Promote)
    }

    /// The decision's name, for log spans: `RenewLease`, `Promote`.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Idle => "Idle",
            Decision::Paused => "Paused",
            Decision::AcquireLease { .. } => "AcquireLease",
            Decision::Bootstrap => "Bootstrap",
            Decision::RenewLease => "RenewLease",
            Decision::ReclaimLease => "ReclaimLease",
            Decision::StartPrimary => "StartPrimary",
            Decision::Promote => "Promote",
            Decision::Fence { .. } => "Fence",
            Decision::ReleaseLease { .. } => "ReleaseLease",
            Decision::Clone { .. } => "Clone",
            Decision::StartReplica { .. } => "StartReplica",
            Decision::Follow { .. } => "Follow",
            Decision::Rewind { .. } => "Rewind",
            Decision::TakeOver { .. } => "TakeOver",
            Decision::Reclone { .. } => "Reclone",
            Decision::HandOver { .. } => "HandOver",
            Decision::Restart { .. } => "Restart",
            Decision::Reinit { .. } => "Reinit",
            Decision::DropAction { .. } => "DropAction",
            Decision::StandDown { .. } => "StandDown",
            Decision::Restore { .. } => "Restore",
            Decision::Wait => "Wait",
        }
    }
}

/// A decision and the one human sentence that explains it, naming this member, its role
/// and the lease epoch where relevant: `n2: primary, renewing lease epoch 7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub sentence: String,
}

/// Decides this cycle's action from `obs` alone; see the module doc for the rules.
pub fn decide(obs: &Observation) -> Outcome {
    if let Some(fence) = fence(obs) {
        return fence;
    }
    if let Some(restore) = &obs.restore {
        return restore::restoring(obs, restore);
    }
    if let Some(outcome) = member_action(obs) {
        return outcome;
    }
    if obs.paused {
        return paused(obs);
    }
    match &obs.lease_clock {
        LeaseClockView::HeldByMe | LeaseClockView::HeldByMeExpiring => as_holder(obs),
        LeaseClockView::HeldByOther { holder } => as_other(obs, NotMine::Held(*holder)),
        LeaseClockView::Free => {
            let what = "lease is free".to_string();
            as_other(
                obs,
                NotMine::Vacant(Vacancy {
                    expected: None,
                    what,
                }),
            )
        }
        LeaseClockView::Expired { holder, expected } => {
            let what = format!(
                "lease of {} expired (epoch {})",
                name(obs, *holder),
                expected.epoch
            );
            let expected = Some(*expected);
            as_other(obs, NotMine::Vacant(Vacancy { expected, what }))
        }
    }
}

/// The lease as seen by a member that does not hold it.
enum NotMine {
    /// Another member holds it and renews it.
    Held(NodeId),
    /// It may be taken, as a compare-and-set on `expected`.
    Vacant(Vacancy),
}

struct Vacancy {
    expected: Option<LeaseRef>,
    /// For the sentence: "lease is free", "lease of n2 expired (epoch 7)".
    what: String,
}

/// Rule 1: writable without a valid lease of my own. `None` when this member may stay as it
/// is as far as fencing goes.
fn fence(obs: &Observation) -> Option<Outcome> {
    if !obs.pg.is_writable() {
        return None;
    }
    let (follow, why) = match &obs.lease_clock {
        LeaseClockView::HeldByMe => return None,
        LeaseClockView::HeldByMeExpiring => (
            None,
            format!(
                "my lease, epoch {}, is expiring without a committed renewal",
                epoch(obs)
            ),
        ),
        LeaseClockView::HeldByOther { holder } => (
            Some(*holder),
            format!("{} holds it, epoch {}", name(obs, *holder), epoch(obs)),
        ),
        LeaseClockView::Expired { holder, expected } => (
            None,
            format!(
                "lease of {} expired, epoch {}",
                name(obs, *holder),
                expected.epoch
            ),
        ),
        LeaseClockView::Free => (None, "it is free".to_string()),
    };
    let then = follow.map_or(String::new(), |h| {
        format!(", then following {}", name(obs, h))
    });
    Some(say(
        obs,
        Decision::Fence { follow },
        format!("writable without the lease ({why}); fencing (demoting) now{then}"),
    ))
}

/// An operator's restart or reinit of this member (also while paused: it is the
/// operator's own action). Reached only when rule 1 did not fence, so a writable member here
/// holds a fresh lease.
fn member_action(obs: &Observation) -> Option<Outcome> {
    let action = obs.action?;
    let holder = obs.lease.is_some_and(|l| l.holder == obs.me);
    Some(match action {
        MemberAction::Restart if !obs.pg.running => {
            let reason = "PostgreSQL is not running".to_string();
            let text = format!("restart requested but {reason}; nothing to restart");
            say(obs, Decision::DropAction { action, reason }, text)
        }
        MemberAction::Restart => {
            let primary = obs.pg.is_writable();
            let role = if primary {
                format!("primary, keeping lease epoch {}", epoch(obs))
            } else {
                "replica".to_string()
            };
            let text = format!("restart requested; restarting PostgreSQL as {role}");
            say(obs, Decision::Restart { primary }, text)
        }
        MemberAction::Reinit if holder => {
            let reason = "this member holds the lease (the primary is never re-initialised; \
                          switch over first)"
                .to_string();
            let text = format!("reinit refused: {reason}");
            say(obs, Decision::DropAction { action, reason }, text)
        }
        MemberAction::Reinit => match obs.lease.map(|l| l.holder) {
            Some(source) if runs_primary(obs, source) => {
                let text = format!(
                    "reinit requested; removing my data directory and cloning from {}",
                    name(obs, source)
                );
                say(obs, Decision::Reinit { source }, text)
            }
            _ => say(
                obs,
                Decision::Wait,
                "reinit requested; waiting for a primary to clone from".to_string(),
            ),
        },
    })
}

/// Rule 2: maintenance mode. Reached only when rule 1 did not fence, so a writable member
/// here holds the lease; it keeps renewing so that pausing never demotes the primary.
fn paused(obs: &Observation) -> Outcome {
    if obs.pg.is_writable() {
        let text = format!(
            "paused (maintenance mode); primary, renewing lease epoch {} only",
            epoch(obs)
        );
        return say(obs, Decision::RenewLease, text);
    }
    let role = if obs.pg.running {
        "replica"
    } else {
        "PostgreSQL stopped"
    };
    say(
        obs,
        Decision::Paused,
        format!("paused (maintenance mode); {role}, no automatic action"),
    )
}

/// Why the holder cannot be cloned or followed, for a sentence.
fn no_primary(obs: &Observation, lease: &NotMine) -> String {
    match lease {
        NotMine::Held(holder) => {
            let answer = if obs.peers.contains_key(holder) {
                "reports no writable primary"
            } else {
                "did not answer"
            };
            format!(
                "{} holds lease epoch {} but {answer}",
                name(obs, *holder),
                epoch(obs)
            )
        }
        NotMine::Vacant(vacancy) => vacancy.what.clone(),
    }
}

fn say(obs: &Observation, decision: Decision, text: String) -> Outcome {
    Outcome {
        decision,
        sentence: format!("{}: {text}", name(obs, obs.me)),
    }
}

/// A member's name, or `n{id}` when it is not registered.
fn name(obs: &Observation, id: NodeId) -> String {
    obs.members
        .get(&id)
        .map_or_else(|| format!("n{id}"), |m| m.name.clone())
}

/// The committed lease epoch, for sentences.
fn epoch(obs: &Observation) -> String {
    obs.lease
        .map_or_else(|| "unknown".to_string(), |l| l.epoch.to_string())
}

fn priority(obs: &Observation, id: NodeId) -> u32 {
    obs.members.get(&id).map_or(0, |m| m.tags.failover_priority)
}

/// Whether member `id` may ever become primary: registered, not `nofailover`, and
/// `failover_priority` above 0.
fn may_be_primary(obs: &Observation, id: NodeId) -> bool {
    obs.members
        .get(&id)
        .is_some_and(|m| !m.tags.nofailover && m.tags.failover_priority > 0)
}

/// The lowest-id member that answers, may be primary and has a lower id than mine: who
/// bootstraps instead of me.
fn first_eligible_below_me(obs: &Observation) -> Option<NodeId> {
    obs.peers
        .keys()
        .copied()
        .filter(|id| *id < obs.me && may_be_primary(obs, *id))
        .min()
}

/// Whether `id` answered this cycle and reports a writable primary.
fn runs_primary(obs: &Observation, id: NodeId) -> bool {
    obs.peers.get(&id).is_some_and(|p| p.pg.is_writable())
}

fn peer_position(obs: &Observation, id: NodeId) -> Option<Lsn> {
    obs.peers.get(&id)?.pg.wal_position
}

/// A duration for a sentence: to the millisecond below a second, else to a tenth of a
/// second ("9s 100ms", not "9s 58ms 670us 360ns").
fn human(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let rounded = if ms < 1000 { ms } else { ms / 100 * 100 };
    format_duration(Duration::from_millis(rounded)).to_string()
}

/// Of the members whose slot PostgreSQL invalidated (`lost`), those to clone afresh: every
/// one, unless the cluster is paused (no automatic action) or a `restore_command` is set,
/// the operator's or `[backup]`'s (a replica may then catch up from the archive instead).
pub(crate) fn reinit_after_lost_slots(lost: &[NodeId], obs: &Observation) -> Vec<NodeId> {
    let restore = (obs.config.postgresql_parameters.get("restore_command"))
        .is_some_and(|c| !c.trim().is_empty())
        || obs.config.backup.is_some();
    if obs.paused || restore {
        return Vec::new();
    }
    lost.iter()
        .copied()
        .filter(|id| obs.members.get(id).is_some_and(|m| !m.is_witness()))
        .collect()
}
