//! The lease in the runtime: acquiring, renewing (ahead of a cycle, during long actions,
//! together with a timeline reservation), releasing; and what follows a renewal's fate:
//! the fence's deadline, the VIP, commits that wait while a renewal is overdue.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::time::Instant;

use super::{Executor, Observation};
use crate::cluster::{Command, CommandResult, LeaseRef, NodeId};
use crate::ha::memory::{Event, Memory};

impl Executor {
    pub(super) async fn acquire(
        &mut self,
        expected: Option<LeaseRef>,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        let sent = Instant::now();
        let command = Command::AcquireLease {
            candidate: self.me,
            expected,
        };
        match self.propose(command, obs).await? {
            CommandResult::Lease { lease } if lease.holder == self.me => {
                memory.fold(Event::LeaseCommitted {
                    epoch: lease.epoch,
                    sent,
                });
                tracing::info!(epoch = lease.epoch.0, "acquired the leader lease");
                Ok(true)
            }
            CommandResult::Rejected { rejection } => {
                tracing::info!(%rejection, "lease not acquired");
                Ok(false)
            }
            other => bail!("unexpected result {other:?}"),
        }
    }

    /// Renews the lease at the start of a cycle, on `previous` (the last cycle's
    /// observation), when the engine says so ([`Memory::renews_ahead`]); the cycle's own
    /// renewal is then skipped.
    pub async fn renew_ahead(&mut self, previous: &Observation, memory: &mut Memory) {
        match self.renew(previous, memory).await {
            Ok(()) => memory.fold(Event::RenewedAhead),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "renewing the lease"),
        }
    }

    /// Renews the lease, waiting as [`Memory::renewal_plan`] says: bounded by the holder's
    /// deadline, and blocking commits if it is overdue while this member is writable.
    pub(super) async fn renew(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<()> {
        let lease = match obs.lease {
            Some(lease) if lease.holder == self.me => lease,
            _ => bail!("this member does not hold the lease"),
        };
        let sent = Instant::now();
        let writable = obs.pg.is_writable();
        let plan = memory.renewal_plan(
            &lease,
            obs.config.ttl,
            obs.config.loop_wait,
            obs.config.retry_timeout,
            writable,
            sent,
        );
        let command = Command::RenewLease {
            holder: self.me,
            epoch: lease.epoch,
        };
        let handle = self.handle.clone();
        let proposal = handle.propose(command);
        tokio::pin!(proposal);
        let mut early = None;
        if let Some(contact) = plan.block_writes_at {
            match tokio::time::timeout_at(contact, &mut proposal).await {
                Ok(result) => early = Some(result),
                Err(_) => self.block_writes(obs, memory).await,
            }
        }
        let outcome = match early {
            Some(result) => Ok(result),
            None => tokio::time::timeout_at(plan.limit, &mut proposal).await,
        };
        match outcome {
            Ok(Ok(CommandResult::Lease { lease })) => {
                let released = memory.renewal_committed(lease.epoch, sent);
                if let Some(deadline) = memory.holder_clock().deadline(&lease, obs.config.ttl) {
                    self.arm_fence(deadline, obs.config.ttl);
                }
                if released && writable {
                    self.apply_primary_config(memory).await?;
                    tracing::info!("lease renewed again: commits no longer wait");
                }
                Ok(())
            }
            Ok(Ok(CommandResult::Rejected { rejection })) => bail!("renewal rejected: {rejection}"),
            Ok(Ok(other)) => bail!("unexpected result {other:?}"),
            Ok(Err(e)) => Err(e).context("renewing the lease"),
            Err(_) => bail!("renewal not committed before the lease deadline"),
        }
    }

    /// Renews the lease and, in the same Raft round, reserves the timeline this replica's
    /// promotion is to create: one above everything its data directory knows and above
    /// every timeline reserved before. Both must commit.
    pub(super) async fn reserve_timeline_renewing(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<u32> {
        let at_least = self.postgres.lowest_next_timeline(obs.pg.timeline)?;
        self.reserve_timeline(obs, memory, at_least).await
    }

    /// Renews the lease and reserves a timeline of at least `at_least` in the same round.
    pub(super) async fn reserve_timeline(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
        at_least: u32,
    ) -> anyhow::Result<u32> {
        let lease = match obs.lease {
            Some(lease) if lease.holder == self.me => lease,
            _ => bail!("this member does not hold the lease"),
        };
        let command = Command::ReserveTimeline {
            holder: self.me,
            epoch: lease.epoch,
            at_least,
        };
        let handle = self.handle.clone();
        let timeout = obs.config.retry_timeout;
        let reserve = async move { tokio::time::timeout(timeout, handle.propose(command)).await };
        let (reserved, renewed) = tokio::join!(reserve, self.renew(obs, memory));
        renewed?;
        match reserved {
            Ok(Ok(CommandResult::Timeline { timeline })) => Ok(timeline),
            Ok(Ok(CommandResult::Rejected { rejection })) => {
                bail!("reserving a timeline for the promotion: {rejection}")
            }
            Ok(Ok(other)) => bail!("reserving a timeline: unexpected result {other:?}"),
            Ok(Err(e)) => Err(e).context("reserving a timeline for the promotion"),
            Err(_) => {
                bail!("timeline reservation not committed within retry_timeout ({timeout:?})")
            }
        }
    }

    /// Makes commits on this primary wait for a standby that does not exist, so that none
    /// is acknowledged while this member may have lost the quorum (DESIGN §3: fence writers
    /// at the first missed contact, before the lease deadline demotes PostgreSQL).
    async fn block_writes(&mut self, obs: &Observation, memory: &mut Memory) {
        memory.fold(Event::WritesBlocked);
        self.release_vip().await;
        tracing::warn!(
            after = ?obs.config.loop_wait / 2,
            "lease renewal not committed in time: commits wait until it is (cut off from the quorum?)"
        );
        if let Err(e) = self.apply_primary_config(memory).await {
            tracing::warn!(error = %format!("{e:#}"), "blocking commits");
        }
    }

    /// Releases the lease (a switchover's hand-over, or standing aside).
    pub(super) async fn release_lease(&self, obs: &Observation) -> anyhow::Result<()> {
        let lease = obs.lease.ok_or_else(|| anyhow!("no lease to release"))?;
        let command = Command::ReleaseLease {
            holder: self.me,
            epoch: lease.epoch,
        };
        self.propose(command, obs).await?;
        Ok(())
    }

    /// Asks for the VIP until the lease deadline, if this member is a writable primary whose
    /// commits do not wait for a missing renewal (the decision was RenewLease and the
    /// renewal committed). Each call extends the last.
    pub(super) fn hold_vip(&self, obs: &Observation, memory: &Memory) {
        let (Some(vip), Some(lease)) = (&self.vip, obs.lease) else {
            return;
        };
        let deadline = memory.holder_clock().deadline(&lease, obs.config.ttl);
        match deadline {
            Some(deadline)
                if obs.pg.is_writable()
                    && !memory.writes_blocked()
                    && deadline > Instant::now() =>
            {
                vip.hold_until(deadline)
            }
            _ => {}
        }
    }

    /// Removes the VIP (if held) and waits for it to be gone.
    pub(super) async fn release_vip(&self) {
        if let Some(vip) = &self.vip {
            vip.release().await;
        }
    }

    /// After a committed renewal: the fence kills our running PostgreSQL (a primary, or a
    /// replica about to be promoted) unless a later renewal moves the deadline, half the
    /// safety margin after the holder's `deadline`: after our own demotion, before anyone's
    /// takeover (`crate::fence`). A replica's arming is undone by the next cycle.
    fn arm_fence(&self, deadline: Instant, ttl: std::time::Duration) {
        let Some(pid) = self.postgres.postmaster_pid() else {
            return;
        };
        let fires = deadline + crate::ha::safety_margin(ttl) / 2;
        self.tell_fence(crate::fence::Instruction::Arm {
            after: fires.saturating_duration_since(Instant::now()),
            pid,
        });
    }

    pub(super) fn tell_fence(&self, instruction: crate::fence::Instruction) {
        if let Some(fence) = &self.fence {
            fence.tell(instruction);
        }
    }

    /// Runs `action` while renewing the lease every loop_wait if this member holds it.
    pub(super) async fn with_renewals<T, E: Into<anyhow::Error>>(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
        action: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T> {
        tokio::pin!(action);
        loop {
            tokio::select! {
                result = &mut action => return result.map_err(Into::into),
                _ = tokio::time::sleep(obs.config.loop_wait) => {
                    if let Err(e) = self.renew(obs, memory).await {
                        tracing::warn!(error = %format!("{e:#}"), "renewing during a long action");
                    }
                }
            }
        }
    }

    /// A switchover: let open transactions finish (up to `switchover_drain_timeout`, the
    /// lease renewed meanwhile; poolers hold new ones), stop PostgreSQL (its fast shutdown
    /// sends connected standbys the rest of the WAL), then release the lease for `to`.
    pub(super) async fn hand_over(
        &mut self,
        to: NodeId,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        let lease = obs.lease.ok_or_else(|| anyhow!("no lease to hand over"))?;
        let limit = obs.config.switchover_drain_timeout;
        let postgres = self.postgres.clone();
        let drained = self
            .with_renewals(obs, memory, drain(&postgres, limit))
            .await?;
        match drained {
            0 => tracing::info!(to = %to, "switchover: no transaction open"),
            n => tracing::warn!(
                to = %to,
                open = n,
                "switchover: transactions still open after switchover_drain_timeout are cut"
            ),
        }
        tracing::info!(to = %to, epoch = lease.epoch.0, "switchover: stopping PostgreSQL");
        // Not writable from here on.
        self.set_needs_rewind(true);
        self.stop_postgres().await.context("switchover")?;
        self.following = None;
        self.release_lease(obs)
            .await
            .context("switchover: releasing the lease")?;
        tracing::info!(to = %to, "switchover: lease released");
        Ok(true)
    }
}

/// Waits up to `limit` for no client transaction to be open; returns how many still are.
/// A failing count (PostgreSQL busy or gone) ends the wait: stopping is what comes next.
async fn drain(postgres: &crate::postgres::Postgres, limit: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    loop {
        let open = match postgres.open_transactions().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "switchover: counting open transactions");
                return Ok(0);
            }
        };
        if open == 0 || Instant::now() >= deadline {
            return Ok(open);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// How often a switchover looks again for open transactions.
const DRAIN_POLL: Duration = Duration::from_millis(20);
