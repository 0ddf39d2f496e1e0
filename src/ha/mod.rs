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
pub mod gather;
pub mod memory;
pub mod observe;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use decide::{decide, Decision, Outcome};
pub use memory::Memory;
pub use observe::{LeaseClockView, Observation, PeerStatus};

use crate::cluster::{Epoch, Lease, NodeId};
use crate::lease::LeaseClock;
use crate::peers::{LocalStatus, PeerStatuses};
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

/// Runs the loop until `shutdown`. On shutdown a writable primary is stopped before the
/// lease is released, so a successor never overlaps a writable us.
pub async fn run(deps: Deps, shutdown: CancellationToken) {
    let me = NodeId(deps.handle.id());
    let mut executor = execute::Executor::new(me, deps.handle.clone(), deps.postgres.clone())
        .with_hooks(deps.hooks.clone(), deps.name.clone())
        .with_vip(deps.vip.clone(), deps.vip_text.clone())
        .with_fence(deps.fence.clone())
        .with_rewind_marker_checked();
    let mut memory = Memory::default();
    let mut runtime = Runtime::new(&deps);
    // The last cycle's observation, for renewing ahead of this cycle's status query.
    let mut previous: Option<Observation> = None;
    loop {
        let view: Arc<ClusterView> = deps.handle.view().borrow().clone();
        let cycle = tracing::info_span!("ha", member = %deps.name, epoch = view.state.lease.map(|l| l.epoch.0));
        let next = runtime
            .cycle(&view, &mut executor, &mut memory, previous.as_ref())
            .instrument(cycle)
            .await;
        let (obs, again_now) = next;
        // Sleep until the next cycle, but a holder renews loop_wait after its last renewal
        // was sent (a slow cycle must not stretch the interval), and wakes at its deadline:
        // fencing must not wait for a cycle.
        let wake = next_wake(me, &deps.handle, &memory, &obs.config);
        let holder = view.state.lease.map(|l| l.holder).filter(|h| *h != me);
        let holder_was_primary = holder
            .and_then(|h| obs.peers.get(&h))
            .is_some_and(|p| p.pg.is_writable());
        previous = Some(obs);
        if again_now {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
            _ = tenure_changed(deps.handle.view(), &view) => {}
            _ = turned_primary(deps.peers.clone(), holder), if !holder_was_primary => {}
        }
    }
    executor.shutdown().await;
}

/// When the loop wakes next: after loop_wait, but a holder renews loop_wait after its last
/// renewal was sent and wakes at its deadline.
fn next_wake(
    me: NodeId,
    handle: &RaftHandle,
    memory: &Memory,
    config: &crate::cluster::DynamicConfig,
) -> Instant {
    let now = Instant::now();
    let mut wake = now + config.loop_wait;
    if let Some(lease) = handle.view().borrow().state.lease {
        if lease.holder == me {
            if let Some(sent) = memory.holder_clock().sent(&lease) {
                wake = wake.min((sent + config.loop_wait).max(now + MIN_CYCLE));
            }
            if let Some(deadline) = memory.holder_clock().deadline(&lease, config.ttl) {
                wake = wake.min(deadline.max(now));
            }
        }
    }
    wake
}

/// The loop's I/O around the engine: gathering, publishing, logging, acting.
struct Runtime<'a> {
    deps: &'a Deps,
    me: NodeId,
    role_changes: crate::hooks::RoleChanges,
    last_role: Option<&'static str>,
    last_sentence: String,
}

impl<'a> Runtime<'a> {
    fn new(deps: &'a Deps) -> Self {
        Runtime {
            deps,
            me: NodeId(deps.handle.id()),
            role_changes: crate::hooks::RoleChanges::spawn(&deps.hooks),
            last_role: None,
            last_sentence: String::new(),
        }
    }

    /// One cycle: gather, observe, decide, log, execute. Returns the observation and
    /// whether to run the next cycle at once.
    async fn cycle(
        &mut self,
        view: &ClusterView,
        executor: &mut execute::Executor,
        memory: &mut Memory,
        previous: Option<&Observation>,
    ) -> (Observation, bool) {
        let deps = self.deps;
        // The status describes PostgreSQL as of no earlier than this.
        let taken = Instant::now();
        // A primary whose last cycle renewed renews again while the status query runs: a
        // PostgreSQL slow to answer under load (a second, measured) must not cost the lease
        // it still deserves. The previous cycle saw it healthy; this one judges it again.
        let ahead = previous.filter(|p| memory.renews_ahead(p, view.state.lease.as_ref(), taken));
        let renew_ahead = async {
            if let Some(previous) = ahead {
                executor.renew_ahead(previous, memory).await;
            }
        };
        let (pg, ()) = tokio::join!(deps.postgres.status(), renew_ahead);
        let status_took = taken.elapsed();
        let data_dir = deps.postgres.data_dir_state();
        let now = Instant::now();
        let status = PeerStatus {
            node_id: self.me,
            pg: pg.clone(),
            data_dir,
            following: executor.following(),
            summary: self.last_sentence.clone(),
            pre_promote_refused: memory.pre_promote_refused(now).is_some(),
            vip: executor.vip_held(),
            backrest: deps.postgres.backrest_endpoint(),
        };
        deps.local_status.send_replace(Some((status, taken)));
        self.tell_role_change(&pg, view);
        let peers = deps.peers.borrow().clone();
        let obs = gather::observe(
            gather::Gathered {
                me: self.me,
                view,
                pg,
                data_dir,
                following: executor.following(),
                peers: &peers,
                lease_clock: &deps.lease_clock.snapshot(),
                needs_rewind: executor.needs_rewind(),
                rejoin_blocked: executor.rejoin_blocked(),
                now,
                now_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            },
            memory,
        );
        let outcome = decide(&obs);
        if outcome.sentence != self.last_sentence {
            tracing::info!("{}", outcome.sentence);
            crate::systemd::status(&outcome.sentence);
            self.last_sentence = outcome.sentence.clone();
        } else {
            tracing::debug!("{}", outcome.sentence);
        }
        let acting = Instant::now();
        let again_now = executor.execute(&outcome.decision, &obs, memory).await;
        let action_took = acting.elapsed();
        memory.acted(&outcome.decision);
        let applying = Instant::now();
        executor.apply_parameters(&obs, memory).await;
        // A slow cycle delays the next renewal: say where the time went.
        let cycle = taken.elapsed();
        let config = &obs.config;
        if cycle > config.loop_wait.max(config.ttl / 4) && !outcome.decision.takes_long() {
            tracing::warn!(
                took = ?cycle,
                status = ?status_took,
                action = ?action_took,
                parameters = ?applying.elapsed(),
                decision = ?outcome.decision,
                "slow HA cycle: the lease renewal waits for it"
            );
        }
        (obs, again_now)
    }

    /// Tells the role-change hooks when PostgreSQL's role changed.
    fn tell_role_change(&mut self, pg: &crate::postgres::PgStatus, view: &ClusterView) {
        let role = match (pg.running, pg.in_recovery) {
            (false, _) => "stopped",
            (true, true) => "replica",
            (true, false) => "primary",
        };
        if self.last_role == Some(role) {
            return;
        }
        self.last_role = Some(role);
        let epoch = view.state.lease.map_or(view.state.last_epoch, |l| l.epoch);
        self.role_changes.changed(crate::hooks::HookArgs {
            role: role.into(),
            member: self.deps.name.clone(),
            epoch: epoch.0,
            vip: self.deps.vip_text.clone(),
        });
    }
}

/// The shortest pause between cycles when a renewal is overdue.
const MIN_CYCLE: Duration = Duration::from_millis(50);

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
            .is_some_and(|r| r.status.pg.is_writable());
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
    use std::collections::BTreeSet;

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
        use crate::peers::PeerReport;
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
                backrest: None,
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
        let quiet = gather::quiet_replicas(&reports, horizon, now);
        assert_eq!(quiet, BTreeSet::from([NodeId(2), NodeId(3)]));
    }
}
