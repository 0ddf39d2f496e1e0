//! The runtime: turns a [`Decision`] into PostgreSQL calls and Raft proposals, and reports
//! what happened to the engine's [`Memory`] as [`Event`]s. It decides nothing and remembers
//! no rule's state: every branch is the one `decide` chose, and every timer, back-off and
//! tenure lives in `Memory` (STYLE §2.3). What it keeps is what it configured: the member
//! PostgreSQL streams from, the slots made, the parameters applied. Long actions (initdb, a
//! restart) run while the lease keeps being renewed, so holding it never depends on their
//! speed.
//!
//! By concern: the lease, renewals, fence and VIP in `lease.rs`; becoming and being a
//! primary in `primary.rs`; cloning, rewinding and following in `replica.rs`; the
//! synchronous rule in `sync.rs`; a restore of the cluster in `restore.rs`.

mod lease;
mod primary;
mod replica;
mod restore;
mod sync;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::memory::{Event, Memory};
use super::{Decision, Observation};
use crate::cluster::{Command, CommandResult, NodeId};
use crate::postgres::{Error as PgError, Postgres, StopMode, Upstream};
use crate::raft::RaftHandle;

pub use super::memory::slot_name;

/// How long PostgreSQL may take to start before the action counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before it is escalated to an immediate one (a crash
/// stop). Well above `wal_sender_timeout` (10 s): cut off from its standbys, a primary's
/// fast shutdown waits that long for them to confirm its last WAL, and that wait must end
/// in a clean stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`Executor::apply_parameters`] applied from the dynamic configuration.
type Applied = (
    std::collections::BTreeMap<String, String>,
    Vec<String>,
    Option<crate::cluster::BackupConfig>,
);

pub struct Executor {
    me: NodeId,
    handle: RaftHandle,
    postgres: Arc<Postgres>,
    /// The member our PostgreSQL is configured to stream from (None: primary or unknown).
    following: Option<NodeId>,
    /// The slots last made to exist on our primary, and when: made again when membership
    /// changes, checked for invalidated ones every [`primary::SLOT_CHECK`].
    slots: Option<(BTreeSet<String>, Instant)>,
    /// The `postgresql_parameters`, `pg_hba` rules and `[backup]` last applied.
    applied_parameters: Option<Applied>,
    /// `[hooks]` and this member's name, which hooks are told.
    hooks: crate::hooks::HooksConfig,
    name: String,
    /// The floating VIP, in netlink mode: held while this member is a healthy primary with
    /// a renewed lease, released before anything else when it stops being one.
    vip: Option<crate::vip::Vip>,
    /// The VIP as hooks are told it (`address/prefix`), or empty.
    vip_text: String,
    /// The watchdog process that kills our primary if we stop renewing (`crate::fence`).
    fence: Option<Arc<crate::fence::Fence>>,
}

impl Executor {
    pub fn new(me: NodeId, handle: RaftHandle, postgres: Arc<Postgres>) -> Self {
        Self {
            me,
            handle,
            postgres,
            following: None,
            slots: None,
            applied_parameters: None,
            hooks: crate::hooks::HooksConfig::default(),
            name: me.to_string(),
            vip: None,
            vip_text: String::new(),
            fence: None,
        }
    }

    /// Runs `hooks` (told this member's `name`) where they apply.
    pub fn with_hooks(mut self, hooks: crate::hooks::HooksConfig, name: String) -> Self {
        self.hooks = hooks;
        self.name = name;
        self
    }

    /// Arms and disarms `fence` (see `crate::fence` for when).
    pub fn with_fence(mut self, fence: Option<Arc<crate::fence::Fence>>) -> Self {
        self.fence = fence;
        self
    }

    /// Manages `vip` (netlink mode); `text` is what hooks are told (also in hook mode).
    pub fn with_vip(mut self, vip: Option<crate::vip::Vip>, text: String) -> Self {
        self.vip = vip;
        self.vip_text = text;
        self
    }

    /// Whether this member's interface carries the VIP.
    pub fn vip_held(&self) -> bool {
        self.vip.as_ref().is_some_and(crate::vip::Vip::is_held)
    }

    pub fn following(&self) -> Option<NodeId> {
        self.following
    }

    /// Carries out `decision`. Returns true when the loop should run its next cycle at once
    /// (the lease was just acquired, or PostgreSQL changed role), false to wait `loop_wait`.
    /// Failures are logged here, at the task boundary, and retried by a later cycle.
    pub async fn execute(
        &mut self,
        decision: &Decision,
        obs: &Observation,
        memory: &mut Memory,
    ) -> bool {
        let span = tracing::info_span!(
            "action",
            decision = decision.name(),
            epoch = obs.lease.map(|l| l.epoch.0)
        );
        async {
            // Fencing order (DESIGN §3): the VIP goes first (see Decision::keeps_vip).
            if !decision.keeps_vip() {
                self.release_vip().await;
            }
            // Not a primary: nothing for the fence to kill.
            if !obs.pg.is_writable() {
                self.tell_fence(crate::fence::Instruction::Disarm);
            }
            let result = self.try_execute(decision, obs, memory).await;
            memory.fold(Event::Executed {
                renewed: matches!(decision, Decision::RenewLease) && result.is_ok(),
            });
            match result {
                Ok(again) => again,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), ?decision, "action failed; retrying next cycle");
                    false
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn try_execute(
        &mut self,
        decision: &Decision,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        match decision {
            Decision::Idle | Decision::Paused | Decision::Wait => Ok(false),
            Decision::AcquireLease { expected } | Decision::TakeOver { expected } => {
                self.acquire(*expected, obs, memory).await
            }
            Decision::RenewLease => {
                if !memory.renewed_ahead() {
                    self.renew(obs, memory).await?;
                }
                self.hold_vip(obs, memory);
                self.after_renewal(obs, memory).await?;
                Ok(false)
            }
            Decision::ReclaimLease => {
                // Renewing is all: the next cycle, with a fresh lease, acts on it.
                self.renew(obs, memory).await?;
                tracing::info!("lease renewed: it is fresh again");
                Ok(true)
            }
            Decision::Bootstrap => self.bootstrap(obs, memory).await,
            Decision::StartPrimary => self.start_primary(obs, memory).await,
            Decision::Promote => self.promote(obs, memory).await,
            Decision::Fence { follow } => self.fence_primary(*follow).await,
            Decision::HandOver { to } => self.hand_over(*to, obs, memory).await,
            Decision::ReleaseLease { reason } => {
                let lease = obs.lease.ok_or_else(|| anyhow!("no lease to release"))?;
                tracing::warn!(%reason, epoch = lease.epoch.0, "releasing the lease");
                self.release_lease(obs).await?;
                Ok(true)
            }
            Decision::Clone { source } => self.clone_from(*source, obs).await,
            Decision::Rewind { source } => self.rewind(*source, obs, memory).await,
            Decision::Reclone { source } => {
                self.clone_afresh(*source, replica::Discard::MoveAside, obs)
                    .await?;
                Ok(true)
            }
            Decision::Restart { primary } => self.restart(*primary, obs, memory).await,
            Decision::Reinit { source } => {
                self.clone_afresh(*source, replica::Discard::Remove, obs)
                    .await?;
                self.action_done(crate::cluster::MemberAction::Reinit, obs)
                    .await?;
                Ok(true)
            }
            Decision::DropAction { action, reason } => {
                tracing::warn!(?action, %reason, "operator's request not carried out");
                self.action_done(*action, obs).await?;
                Ok(false)
            }
            Decision::StartReplica { follow } => {
                self.start_replica(*follow, obs).await?;
                Ok(false)
            }
            Decision::Follow { leader } => {
                self.follow(*leader, obs).await?;
                Ok(false)
            }
            Decision::StandDown {
                restore,
                remove,
                release,
            } => self.stand_down(*restore, *remove, *release, obs).await,
            Decision::Restore { restore } => self.restore(*restore, obs, memory).await,
        }
    }

    /// Where member `id`'s PostgreSQL is, and our slot on it.
    fn upstream(&self, id: NodeId, obs: &Observation) -> anyhow::Result<Upstream> {
        let member = obs
            .members
            .get(&id)
            .ok_or_else(|| anyhow!("node {id} is not a member"))?;
        let (host, port) = member
            .pg_addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            .ok_or_else(|| anyhow!("node {id} has no PostgreSQL address ({:?})", member.pg_addr))?;
        Ok(Upstream {
            host,
            port,
            slot: slot_name(self.me),
        })
    }

    /// Proposes `command`, bounded by retry_timeout.
    async fn propose(&self, command: Command, obs: &Observation) -> anyhow::Result<CommandResult> {
        let timeout = obs.config.retry_timeout;
        match tokio::time::timeout(timeout, self.handle.propose(command)).await {
            Ok(result) => Ok(result?),
            Err(_) => bail!("not committed within retry_timeout ({timeout:?})"),
        }
    }

    /// Stops PostgreSQL with a fast shutdown. The fence stands down as soon as the
    /// postmaster says it is shutting down: it then commits nothing more for clients, and
    /// its clean shutdown (which in a partition waits up to `wal_sender_timeout` for the
    /// standbys it cannot reach) must not be turned into a crash by the fence.
    async fn stop_postgres(&self) -> Result<(), PgError> {
        self.postgres
            .stop_then(StopMode::Fast, STOP_TIMEOUT, |pid| {
                tracing::info!(
                    pid,
                    "PostgreSQL is shutting down: it accepts no more writes"
                );
                self.tell_fence(crate::fence::Instruction::Disarm);
            })
            .await
    }

    async fn action_done(
        &self,
        action: crate::cluster::MemberAction,
        obs: &Observation,
    ) -> anyhow::Result<()> {
        let command = Command::ActionDone {
            member: self.me,
            action,
        };
        self.propose(command, obs).await?;
        Ok(())
    }

    /// On daemon shutdown: stop PostgreSQL first, then release the lease if we hold it, so
    /// a successor never overlaps a writable us.
    pub async fn shutdown(&mut self) {
        self.release_vip().await;
        if let Err(e) = self.stop_postgres().await {
            tracing::warn!(error = %e, "stopping PostgreSQL at shutdown");
        }
        let view = self.handle.view().borrow().clone();
        if let Some(lease) = view.state.lease {
            if lease.holder == self.me {
                let release = Command::ReleaseLease {
                    holder: self.me,
                    epoch: lease.epoch,
                };
                match tokio::time::timeout(Duration::from_secs(2), self.handle.propose(release))
                    .await
                {
                    Ok(Ok(_)) => tracing::info!(epoch = lease.epoch.0, "released the lease"),
                    _ => tracing::warn!("could not release the lease; it expires after ttl"),
                }
            }
        }
    }
}
