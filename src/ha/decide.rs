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
//! 2. **Paused.** No automatic action, with one exception: a writable holder keeps renewing
//!    its lease, otherwise its lease would expire and rule 1 would demote it.
//! 3. **Holder** (`HeldByMe`, or `HeldByMeExpiring` with PostgreSQL not writable): with a
//!    fresh lease, bootstrap, renew, promote or start as primary; with an expiring one,
//!    reclaim it first (a committed renewal makes it fresh again); or release the lease at
//!    once when this member cannot serve (demoting first if writable).
//! 4. **Not the holder**: clone, start as a replica, follow the holder, or take a free or
//!    expired lease when this member is the healthiest eligible one; otherwise wait.

use std::time::Duration;

use humantime_serde::re::humantime::format_duration;

use crate::cluster::{LeaseRef, MemberAction, NodeId, SynchronousMode};
use crate::postgres::{DataDir, Lsn};

use super::observe::{highest_position, LeaseClockView, Observation, PeerStatus};

#[cfg(test)]
mod tests;

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
    /// Waiting; the sentence says for what.
    Wait,
}

impl Decision {
    /// True for the decisions that leave or make this member writable. `decide` returns
    /// them only while this member holds a fresh lease (`HeldByMe`).
    pub fn leaves_me_writable(&self) -> bool {
        matches!(
            self,
            Decision::RenewLease | Decision::Promote | Decision::StartPrimary | Decision::Bootstrap
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

/// Rule 3: this member holds the lease and PostgreSQL is not writable, or holds it with a
/// fresh clock and PostgreSQL is writable.
fn as_holder(obs: &Observation) -> Outcome {
    let epoch = epoch(obs);
    let release = |reason: String| {
        // Safety: never release while writable, or a successor could overlap us. Demote
        // first; the next cycle, no longer writable, releases.
        if obs.pg.is_writable() {
            let text = format!(
                "holding lease epoch {epoch} but {reason}; fencing (demoting) before releasing it"
            );
            return say(obs, Decision::Fence { follow: None }, text);
        }
        let text = format!(
            "holding lease epoch {epoch} but {reason}; releasing it so another member takes over"
        );
        say(obs, Decision::ReleaseLease { reason }, text)
    };
    // Becoming writable needs a fresh lease: with an expiring one, renew it and nothing
    // else this cycle; the cycle after a committed renewal becomes writable.
    let expiring = obs.lease_clock == LeaseClockView::HeldByMeExpiring;
    let reclaim = |before: &str| {
        let text = format!(
            "holding lease epoch {epoch}, but no renewal of mine has committed within its \
             deadline; renewing it before {before}"
        );
        say(obs, Decision::ReclaimLease, text)
    };
    match (obs.data_dir, obs.database) {
        (DataDir::Missing, None) => {
            if expiring {
                return reclaim("bootstrapping");
            }
            let text =
                format!("holding lease epoch {epoch}, no database exists; bootstrapping (initdb)");
            return say(obs, Decision::Bootstrap, text);
        }
        (DataDir::Missing, Some(db)) => {
            return release(format!(
                "my data directory is empty while database {db} exists"
            ));
        }
        (DataDir::Foreign, _) => {
            return release("my data directory is not a PostgreSQL data directory".to_string());
        }
        (DataDir::Initialised { system_id }, Some(db)) if system_id != db => {
            return release(format!(
                "my data directory belongs to another database (system id {system_id}, the \
                 cluster's is {db})"
            ));
        }
        // Initialised with no database recorded: a crash between initdb and recording it.
        // The data is ours; the executor records it once the primary runs.
        (DataDir::Initialised { .. }, _) => {}
    }
    if obs.pg.is_writable() && obs.lease_clock == LeaseClockView::HeldByMe {
        if let Some(outcome) = switchover(obs) {
            return outcome;
        }
    }
    if obs.pg.is_writable() {
        let record = if obs.database.is_none() {
            ", recording the database"
        } else {
            ""
        };
        say(
            obs,
            Decision::RenewLease,
            format!("primary, renewing lease epoch {epoch}{record}"),
        )
    } else if let (true, Some(why)) = (obs.pg.running, &obs.pre_promote_refused) {
        release(format!("the pre_promote hook refused promotion: {why}"))
    } else if obs.pg.running && expiring {
        reclaim("promoting")
    } else if obs.pg.running {
        let text = format!("holding lease epoch {epoch} as a replica; promoting");
        say(obs, Decision::Promote, text)
    } else if let Some(failure) = obs
        .start_failure
        .as_ref()
        .filter(|f| f.attempts >= START_ATTEMPTS)
    {
        release(format!(
            "PostgreSQL failed to start {} times in a row (last: {})",
            failure.attempts, failure.error
        ))
    } else if obs.down_for < obs.config.primary_start_timeout && expiring {
        reclaim(&format!(
            "starting PostgreSQL as primary (down for {})",
            human(obs.down_for)
        ))
    } else if obs.down_for < obs.config.primary_start_timeout {
        let text = format!(
            "holding lease epoch {epoch}, PostgreSQL down for {}; starting it as primary \
             (primary_start_timeout {})",
            human(obs.down_for),
            human(obs.config.primary_start_timeout)
        );
        say(obs, Decision::StartPrimary, text)
    } else {
        release(format!(
            "PostgreSQL has been down for {} (primary_start_timeout {})",
            human(obs.down_for),
            human(obs.config.primary_start_timeout)
        ))
    }
}

/// Rule 4: another member holds the lease, or it is free or expired.
fn as_other(obs: &Observation, lease: NotMine) -> Outcome {
    // The holder, if its own status says it runs a writable primary: the only source to
    // clone from or stream from.
    let primary = match &lease {
        NotMine::Held(holder) if runs_primary(obs, *holder) => Some(*holder),
        _ => None,
    };
    let wait = |text: String| say(obs, Decision::Wait, text);
    let system_id = match (obs.data_dir, obs.database, &lease) {
        (DataDir::Missing, None, NotMine::Vacant(v)) => {
            // Who bootstraps: an eligible member (a nofailover member never becomes primary,
            // not even the first time), and among those that answer, the lowest id — the
            // host that ran `init` while it is up — so members do not race for it.
            if !obs.members.contains_key(&obs.me) {
                return wait(format!(
                    "no database exists and {}; not bootstrapping: this member is not \
                     registered yet",
                    v.what
                ));
            }
            if !may_be_primary(obs, obs.me) {
                return wait(format!(
                    "no database exists and {}; not bootstrapping: this member may never be \
                     primary (nofailover or failover_priority 0)",
                    v.what
                ));
            }
            if let Some(first) = first_eligible_below_me(obs) {
                return wait(format!(
                    "no database exists and {}; leaving the bootstrap to {}",
                    v.what,
                    name(obs, first)
                ));
            }
            let text = format!(
                "no database exists and {}; taking the lease to bootstrap",
                v.what
            );
            return say(
                obs,
                Decision::AcquireLease {
                    expected: v.expected,
                },
                text,
            );
        }
        (DataDir::Missing, None, NotMine::Held(holder)) => {
            return wait(format!(
                "waiting for {} to initialise the database",
                name(obs, *holder)
            ));
        }
        (DataDir::Missing, Some(_), _) => {
            return match primary {
                Some(source) => {
                    let text = format!(
                        "no data directory; cloning from {}, primary with lease epoch {}",
                        name(obs, source),
                        epoch(obs)
                    );
                    say(obs, Decision::Clone { source }, text)
                }
                None => wait(format!(
                    "no data directory; waiting for a primary to clone from: {}",
                    no_primary(obs, &lease)
                )),
            };
        }
        (DataDir::Foreign, _, _) => {
            return wait(
                "data directory is not a PostgreSQL data directory; left untouched".to_string(),
            );
        }
        (DataDir::Initialised { .. }, None, NotMine::Vacant(v)) => {
            // A bootstrap interrupted before the database was recorded (PostgreSQL died,
            // the lease was released): nobody else has this data yet, so the member that
            // ran initdb finishes it rather than leaving the cluster without a database.
            if !may_be_primary(obs, obs.me) {
                return wait(format!(
                    "no database is recorded and {}; this member may never be primary",
                    v.what
                ));
            }
            if let Some(first) = first_eligible_below_me(obs) {
                return wait(format!(
                    "no database is recorded and {}; leaving the bootstrap to {}",
                    v.what,
                    name(obs, first)
                ));
            }
            let text = format!(
                "no database is recorded and {}; taking the lease to finish the bootstrap \
                 with my initialised data directory",
                v.what
            );
            return say(
                obs,
                Decision::AcquireLease {
                    expected: v.expected,
                },
                text,
            );
        }
        (DataDir::Initialised { system_id }, _, _) => system_id,
    };
    if let Some(db) = obs.database.filter(|db| *db != system_id) {
        return wait(format!(
            "data directory belongs to another database (system id {system_id}, the cluster's \
             is {db}); it needs `pgquorum reinit`"
        ));
    }
    if let Some(reason) = &obs.rejoin_blocked {
        if obs.config.remove_data_directory_on_rewind_failure {
            if let Some(source) = primary {
                let text = format!(
                    "cannot rejoin by rewind ({reason}); moving the data directory aside and \
                     cloning from {} (remove_data_directory_on_rewind_failure)",
                    name(obs, source)
                );
                return say(obs, Decision::Reclone { source }, text);
            }
        }
        return wait(format!(
            "cannot rejoin automatically: {reason}; the data directory is left as it is \
             (set remove_data_directory_on_rewind_failure to re-clone it, or see `pgquorum \
             reinit`)"
        ));
    }
    if obs.needs_rewind {
        if let Some(source) = primary {
            if let Some(after) = obs.rewind_retry_in {
                return wait(format!(
                    "data directory was last a primary's; the rewind from {} failed, trying \
                     again in {}",
                    name(obs, source),
                    human(after)
                ));
            }
            let text = format!(
                "data directory was last a primary's; rewinding from {} (lease epoch {}) \
                 before following it",
                name(obs, source),
                epoch(obs)
            );
            return say(obs, Decision::Rewind { source }, text);
        }
    }
    if !obs.pg.running {
        let upstream = match primary {
            Some(p) => format!("of {}", name(obs, p)),
            None => format!("with no primary to follow yet: {}", no_primary(obs, &lease)),
        };
        let text = format!("PostgreSQL stopped; starting it as a replica {upstream}");
        return say(obs, Decision::StartReplica { follow: primary }, text);
    }
    // Running and, since rule 1 did not fence, in recovery.
    match lease {
        NotMine::Held(holder) => replica(obs, holder, primary.is_some()),
        NotMine::Vacant(vacancy) => take_over(obs, vacancy),
    }
}

/// The holder's side of a planned switchover requested from it: hand over once the
/// candidate (named, or the best eligible replica) streams and has caught up; until then
/// keep renewing. `None` when no switchover concerns me.
fn switchover(obs: &Observation) -> Option<Outcome> {
    let switchover = obs.switchover.as_ref().filter(|s| s.from == obs.me)?;
    let epoch = epoch(obs);
    if let Some(at) = switchover.at_unix_ms.filter(|at| *at > obs.now_unix_ms) {
        let when = std::time::UNIX_EPOCH + Duration::from_millis(at);
        let text = format!(
            "primary, renewing lease epoch {epoch}; switchover scheduled at {}",
            humantime_serde::re::humantime::format_rfc3339_seconds(when)
        );
        return Some(say(obs, Decision::RenewLease, text));
    }
    let mine = obs.pg.wal_position;
    let target = match switchover.to {
        Some(to) => Some(to),
        None => obs
            .peers
            .values()
            .filter(|p| covered_by_sync(obs, p.node_id).is_ok())
            .filter_map(|p| candidate(obs, p))
            .max_by_key(|(_, rank)| *rank)
            .map(|(node, _)| node),
    };
    let Some(target) = target else {
        let text = format!(
            "primary, renewing lease epoch {epoch}; switchover requested but no eligible \
             replica answers"
        );
        return Some(say(obs, Decision::RenewLease, text));
    };
    if let Err(why) = covered_by_sync(obs, target) {
        let text = format!(
            "primary, renewing lease epoch {epoch}; switchover to {} waits: {why}",
            name(obs, target)
        );
        return Some(say(obs, Decision::RenewLease, text));
    }
    let peer = obs.peers.get(&target);
    let caught_up = match (peer, mine) {
        (Some(p), Some(mine)) => {
            p.pg.running
                && p.pg.in_recovery
                && p.pg.streaming
                && p.following == Some(obs.me)
                && p.pg
                    .wal_position
                    .is_some_and(|theirs| mine.bytes_after(theirs) <= SWITCHOVER_SLACK)
        }
        _ => false,
    };
    if caught_up {
        let text = format!(
            "primary, handing lease epoch {epoch} over to {} (switchover): stopping PostgreSQL, \
             then releasing the lease",
            name(obs, target)
        );
        return Some(say(obs, Decision::HandOver { to: target }, text));
    }
    let behind = match (peer.and_then(|p| p.pg.wal_position), mine) {
        (Some(theirs), Some(mine)) => format!("{} B behind", mine.bytes_after(theirs)),
        _ => "position unknown".to_string(),
    };
    let text = format!(
        "primary, renewing lease epoch {epoch}; switchover to {} waits for it to catch up \
         ({behind})",
        name(obs, target)
    );
    Some(say(obs, Decision::RenewLease, text))
}

/// In synchronous or quorum mode, whether this tenure's recorded synchronous set includes
/// `target` in every rule, so that once it has caught up it can pass the synchronous guard
/// and take the lease; handing over before that leaves the lease to nobody but me.
fn covered_by_sync(obs: &Observation, target: NodeId) -> Result<(), String> {
    if obs.config.synchronous_mode == SynchronousMode::Off {
        return Ok(());
    }
    let rules = obs.sync_rules();
    if rules.is_empty() {
        return Err("no synchronous set is recorded yet".to_string());
    }
    match rules
        .iter()
        .find(|r| r.needed_answers().is_none() || !r.members.contains(&target))
    {
        Some(rule) => Err(format!(
            "it is not in the recorded synchronous set ({rule}) yet"
        )),
        None => Ok(()),
    }
}

/// How many failed attempts to start PostgreSQL as primary make the holder release the lease
/// at once (a start that fails, rather than one that hangs, is not going to get better; two
/// tolerate a transient failure such as the old postmaster's children still exiting).
const START_ATTEMPTS: u32 = 2;

/// How long a replica of the primary may stay on an older timeline without streaming before
/// it is rewound: following a new timeline normally takes well under a second.
const STALLED_BEHIND_TIMELINE: Duration = Duration::from_secs(3);

/// How far behind (bytes) a switchover candidate may be when the primary stops: the fast
/// shutdown sends it the rest, so this only bounds how long that takes.
const SWITCHOVER_SLACK: u64 = 16 * 1024 * 1024;

/// A running replica while `holder` holds the lease.
fn replica(obs: &Observation, holder: NodeId, holder_is_primary: bool) -> Outcome {
    let leader = name(obs, holder);
    let epoch = epoch(obs);
    let upstream = obs.following.map_or("nobody".to_string(), |f| name(obs, f));
    if obs.following == Some(holder) {
        // A replica that received more of the old timeline than the new primary had when it
        // was promoted cannot follow it: its WAL forked off before its position. pg_rewind
        // brings it back (or finds nothing to do).
        let holder_timeline = obs.peers.get(&holder).map(|p| p.pg.timeline);
        if holder_is_primary
            && !obs.pg.streaming
            && holder_timeline.is_some_and(|tl| obs.pg.timeline < tl)
            && obs.not_streaming_for >= STALLED_BEHIND_TIMELINE
            && obs.rewind_retry_in.is_none()
        {
            let text = format!(
                "replica of {leader} on timeline {} while {leader} is on timeline {}, not \
                 streaming for {}; rewinding from it",
                obs.pg.timeline,
                holder_timeline.unwrap_or_default(),
                human(obs.not_streaming_for)
            );
            return say(obs, Decision::Rewind { source: holder }, text);
        }
        let streaming = if obs.pg.streaming {
            "streaming"
        } else {
            "not streaming"
        };
        let lag = match (peer_position(obs, holder), obs.pg.wal_position) {
            (Some(theirs), Some(mine)) => format!("{} B behind", theirs.bytes_after(mine)),
            _ => "lag unknown".to_string(),
        };
        say(
            obs,
            Decision::Idle,
            format!("replica of {leader}, {streaming}, {lag}"),
        )
    } else if holder_is_primary {
        let text = format!(
            "replica following {upstream}, but {leader} is the primary (lease epoch {epoch}); \
             re-pointing to {leader}"
        );
        say(obs, Decision::Follow { leader: holder }, text)
    } else {
        let text = format!(
            "replica following {upstream}; {leader} holds lease epoch {epoch} but reports no \
             writable primary, so not re-pointing yet"
        );
        say(obs, Decision::Idle, text)
    }
}

/// A running replica while the lease is free or expired: take it if this member is the
/// healthiest eligible one.
fn take_over(obs: &Observation, vacancy: Vacancy) -> Outcome {
    let wait = |why: String| say(obs, Decision::Wait, format!("{}; {why}", vacancy.what));
    let still_writable = obs.peers.values().find(|p| p.pg.is_writable()).map(|p| {
        wait(format!(
            "{} still reports itself writable",
            name(obs, p.node_id)
        ))
    });
    // A forced failover names who takes the lease, whatever lag or the synchronous set
    // say: the operator accepts the loss. Others leave it to the candidate for 2 x ttl.
    if let Some(failover) = &obs.failover {
        if failover.to == obs.me {
            let eligible = obs.database.is_some()
                && obs.members.get(&obs.me).is_some_and(|m| !m.tags.nofailover);
            if let Some(outcome) = &still_writable {
                return outcome.clone();
            }
            if let (true, Some(mine)) = (eligible, obs.pg.wal_position) {
                let text = format!(
                    "{}; taking over as the candidate of a forced failover ({mine})",
                    vacancy.what
                );
                let expected = vacancy.expected;
                return say(obs, Decision::TakeOver { expected }, text);
            }
        } else if obs.lease_unchanged_for < obs.config.ttl * 2 {
            return wait(format!(
                "forced failover to {} requested",
                name(obs, failover.to)
            ));
        }
    }
    let mine = match my_position_if_eligible(obs) {
        Ok(mine) => mine,
        Err(why) => return wait(format!("not eligible: {why}")),
    };
    // A planned switchover reserves a freshly released lease for its candidate (or, with
    // none named, for anyone but the old primary) until ttl has passed.
    if let Some(switchover) = &obs.switchover {
        if obs.lease_unchanged_for < obs.config.ttl {
            match switchover.to {
                Some(to) if to == obs.me => {
                    let text = format!(
                        "{}; taking over as the switchover candidate ({mine})",
                        vacancy.what
                    );
                    let expected = vacancy.expected;
                    return say(obs, Decision::TakeOver { expected }, text);
                }
                Some(to) => {
                    return wait(format!("switchover to {} in progress", name(obs, to)));
                }
                None if switchover.from == obs.me => {
                    return wait("I am the old primary of a switchover".to_string());
                }
                None => {}
            }
        }
    }
    if let Some(outcome) = still_writable {
        return outcome;
    }
    // Compare positions only once every replica that answers has reported one taken after the
    // old primary stopped writing: an older report may understate how far it got, and
    // promoting a member behind another leaves that one unable to follow without a rewind.
    let since = since_writable(obs);
    let stale = obs.peers.values().find(|p| {
        p.pg.running
            && p.pg.in_recovery
            && obs
                .status_age
                .get(&p.node_id)
                .is_none_or(|age| *age >= since)
    });
    if let Some(stale) = stale {
        return wait(format!(
            "waiting for a position from {} taken after the old primary stopped",
            name(obs, stale.node_id)
        ));
    }
    // A replica that stopped answering a moment ago may be ahead of me: give it as long again
    // to answer before promoting without it. Seen once: a poll round that waited for the cut-off
    // old primary let a replica's last answer age past the limit just as the lease expired,
    // and a replica 12.7 s of WAL behind it took over.
    if let Some(quiet) = obs.quiet_replicas.iter().next() {
        return wait(format!(
            "{} stopped answering a moment ago, as a replica; waiting for it (at most {} after \
             its last answer) in case it is ahead",
            name(obs, *quiet),
            human(obs.config.status_horizon() * 2)
        ));
    }
    let my_rank = (mine, priority(obs, obs.me), std::cmp::Reverse(obs.me));
    // The old primary of an untargeted switchover stands aside while the lease is reserved:
    // deferring to it would leave the lease to nobody until the reservation ends.
    let standing_aside = obs
        .switchover
        .as_ref()
        .filter(|s| s.to.is_none() && obs.lease_unchanged_for < obs.config.ttl)
        .map(|s| s.from);
    // The last holder defers to nobody: it is as advanced as anyone (they only ever had its
    // WAL), and when its record says "no synchronous standby" it is the only member that may
    // take the lease at all, so deferring to a peer would leave the lease to nobody.
    let last_holder = obs.last_holder == Some(obs.me);
    let best = obs
        .peers
        .values()
        .filter(|p| !last_holder && Some(p.node_id) != standing_aside)
        .filter_map(|p| candidate(obs, p))
        .max_by_key(|(_, rank)| *rank)
        .filter(|(_, rank)| *rank > my_rank);
    if let Some((node, (lsn, prio, _))) = best {
        return wait(format!(
            "{} is a better candidate (at {lsn} with failover_priority {prio}; I am at {mine} \
             with {})",
            name(obs, node),
            my_rank.1
        ));
    }
    // The others' positions, for whoever reads the log after a failover.
    let others: String = obs
        .peers
        .values()
        .filter(|p| p.pg.running)
        .filter_map(|p| {
            let lsn = p.pg.wal_position?;
            Some(format!("; {} at {lsn}", name(obs, p.node_id)))
        })
        .collect();
    let text = format!(
        "{}; taking over as the healthiest replica ({mine}){others}",
        vacancy.what
    );
    let expected = vacancy.expected;
    say(obs, Decision::TakeOver { expected }, text)
}

/// A candidate's rank: higher WAL position first, then higher failover_priority, then the
/// lower node id.
type Rank = (Lsn, u32, std::cmp::Reverse<NodeId>);

/// My WAL position if I may take the lease, else why not.
fn my_position_if_eligible(obs: &Observation) -> Result<Lsn, String> {
    if obs.database.is_none() {
        return Err("no database is recorded".to_string());
    }
    let Some(member) = obs.members.get(&obs.me) else {
        return Err("not a registered member".to_string());
    };
    if member.tags.nofailover {
        return Err("tagged nofailover".to_string());
    }
    if member.tags.failover_priority == 0 {
        return Err("failover_priority is 0".to_string());
    }
    if let Some(why) = &obs.pre_promote_refused {
        return Err(format!("the pre_promote hook refused promotion: {why}"));
    }
    let Some(mine) = obs.pg.wal_position else {
        return Err("my WAL position is unknown".to_string());
    };
    synchronous_guard(obs, mine)?;
    let limit = obs.config.maximum_lag_on_failover;
    let highest = highest_position(obs).unwrap_or(mine);
    let lag = highest.bytes_after(mine);
    if lag > limit {
        return Err(format!(
            "{lag} B behind the highest known position {highest}, more than \
             maximum_lag_on_failover ({limit} B)"
        ));
    }
    Ok(mine)
}

/// In synchronous or quorum mode, whether my taking over keeps every acknowledged commit:
/// for every recorded rule, enough of its members answered with a status taken after the
/// old primary stopped being writable, and none of them is ahead of me (`cluster::sync`).
fn synchronous_guard(obs: &Observation, mine: Lsn) -> Result<(), String> {
    if obs.config.synchronous_mode == SynchronousMode::Off {
        return Ok(());
    }
    // The holder of the latest tenure taking its lease back (after a restart, a crash or a
    // failed handover of its own) has every acknowledged commit: it took the lease holding
    // every earlier one and acknowledged the rest itself, and nobody has rewound or
    // replaced its data since, as that needs a later primary. Without this, a record of "no
    // synchronous standby" would keep every member out, it included.
    if obs.last_holder == Some(obs.me) {
        return Ok(());
    }
    let rules = obs.sync_rules();
    if rules.is_empty() {
        return Err(
            "in synchronous mode only a member of the recorded synchronous set may be \
                    promoted; none is recorded"
                .to_string(),
        );
    }
    let since_writable = since_writable(obs);
    let position = |id: NodeId| -> Option<Lsn> {
        if id == obs.me {
            return Some(mine);
        }
        let fresh = obs
            .status_age
            .get(&id)
            .is_some_and(|age| *age < since_writable);
        let peer = obs.peers.get(&id).filter(|_| fresh)?;
        peer.pg.wal_position.filter(|_| peer.pg.running)
    };
    for rule in &rules {
        let Some(needed) = rule.needed_answers() else {
            return Err(format!(
                "the primary recorded \"{rule}\" (synchronous mode), so no member is known to \
                 hold every acknowledged commit; waiting for it or for `pgquorum failover`"
            ));
        };
        let answered: Vec<(NodeId, Lsn)> = rule
            .members
            .iter()
            .filter_map(|id| Some((*id, position(*id)?)))
            .collect();
        if answered.len() < needed {
            let names: Vec<String> = rule.members.iter().map(|id| name(obs, *id)).collect();
            return Err(format!(
                "synchronous set [{}] needs {needed} of its members to report a position taken \
                 after the old primary stopped, {} did",
                names.join(", "),
                answered.len()
            ));
        }
        if let Some((id, theirs)) = answered.iter().find(|(_, lsn)| *lsn > mine) {
            return Err(format!(
                "synchronous member {} is ahead ({theirs}; I am at {mine})",
                name(obs, *id)
            ));
        }
    }
    Ok(())
}

/// How long ago, at the latest, the old primary stopped being writable: a status taken less
/// long ago than this shows every WAL position it reached. A released lease was released
/// only after that; an expired one's holder gave up at the latest `ttl - margin` after the
/// renewal I saw last.
fn since_writable(obs: &Observation) -> Duration {
    let ttl = obs.config.ttl;
    match obs.lease_clock {
        LeaseClockView::Expired { .. } => obs
            .lease_unchanged_for
            .saturating_sub(ttl - super::safety_margin(ttl)),
        _ => obs.lease_unchanged_for,
    }
}

/// A peer's rank if it could take the lease: a registered member not tagged nofailover,
/// with failover_priority > 0, not standing aside after a `pre_promote` refusal, a running
/// replica of this database whose WAL position is
/// known and within `maximum_lag_on_failover` of the highest.
fn candidate(obs: &Observation, peer: &PeerStatus) -> Option<(NodeId, Rank)> {
    let tags = &obs.members.get(&peer.node_id)?.tags;
    let lsn = peer.pg.wal_position?;
    let highest = highest_position(obs)?;
    let eligible = !tags.nofailover
        && tags.failover_priority > 0
        && !peer.pre_promote_refused
        && peer.pg.running
        && peer.pg.in_recovery
        && obs
            .database
            .map(|system_id| DataDir::Initialised { system_id })
            == Some(peer.data_dir)
        && highest.bytes_after(lsn) <= obs.config.maximum_lag_on_failover;
    eligible.then_some((
        peer.node_id,
        (lsn, tags.failover_priority, std::cmp::Reverse(peer.node_id)),
    ))
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
