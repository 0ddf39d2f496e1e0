//! The engine's memory: everything the HA rules remember from one cycle to the next, and
//! the rules that read it. The runtime (`ha::execute`) performs actions and
//! reports what happened as [`Event`]s; [`Memory::fold`] is the only way this memory
//! changes. Nothing here does I/O or reads a clock: every instant is passed in, so each rule
//! is a plain function of its inputs (tested in `memory/tests.rs`).
//!
//! ```text
//!   observe ─► decide(Observation) ─► Decision ─► execute ─► Event ─► Memory::fold
//!      ▲                                  ▲                              │
//!      └──────── Memory (start failures, back-offs, tenure, lease clock) ┘
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::observe::StartFailure;
use super::{HolderClock, Observation};
use crate::cluster::{Epoch, Lease, NodeId, SyncRule, SynchronousMode};
use crate::postgres::Lsn;

/// How long after a rewind that failed without touching anything (the source unreachable, a
/// password not yet replicated) it may be tried again.
pub const REWIND_RETRY: Duration = Duration::from_secs(5);

/// A `synchronous_standby_names` no standby ever answers to: commits wait (and so are not
/// acknowledged) until the name is replaced. Used while the lease's quorum is out of reach.
pub const NO_STANDBY: &str = "pgquorum_writes_blocked";

/// The name of the replication slot of member `id` on the primary, which is also its
/// `application_name` (what `synchronous_standby_names` lists).
pub fn slot_name(id: NodeId) -> String {
    format!("pgquorum_{}", id.0)
}

/// What the runtime reports after acting.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A lease acquisition or renewal of `epoch`, sent at `sent`, committed.
    LeaseCommitted { epoch: Epoch, sent: Instant },
    /// A decision was carried out; `renewed` when it was a successful renewal as primary.
    Executed { renewed: bool },
    /// This cycle's renewal committed ahead of the status query.
    RenewedAhead,
    /// A renewal did not commit within half a loop_wait: commits now wait.
    WritesBlocked,
    /// Starting PostgreSQL as primary failed with `error`.
    StartFailed { error: String },
    /// PostgreSQL started as primary.
    PrimaryStarted,
    /// A rewind failed without touching anything, at `at`.
    RewindFailedCleanly { at: Instant },
    /// A rewind succeeded.
    Rewound,
    /// The `pre_promote` hook refused a promotion at `at`.
    PrePromoteRefused { at: Instant, why: String },
    /// A tenure as primary began (bootstrap, start, promotion) under `epoch`, with `rule`
    /// (strict mode's from the first commit) in force.
    TenureBegan {
        epoch: Option<Epoch>,
        rule: Option<SyncRule>,
    },
    /// Synchronous replication was switched off on this primary.
    SyncOff,
    /// PostgreSQL runs the recorded synchronous rule: nothing is settling.
    SyncInStep,
    /// PostgreSQL was switched to `rule` at `at`.
    SyncSwitched { rule: SyncRule, at: Instant },
    /// A rule was found in force but not yet settled (after a daemon restart): settling
    /// starts at `at`.
    SyncSettling { at: Instant },
    /// Every commit acknowledged under an earlier rule is below `lsn`.
    SyncTarget { lsn: Lsn },
    /// The rule in force alone is recorded.
    SyncSettled,
}

/// The synchronous rule this primary's PostgreSQL runs, within one lease tenure.
#[derive(Debug, Default, Clone, PartialEq)]
struct SyncInForce {
    /// The tenure it belongs to; a new tenure starts from nothing.
    epoch: Option<Epoch>,
    /// What `synchronous_standby_names` says now; `None` when nothing synchronous is set.
    rule: Option<SyncRule>,
    /// When `rule` was last changed, and the WAL position every commit acknowledged under
    /// an earlier rule is below (read one loop_wait after the change, once every WAL sender
    /// has reloaded).
    switched: Option<(Instant, Option<Lsn>)>,
}

/// How a renewal is to be waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPlan {
    /// The renewal counts only if it commits by then.
    pub limit: Instant,
    /// If it has not committed by then, commits must wait (block writes) until it does.
    pub block_writes_at: Option<Instant>,
}

/// What keeping the synchronous rule in step needs next (see [`Memory::sync_plan`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SyncPlan {
    /// Nothing to do.
    Nothing,
    /// Synchronous mode is off: stop waiting for standbys (`unset`) and clear the record
    /// (`clear_record`).
    TurnOff { unset: bool, clear_record: bool },
    /// PostgreSQL runs what is recorded.
    InStep,
    /// Record `record` (if any), then switch PostgreSQL from `from` to `to`.
    Switch {
        from: SyncRule,
        to: SyncRule,
        record: Option<Vec<SyncRule>>,
    },
    /// A rule is in force whose settling has not started: start it now.
    StartSettling,
    /// The switch is recent: wait for every WAL sender to have reloaded.
    Settling,
    /// Read the primary's current WAL position: commits acknowledged under the old rule
    /// are below it.
    ReadTarget,
    /// `rule` holds every commit acknowledged under the old one: record it alone.
    DropOld { rule: SyncRule },
}

/// The engine's memory (see the module doc).
#[derive(Debug, Default)]
pub struct Memory {
    holder_clock: HolderClock,
    /// Consecutive failed starts of PostgreSQL as primary, with the last error.
    start_failure: Option<StartFailure>,
    /// When a rewind that failed without touching anything may be tried again.
    rewind_retry_at: Option<Instant>,
    /// When and why the `pre_promote` hook last refused a promotion.
    pre_promote_refused: Option<(Instant, String)>,
    /// The last executed decision was a successful renewal as a healthy primary.
    renewing: bool,
    /// This cycle's renewal already committed ahead of the status query.
    renewed_ahead: bool,
    /// Commits wait for a standby that does not exist: a renewal did not commit in time.
    writes_blocked: bool,
    /// The synchronous rule in force on our primary.
    sync: SyncInForce,
    /// Since when PostgreSQL has been down (for the crash restart budget).
    down_since: Option<Instant>,
    /// Since when our running replica has not been streaming.
    stalled_since: Option<Instant>,
    /// The current (or last) holder's highest position as a primary, by epoch.
    primary_seen: Option<(Epoch, Lsn)>,
}

/// What [`Memory::track`] derives for one cycle's observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// How long PostgreSQL has been down; zero when running.
    pub down_for: Duration,
    /// How long the running replica has not been streaming; zero otherwise.
    pub not_streaming_for: Duration,
    /// The highest position the holder of `epoch` reported as a primary.
    pub last_primary_position: Option<Lsn>,
}

impl Memory {
    /// Folds in what the runtime reports.
    pub fn fold(&mut self, event: Event) {
        match event {
            Event::LeaseCommitted { epoch, sent } => self.holder_clock.committed(epoch, sent),
            Event::Executed { renewed } => {
                self.renewing = renewed;
                self.renewed_ahead = false;
            }
            Event::RenewedAhead => self.renewed_ahead = true,
            Event::WritesBlocked => self.writes_blocked = true,
            Event::StartFailed { error } => {
                let attempts = self.start_failure.as_ref().map_or(0, |f| f.attempts) + 1;
                self.start_failure = Some(StartFailure { attempts, error });
            }
            Event::PrimaryStarted => self.start_failure = None,
            Event::RewindFailedCleanly { at } => self.rewind_retry_at = Some(at + REWIND_RETRY),
            Event::Rewound => self.rewind_retry_at = None,
            Event::PrePromoteRefused { at, why } => self.pre_promote_refused = Some((at, why)),
            Event::TenureBegan { epoch, rule } => {
                self.sync = SyncInForce {
                    epoch,
                    rule: rule.filter(|r| *r != SyncRule::none()),
                    switched: None,
                };
                self.writes_blocked = false;
            }
            Event::SyncOff => self.sync.rule = None,
            Event::SyncInStep | Event::SyncSettled => self.sync.switched = None,
            Event::SyncSwitched { rule, at } => {
                self.sync.rule = Some(rule).filter(|r| *r != SyncRule::none());
                self.sync.switched = Some((at, None));
            }
            Event::SyncSettling { at } => self.sync.switched = Some((at, None)),
            Event::SyncTarget { lsn } => {
                if let Some((_, target)) = &mut self.sync.switched {
                    *target = Some(lsn);
                }
            }
        }
    }

    /// Folds in a committed renewal; true when commits were waiting for it (they must be
    /// released: the quorum answers again).
    pub fn renewal_committed(&mut self, epoch: Epoch, sent: Instant) -> bool {
        self.fold(Event::LeaseCommitted { epoch, sent });
        std::mem::take(&mut self.writes_blocked)
    }

    /// Start of a cycle, on what it observed of `pg` (mine) under `lease` (or the last
    /// `epoch`), with `holder_position` the holder's position if its fresh status is a
    /// writable primary's: updates the trackers and forgets failed starts once PostgreSQL
    /// runs or this member no longer holds the lease.
    pub fn track(
        &mut self,
        me: NodeId,
        pg: &crate::postgres::PgStatus,
        lease: Option<&Lease>,
        epoch: Epoch,
        holder_position: Option<Lsn>,
        now: Instant,
    ) -> Tracked {
        if pg.running || lease.is_none_or(|l| l.holder != me) {
            self.start_failure = None;
        }
        self.stalled_since = if pg.is_running_replica() && !pg.streaming {
            self.stalled_since.or(Some(now))
        } else {
            None
        };
        self.down_since = if pg.running {
            None
        } else {
            self.down_since.or(Some(now))
        };
        self.primary_seen = match (self.primary_seen, holder_position) {
            (Some((e, seen)), Some(now)) if e == epoch => Some((e, seen.max(now))),
            (Some((e, seen)), None) if e == epoch => Some((e, seen)),
            (_, now) => now.map(|now| (epoch, now)),
        };
        let since = |at: Option<Instant>| at.map(|t| now.duration_since(t)).unwrap_or_default();
        Tracked {
            down_for: since(self.down_since),
            not_streaming_for: since(self.stalled_since),
            last_primary_position: self.primary_seen.map(|(_, lsn)| lsn),
        }
    }

    /// After `decision` was carried out. Building a data directory (initdb, a clone) is not
    /// PostgreSQL being down: the restart budget (primary_start_timeout) starts after it. A
    /// rewind restarts PostgreSQL: its time to start streaming starts again too, or a
    /// replica that needed none (pg_rewind: "no rewind required") but takes more than the
    /// stall limit to reconnect over a slow link is rewound again and again, never left
    /// running long enough to stream (seen at 100 ms round trip).
    pub fn acted(&mut self, decision: &super::Decision) {
        if decision.builds_data_dir() {
            self.down_since = None;
        }
        if matches!(decision, super::Decision::Rewind { .. }) {
            self.stalled_since = None;
        }
    }

    pub fn holder_clock(&self) -> &HolderClock {
        &self.holder_clock
    }

    pub fn start_failure(&self) -> Option<StartFailure> {
        self.start_failure.clone()
    }

    /// How long until a rewind may be tried again, if it may not be now.
    pub fn rewind_retry_in(&self, now: Instant) -> Option<Duration> {
        self.rewind_retry_at
            .filter(|at| now < *at)
            .map(|at| at - now)
    }

    /// Why the `pre_promote` hook refused, if it did within
    /// [`REFUSAL_HOLD`](crate::hooks::REFUSAL_HOLD) of `now`.
    pub fn pre_promote_refused(&self, now: Instant) -> Option<String> {
        self.pre_promote_refused
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < crate::hooks::REFUSAL_HOLD)
            .map(|(_, why)| why.clone())
    }

    pub fn writes_blocked(&self) -> bool {
        self.writes_blocked
    }

    /// Whether this cycle's renewal is already done (ahead of the status query).
    pub fn renewed_ahead(&self) -> bool {
        self.renewed_ahead
    }

    /// Whether to renew at the start of a cycle, on `previous` (the last cycle's
    /// observation), before the status query: the last cycle renewed as a healthy primary,
    /// the lease is the same tenure, and its deadline is still ahead. Past the deadline
    /// nothing is sent ahead: that cycle must fence first.
    pub fn renews_ahead(
        &self,
        previous: &Observation,
        current: Option<&Lease>,
        now: Instant,
    ) -> bool {
        let Some(lease) = previous.lease.as_ref().filter(|l| Some(*l) == current) else {
            return false;
        };
        let ahead = self
            .holder_clock
            .deadline(lease, previous.config.ttl)
            .is_some_and(|deadline| deadline > now);
        self.renewing && ahead
    }

    /// How a renewal of `lease` sent at `sent` by a primary that is `writable` is waited for.
    /// While the deadline is ahead it must commit before it; past it, `decide` has already
    /// made this member non-writable, and the renewal may take up to retry_timeout (it starts
    /// a new deadline from `sent`). A writable primary whose renewal has not committed
    /// within half a loop_wait may be cut off from the quorum: its commits wait from then on
    /// (not acknowledged) until a renewal commits, rather than until the deadline demotes it.
    pub fn renewal_plan(
        &self,
        lease: &Lease,
        ttl: Duration,
        loop_wait: Duration,
        retry_timeout: Duration,
        writable: bool,
        sent: Instant,
    ) -> RenewalPlan {
        let limit = match self.holder_clock.deadline(lease, ttl) {
            Some(deadline) if deadline > sent => deadline.min(sent + retry_timeout),
            _ => sent + retry_timeout,
        };
        let contact = sent + loop_wait / 2;
        let block_writes_at =
            (writable && !self.writes_blocked && contact < limit).then_some(contact);
        RenewalPlan {
            limit,
            block_writes_at,
        }
    }

    /// The epoch of the tenure whose synchronous rule is tracked.
    pub fn tenure(&self) -> Option<Epoch> {
        self.sync.epoch
    }

    /// The rule a new tenure (or one not yet tracked) under `obs`'s lease starts with:
    /// nothing synchronous until a standby streams, except in strict mode, which waits for
    /// any eligible member from the first commit on. `None` when the tenure is tracked.
    pub fn new_tenure(&self, obs: &Observation) -> Option<Event> {
        let epoch = obs.lease.map(|l| l.epoch);
        if epoch.is_some() && self.sync.epoch == epoch {
            return None;
        }
        let rule = super::sync::desired_rule(
            &obs.config,
            obs.me,
            &obs.members,
            &BTreeMap::new(),
            &SyncRule::none(),
        );
        Some(Event::TenureBegan { epoch, rule })
    }

    /// `synchronous_standby_names` as it should be now.
    pub fn standby_names(&self) -> Option<String> {
        if self.writes_blocked {
            return Some(NO_STANDBY.to_string());
        }
        self.sync.rule.as_ref()?.standby_names(slot_name)
    }

    /// The next step in keeping this primary's synchronous rule and its record in Raft in
    /// step, in the order `cluster::sync` requires: record the new rule next to the old,
    /// then switch PostgreSQL to it, then, one loop_wait later, drop the old one from the
    /// record once enough members of the new one (`flushed`: standby positions) have flushed
    /// past every commit acknowledged under the old. The tenure must be tracked
    /// ([`new_tenure`](Self::new_tenure) folded first).
    pub fn sync_plan(
        &self,
        obs: &Observation,
        flushed: &BTreeMap<NodeId, Lsn>,
        now: Instant,
    ) -> SyncPlan {
        let Some(lease) = obs.lease else {
            return SyncPlan::Nothing;
        };
        if obs.config.synchronous_mode == SynchronousMode::Off {
            let unset = self.sync.rule.is_some();
            let clear_record = obs.sync.is_some();
            return if unset || clear_record {
                SyncPlan::TurnOff {
                    unset,
                    clear_record,
                }
            } else {
                SyncPlan::Nothing
            };
        }
        let current = self.sync.rule.clone().unwrap_or_default();
        let Some(wanted) =
            super::sync::desired_rule(&obs.config, obs.me, &obs.members, flushed, &current)
        else {
            return SyncPlan::Nothing;
        };
        let recorded = obs
            .sync
            .as_ref()
            .filter(|s| s.epoch == lease.epoch)
            .map(|s| s.rules.as_slice());
        match super::sync::next_step(&current, &wanted, recorded) {
            super::sync::Step::InStep => return SyncPlan::InStep,
            super::sync::Step::Switch { record } => {
                return SyncPlan::Switch {
                    from: current,
                    to: wanted,
                    record,
                }
            }
            super::sync::Step::DropOld => {}
        }
        match self.sync.switched {
            None => SyncPlan::StartSettling,
            Some((at, _)) if now.saturating_duration_since(at) < obs.config.loop_wait => {
                SyncPlan::Settling
            }
            Some((_, None)) => SyncPlan::ReadTarget,
            Some((_, Some(target))) if super::sync::covered(&wanted, flushed, target) => {
                SyncPlan::DropOld { rule: wanted }
            }
            Some(_) => SyncPlan::Settling,
        }
    }
}

#[cfg(test)]
mod tests;
