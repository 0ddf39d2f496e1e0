//! The HA loop: once per `loop_wait`, observe (cluster view, local PostgreSQL, peers'
//! statuses, the lease on our own clock), [`decide`] what this member's PostgreSQL should
//! be, log one sentence, and [`execute`] the decision.
//!
//! ```text
//!  view (watch) ─┐
//!  peers (watch) ─┼─► observe ─► decide (pure) ─► Decision ─► execute ─► postgres::*, raft.propose
//!  postgres ──────┘                                                     (lease, database record)
//! ```
//!
//! Lease safety (DESIGN §3): the holder remembers when it *sent* its last committed renewal
//! and treats the lease as lost at `sent + ttl - margin`, earlier than any other member can
//! judge it expired (they wait `ttl` after *seeing* the renewal, which is later). The loop
//! wakes at that deadline even mid-cycle, and renewals are bounded by it.

pub mod decide;
pub mod execute;
pub mod observe;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use decide::{decide, Decision, Outcome};
pub use observe::{LeaseClockView, Observation, PeerStatus};

use crate::cluster::{Epoch, Lease, NodeId};
use crate::lease::{LeaseClock, TakeoverRefused};
use crate::peers::{LocalStatus, PeerReport, PeerStatuses};
use crate::postgres::Postgres;
use crate::raft::{ClusterView, RaftHandle};

/// What the loop needs; built by the daemon.
pub struct Deps {
    pub handle: RaftHandle,
    pub postgres: Arc<Postgres>,
    pub lease_clock: LeaseClock,
    pub peers: watch::Receiver<Arc<PeerStatuses>>,
    /// Where this member publishes its own status for the status exchange and the API.
    pub local_status: watch::Sender<LocalStatus>,
    /// `[hooks]`, and this member's name, which hooks are told.
    pub hooks: crate::hooks::HooksConfig,
    pub name: String,
    /// The VIP in netlink mode; `vip_text` is the configured VIP for hooks (empty if none).
    pub vip: Option<crate::vip::Vip>,
    pub vip_text: String,
    /// The watchdog that kills our primary if this daemon stops renewing (`crate::fence`).
    pub fence: Option<Arc<crate::fence::Fence>>,
}

/// The holder's memory of its last committed renewal: the epoch and when it was *sent*.
#[derive(Debug, Clone, Copy, Default)]
pub struct HolderClock {
    last: Option<(Epoch, Instant)>,
}

impl HolderClock {
    /// Records a renewal (or acquisition) of `epoch` that was sent at `sent` and committed.
    pub fn committed(&mut self, epoch: Epoch, sent: Instant) {
        match self.last {
            Some((e, at)) if e == epoch && at >= sent => {}
            _ => self.last = Some((epoch, sent)),
        }
    }

    /// When the last committed renewal of `lease` was sent, if it is this member's.
    pub fn sent(&self, lease: &Lease) -> Option<Instant> {
        match self.last {
            Some((epoch, sent)) if epoch == lease.epoch => Some(sent),
            _ => None,
        }
    }

    /// The instant after which the holder must no longer be writable, if it holds `lease`.
    pub fn deadline(&self, lease: &Lease, ttl: Duration) -> Option<Instant> {
        match self.last {
            Some((epoch, sent)) if epoch == lease.epoch => Some(sent + ttl - safety_margin(ttl)),
            _ => None,
        }
    }
}

/// How much earlier than `ttl` the holder gives up: a quarter of ttl, enough for clock-rate
/// differences and a cycle's work.
pub fn safety_margin(ttl: Duration) -> Duration {
    ttl / 4
}

/// Judges the lease on this member's clock.
pub fn lease_clock_view(
    me: NodeId,
    lease: Option<&Lease>,
    holder_clock: &HolderClock,
    lease_clock: &LeaseClock,
    ttl: Duration,
    now: Instant,
) -> LeaseClockView {
    match lease {
        None => LeaseClockView::Free,
        Some(lease) if lease.holder == me => match holder_clock.deadline(lease, ttl) {
            Some(deadline) if now < deadline => LeaseClockView::HeldByMe,
            _ => LeaseClockView::HeldByMeExpiring,
        },
        Some(lease) => match lease_clock.takeover(me, Some(lease), ttl) {
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

/// Runs the loop until `shutdown`. On shutdown a writable primary is stopped before the
/// lease is released, so a successor never overlaps a writable us.
pub async fn run(deps: Deps, shutdown: CancellationToken) {
    let me = NodeId(deps.handle.id());
    let mut executor = execute::Executor::new(me, deps.handle.clone(), deps.postgres.clone())
        .with_hooks(deps.hooks.clone(), deps.name.clone())
        .with_vip(deps.vip.clone(), deps.vip_text.clone())
        .with_fence(deps.fence.clone());
    let role_changes = crate::hooks::RoleChanges::spawn(&deps.hooks);
    let mut last_role: Option<&'static str> = None;
    let mut last_sentence = String::new();
    let mut down_since: Option<Instant> = None;
    let mut stalled_since: Option<Instant> = None;
    // The current (or last) holder's highest position as a primary, by epoch.
    let mut primary_seen: Option<(Epoch, crate::postgres::Lsn)> = None;
    // The last cycle's observation, for renewing ahead of this cycle's status query.
    let mut previous: Option<Observation> = None;
    loop {
        let view: Arc<ClusterView> = deps.handle.view().borrow().clone();
        let config = view.state.config.clone();
        // The status describes PostgreSQL as of no earlier than this.
        let taken = Instant::now();
        // A primary whose last cycle renewed renews again while the status query runs: a
        // PostgreSQL slow to answer under load (a second, measured) must not cost the lease
        // it still deserves. The previous cycle saw it healthy; this one judges it again.
        let same_tenure = previous
            .as_ref()
            .is_some_and(|p| p.lease.is_some() && p.lease == view.state.lease);
        let renew_ahead = async {
            match previous.as_ref() {
                Some(previous) if same_tenure => executor.renew_ahead(previous).await,
                _ => {}
            }
        };
        let (pg, ()) = tokio::join!(deps.postgres.status(), renew_ahead);
        let status_took = taken.elapsed();
        let data_dir = deps.postgres.data_dir_state();
        let following = executor.following();
        let status = PeerStatus {
            node_id: me,
            pg: pg.clone(),
            data_dir,
            following,
            summary: last_sentence.clone(),
            pre_promote_refused: executor.pre_promote_refused().is_some(),
            vip: executor.vip_held(),
        };
        let now = Instant::now();
        deps.local_status.send_replace(Some((status, taken)));

        let horizon = config.status_horizon();
        let (reports, quiet_replicas) = {
            let all = deps.peers.borrow();
            let reports: Vec<(NodeId, PeerReport)> = all
                .iter()
                .filter(|(_, report)| now.duration_since(report.received) <= horizon)
                .map(|(id, report)| (*id, report.clone()))
                .collect();
            (reports, quiet_replicas(&all, horizon, now))
        };
        let status_age = reports
            .iter()
            .map(|(id, report)| (*id, now.saturating_duration_since(report.taken)))
            .collect();
        let peers: BTreeMap<NodeId, PeerStatus> = reports
            .into_iter()
            .map(|(id, report)| (id, report.status))
            .collect();
        stalled_since = if pg.running && pg.in_recovery && !pg.streaming {
            stalled_since.or(Some(now))
        } else {
            None
        };
        if pg.running || view.state.lease.is_none_or(|l| l.holder != me) {
            executor.clear_start_failure();
        }
        down_since = if pg.running {
            None
        } else {
            down_since.or(Some(now))
        };
        let lease = view.state.lease;
        let epoch = lease.map_or(view.state.last_epoch, |l| l.epoch);
        let role = match (pg.running, pg.in_recovery) {
            (false, _) => "stopped",
            (true, true) => "replica",
            (true, false) => "primary",
        };
        if last_role != Some(role) {
            last_role = Some(role);
            role_changes.changed(crate::hooks::HookArgs {
                role: role.into(),
                member: deps.name.clone(),
                epoch: epoch.0,
                vip: deps.vip_text.clone(),
            });
        }
        let holder_position = lease
            .and_then(|l| peers.get(&l.holder))
            .filter(|p| p.pg.running && !p.pg.in_recovery)
            .and_then(|p| p.pg.wal_position);
        primary_seen = match (primary_seen, holder_position) {
            (Some((e, seen)), Some(now)) if e == epoch => Some((e, seen.max(now))),
            (Some((e, seen)), None) if e == epoch => Some((e, seen)),
            (_, now) => now.map(|now| (epoch, now)),
        };
        let obs = Observation {
            me,
            lease,
            lease_clock: lease_clock_view(
                me,
                lease.as_ref(),
                executor.holder_clock(),
                &deps.lease_clock,
                config.ttl,
                now,
            ),
            database: view.state.database,
            config: config.clone(),
            members: view.state.members.clone(),
            peers,
            status_age,
            quiet_replicas,
            data_dir,
            pg,
            following,
            down_for: down_since
                .map(|t| now.duration_since(t))
                .unwrap_or_default(),
            start_failure: executor.start_failure(),
            pre_promote_refused: executor.pre_promote_refused(),
            not_streaming_for: stalled_since
                .map(|t| now.duration_since(t))
                .unwrap_or_default(),
            switchover: view.state.switchover.clone(),
            paused: view.state.paused,
            lease_unchanged_for: deps.lease_clock.unchanged_for(),
            needs_rewind: executor.needs_rewind(),
            rejoin_blocked: executor.rejoin_blocked(),
            sync: view.state.sync.clone(),
            last_epoch: view.state.last_epoch,
            last_holder: view.state.last_holder,
            last_primary_position: primary_seen.map(|(_, lsn)| lsn),
            failover: view.state.failover.clone(),
            action: view.state.actions.get(&me).copied(),
            recorded_timeline: view.state.history.last().map_or(0, |s| s.new_timeline),
            now_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let outcome = decide(&obs);
        if outcome.sentence != last_sentence {
            tracing::info!("{}", outcome.sentence);
            crate::systemd::status(&outcome.sentence);
            last_sentence = outcome.sentence.clone();
        } else {
            tracing::debug!("{}", outcome.sentence);
        }
        let acting = Instant::now();
        let again_now = executor.execute(&outcome.decision, &obs).await;
        let action_took = acting.elapsed();
        // Building a data directory (initdb, a clone) is not PostgreSQL being down: the
        // restart budget (primary_start_timeout) starts after it.
        if builds_data_dir(&outcome.decision) {
            down_since = None;
        }
        // A rewind restarts PostgreSQL: its time to start streaming starts again too, or a
        // replica that needed none (pg_rewind: "no rewind required") but takes more than the
        // stall limit to reconnect over a slow link is rewound again and again, never left
        // running long enough to stream (seen at 100 ms round trip).
        if matches!(outcome.decision, Decision::Rewind { .. }) {
            stalled_since = None;
        }
        let applying = Instant::now();
        executor.apply_parameters(&obs).await;
        // A slow cycle delays the next renewal: say where the time went.
        let cycle = taken.elapsed();
        if cycle > config.loop_wait.max(config.ttl / 4) && !long_action(&outcome.decision) {
            tracing::warn!(
                took = ?cycle,
                status = ?status_took,
                action = ?action_took,
                parameters = ?applying.elapsed(),
                decision = ?outcome.decision,
                "slow HA cycle: the lease renewal waits for it"
            );
        }

        // Sleep until the next cycle, but a holder renews loop_wait after its last renewal
        // was sent (a slow cycle must not stretch the interval), and wakes at its deadline:
        // fencing must not wait for a cycle.
        let now = Instant::now();
        let mut wake = now + config.loop_wait;
        if let Some(lease) = deps.handle.view().borrow().state.lease {
            if lease.holder == me {
                if let Some(sent) = executor.holder_clock().sent(&lease) {
                    wake = wake.min((sent + config.loop_wait).max(now + MIN_CYCLE));
                }
                if let Some(deadline) = executor.holder_clock().deadline(&lease, config.ttl) {
                    wake = wake.min(deadline.max(now));
                }
            }
        }
        previous = Some(obs.clone());
        if again_now {
            continue;
        }
        let holder = view.state.lease.map(|l| l.holder).filter(|h| *h != me);
        let holder_was_primary = holder
            .and_then(|h| obs.peers.get(&h))
            .is_some_and(|p| p.pg.running && !p.pg.in_recovery);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
            _ = tenure_changed(deps.handle.view(), &view) => {}
            _ = turned_primary(deps.peers.clone(), holder), if !holder_was_primary => {}
        }
    }
    executor.shutdown().await;
}

/// The members whose last answer, a running replica, arrived more than `horizon` ago (so
/// they do not count as answering) but no more than twice that.
fn quiet_replicas(reports: &PeerStatuses, horizon: Duration, now: Instant) -> BTreeSet<NodeId> {
    reports
        .iter()
        .filter(|(_, report)| report.status.pg.running && report.status.pg.in_recovery)
        .filter(|(_, report)| {
            let quiet_for = now.saturating_duration_since(report.received);
            quiet_for > horizon && quiet_for <= horizon * 2
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The shortest pause between cycles when a renewal is overdue.
const MIN_CYCLE: Duration = Duration::from_millis(50);

/// Decisions that build a data directory (initdb, a clone, a rewind).
fn builds_data_dir(decision: &Decision) -> bool {
    matches!(
        decision,
        Decision::Bootstrap
            | Decision::Clone { .. }
            | Decision::Rewind { .. }
            | Decision::Reinit { .. }
            | Decision::Reclone { .. }
    )
}

/// Decisions that legitimately take long (they renew the lease while they run).
fn long_action(decision: &Decision) -> bool {
    builds_data_dir(decision) || matches!(decision, Decision::StartPrimary | Decision::Promote)
}

/// Resolves when `holder`'s status first shows a writable primary (a new primary is up:
/// replicas clone from it or follow it without waiting a cycle). Never without a holder.
async fn turned_primary(mut peers: watch::Receiver<Arc<PeerStatuses>>, holder: Option<NodeId>) {
    let Some(holder) = holder else {
        return std::future::pending().await;
    };
    loop {
        let primary = peers
            .borrow_and_update()
            .get(&holder)
            .is_some_and(|r| r.status.pg.running && !r.status.pg.in_recovery);
        if primary {
            return;
        }
        if peers.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Resolves when the committed lease changes hands (holder or epoch) or a switchover is
/// requested or cleared, compared with `seen`. Renewals (a new `seq` only) do not count:
/// otherwise every renewal would wake its own holder at once.
async fn tenure_changed(mut view: watch::Receiver<Arc<ClusterView>>, seen: &ClusterView) {
    let key = |v: &ClusterView| {
        (
            v.state.lease.map(|l| (l.holder, l.epoch)),
            v.state.switchover.clone(),
            v.state.database,
        )
    };
    let before = key(seen);
    loop {
        if key(&view.borrow_and_update()) != before {
            return;
        }
        if view.changed().await.is_err() {
            // The state machine is gone (shutdown): never resolve.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_holder_gives_up_before_any_other_member_may_take_over() {
        let ttl = Duration::from_secs(2);
        let lease = Lease {
            holder: NodeId(1),
            epoch: Epoch(3),
            seq: 5,
        };
        let sent = Instant::now();
        let mut holder = HolderClock::default();
        holder.committed(lease.epoch, sent);
        let deadline = holder.deadline(&lease, ttl).unwrap();
        // The earliest another member can see this renewal is when it is sent; it may take
        // over only ttl after that.
        assert!(deadline < sent + ttl);
        assert_eq!(deadline, sent + ttl - safety_margin(ttl));
        // A renewal in another epoch says nothing about this lease.
        assert!(holder
            .deadline(
                &Lease {
                    epoch: Epoch(4),
                    ..lease
                },
                ttl
            )
            .is_none());
        // An older send never moves the deadline back.
        holder.committed(lease.epoch, sent - Duration::from_secs(1));
        assert_eq!(holder.deadline(&lease, ttl), Some(deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_is_quiet_from_the_freshness_horizon_to_twice_it() {
        use crate::postgres::{DataDir, PgStatus};
        let horizon = Duration::from_millis(1500);
        let now = Instant::now() + Duration::from_secs(10);
        let report = |running: bool, in_recovery: bool, ago_ms: u64| PeerReport {
            status: PeerStatus {
                node_id: NodeId(0),
                pg: PgStatus {
                    running,
                    in_recovery,
                    ..PgStatus::default()
                },
                data_dir: DataDir::Initialised { system_id: 1 },
                following: None,
                summary: String::new(),
                pre_promote_refused: false,
                vip: false,
            },
            received: now - Duration::from_millis(ago_ms),
            taken: now - Duration::from_millis(ago_ms),
        };
        let reports: PeerStatuses = [
            // (id, running, in recovery, answered ms ago)
            (1, true, true, 1500),  // still fresh: in `peers`, not quiet
            (2, true, true, 1501),  // just past the horizon: quiet
            (3, true, true, 3000),  // twice the horizon: still quiet
            (4, true, true, 3001),  // longer: gone, no longer waited for
            (5, true, false, 2000), // a primary: not a candidate, not waited for
            (6, false, true, 2000), // stopped: neither
        ]
        .into_iter()
        .map(|(id, running, rec, ago)| (NodeId(id), report(running, rec, ago)))
        .collect();
        let quiet = quiet_replicas(&reports, horizon, now);
        assert_eq!(quiet, BTreeSet::from([NodeId(2), NodeId(3)]));
    }
}
