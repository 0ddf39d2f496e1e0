//! Turns a [`Decision`] into PostgreSQL calls and Raft proposals. Decides nothing: every
//! branch here is the one `decide` chose (STYLE §2.3). Long actions (initdb, a restart)
//! run while the lease keeps being renewed, so holding it never depends on their speed.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::time::Instant;

use super::{Decision, HolderClock, Observation};
use crate::cluster::{Command, CommandResult, Epoch, NodeId, SyncRule, SynchronousMode};
use crate::postgres::{
    ConfigChange, DataDir, Error as PgError, Postgres, Role, StopMode, Upstream,
};
use crate::raft::RaftHandle;

/// How long PostgreSQL may take to start before the action counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before it is escalated to an immediate one (a crash
/// stop). Well above `wal_sender_timeout` (10 s): cut off from its standbys, a primary's
/// fast shutdown waits that long for them to confirm its last WAL, and that wait must end
/// in a clean stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait before trying again a rewind that failed without touching anything
/// (the source unreachable, a password not yet replicated).
const REWIND_RETRY: Duration = Duration::from_secs(5);

/// A `synchronous_standby_names` no standby ever answers to: commits wait (and so are not
/// acknowledged) until the name is replaced. Used while the lease's quorum is out of reach.
const NO_STANDBY: &str = "pgquorum_writes_blocked";

/// The name of the replication slot of member `id` on the primary, which is also its
/// `application_name` (what `synchronous_standby_names` lists).
pub fn slot_name(id: NodeId) -> String {
    format!("pgquorum_{}", id.0)
}

/// The member whose `application_name` is `name`, if it is one of ours.
fn member_of_slot(name: &str) -> Option<NodeId> {
    name.strip_prefix("pgquorum_")?.parse().ok().map(NodeId)
}

/// What [`Executor::clone_afresh`] does with the data directory it replaces.
#[derive(Debug, Clone, Copy)]
enum Discard {
    /// Renamed `<data dir>.rewind-failed-<unix time>`: a failed rewind deletes nothing.
    MoveAside,
    /// Deleted: the operator asked for it (`pgquorum reinit --force`).
    Remove,
}

/// A rule with member names, for the log: `ANY 1 of [n2, n3]`.
fn describe_rule(rule: &SyncRule, obs: &Observation) -> String {
    if rule.members.is_empty() || rule.quorum == 0 {
        return "none".to_string();
    }
    let names: Vec<String> = rule
        .members
        .iter()
        .map(|id| {
            obs.members
                .get(id)
                .map_or(format!("n{id}"), |m| m.name.clone())
        })
        .collect();
    format!("ANY {} of [{}]", rule.quorum, names.join(", "))
}

/// The synchronous rule this primary's PostgreSQL runs, within one lease tenure.
#[derive(Debug, Default)]
struct SyncInForce {
    /// The tenure it belongs to; a new tenure starts from nothing.
    epoch: Option<Epoch>,
    /// What `synchronous_standby_names` says now; `None` when nothing synchronous is set.
    rule: Option<SyncRule>,
    /// When `rule` was last changed, and the WAL position every commit acknowledged under
    /// an earlier rule is below (read one loop_wait after the change, once every WAL sender
    /// has reloaded).
    switched: Option<(Instant, Option<crate::postgres::Lsn>)>,
}

pub struct Executor {
    me: NodeId,
    handle: RaftHandle,
    postgres: Arc<Postgres>,
    holder_clock: HolderClock,
    /// The member our PostgreSQL is configured to stream from (None: primary or unknown).
    following: Option<NodeId>,
    /// The slots last made to exist on our primary; recomputed when membership changes.
    slots: Option<BTreeSet<String>>,
    /// When a rewind that failed without touching anything may be tried again.
    rewind_retry_at: Option<Instant>,
    /// The user parameters last applied to the running server.
    applied_parameters: Option<std::collections::BTreeMap<String, String>>,
    /// The synchronous rule in force on our primary (synchronous and quorum modes).
    sync: SyncInForce,
    /// Consecutive failed starts of PostgreSQL as primary, with the last error; cleared once
    /// it runs.
    start_failure: Option<super::observe::StartFailure>,
    /// Commits wait for a standby that does not exist: a lease renewal did not commit in
    /// time, so this primary may be cut off from the quorum (see [`Executor::renew`]).
    writes_blocked: bool,
    /// `[hooks]` and this member's name, which hooks are told.
    hooks: crate::hooks::HooksConfig,
    name: String,
    /// When and why the `pre_promote` hook last refused a promotion.
    pre_promote_refused: Option<(Instant, String)>,
    /// The last executed decision was a successful renewal as a healthy primary: the next
    /// cycle may renew ahead of its status query ([`Executor::renew_ahead`]).
    renewing: bool,
    /// This cycle's renewal already committed ahead of the status query.
    renewed_ahead: bool,
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
        let executor = Self {
            me,
            handle,
            postgres,
            holder_clock: HolderClock::default(),
            following: None,
            slots: None,
            rewind_retry_at: None,
            applied_parameters: None,
            sync: SyncInForce::default(),
            start_failure: None,
            writes_blocked: false,
            hooks: crate::hooks::HooksConfig::default(),
            name: me.to_string(),
            pre_promote_refused: None,
            renewing: false,
            renewed_ahead: false,
            vip: None,
            vip_text: String::new(),
            fence: None,
        };
        // Whatever a primary wrote after the last failover may be missing on the new one.
        if executor.last_a_primarys() {
            executor.set_needs_rewind(true);
        }
        executor
    }

    /// The marker that this data directory must be rewound before following a primary.
    /// A file next to the data directory, so that a restart of the daemon keeps it.
    fn rewind_marker(&self) -> std::path::PathBuf {
        self.postgres
            .settings()
            .data_dir
            .with_extension("needs-rewind")
    }

    /// Whether the data directory was last used by a primary: initialised, no standby.signal.
    fn last_a_primarys(&self) -> bool {
        matches!(self.postgres.data_dir_state(), DataDir::Initialised { .. })
            && !self
                .postgres
                .settings()
                .data_dir
                .join("standby.signal")
                .exists()
    }

    /// Whether this data directory must be rewound before following a primary: the marker
    /// says so, or PostgreSQL is down in a directory last used by a primary. That one
    /// stopped as a primary, killed by the fence, the OOM killer or an operator, and may
    /// have written WAL that the next primary never got; asynchronous replication lags. The
    /// marker is written then, since starting it as a replica writes standby.signal.
    pub fn needs_rewind(&self) -> bool {
        if self.rewind_marker().exists() {
            return true;
        }
        let stopped_primary = !self.postgres.is_running() && self.last_a_primarys();
        if stopped_primary {
            self.set_needs_rewind(true);
        }
        stopped_primary
    }

    fn set_needs_rewind(&self, needed: bool) {
        let marker = self.rewind_marker();
        let result = if needed {
            std::fs::write(&marker, b"last used by a primary\n")
        } else {
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        };
        if let Err(e) = result {
            tracing::error!(marker = %marker.display(), error = %e, "recording whether a rewind is needed");
        }
    }

    /// A file next to the data directory that says why this member may not rejoin on its
    /// own (a rewind that failed part-way). Kept across restarts; `pgquorum reinit` (or the
    /// operator) removes it together with the data directory.
    fn block_marker(&self) -> std::path::PathBuf {
        self.postgres
            .settings()
            .data_dir
            .with_extension("rejoin-blocked")
    }

    pub fn rejoin_blocked(&self) -> Option<String> {
        std::fs::read_to_string(self.block_marker())
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn block_rejoin(&self, reason: &str) {
        if let Err(e) = std::fs::write(self.block_marker(), format!("{reason}\n")) {
            tracing::error!(error = %e, "recording why this member may not rejoin");
        }
    }

    pub fn start_failure(&self) -> Option<super::observe::StartFailure> {
        self.start_failure.clone()
    }

    /// Runs `hooks` (told this member's `name`) where they apply.
    pub fn with_hooks(mut self, hooks: crate::hooks::HooksConfig, name: String) -> Self {
        self.hooks = hooks;
        self.name = name;
        self
    }

    /// Why the `pre_promote` hook refused, if it did within
    /// [`REFUSAL_HOLD`](crate::hooks::REFUSAL_HOLD).
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

    pub fn pre_promote_refused(&self) -> Option<String> {
        self.pre_promote_refused
            .as_ref()
            .filter(|(at, _)| at.elapsed() < crate::hooks::REFUSAL_HOLD)
            .map(|(_, why)| why.clone())
    }

    /// Forgets failed starts (PostgreSQL runs, or this member no longer holds the lease).
    pub fn clear_start_failure(&mut self) {
        self.start_failure = None;
    }

    pub fn following(&self) -> Option<NodeId> {
        self.following
    }

    pub fn holder_clock(&self) -> &HolderClock {
        &self.holder_clock
    }

    /// Applies changed user parameters (the dynamic configuration's `postgresql_parameters`)
    /// to the running server: rewrites `pgquorum.conf` and reloads. A parameter that needs a
    /// restart then shows as pending restart (`pg_settings`); restarting stays the operator's
    /// call. Skipped while the server's role is not known, so that a replica's upstream is
    /// never written away; a server that is not running gets them when it is next started.
    pub async fn apply_parameters(&mut self, obs: &Observation) {
        let wanted = &obs.config.postgresql_parameters;
        self.postgres.set_parameters(wanted);
        if self.applied_parameters.as_ref() == Some(wanted) || !obs.pg.running {
            return;
        }
        let upstream = match (obs.pg.in_recovery, self.following) {
            (false, _) => None,
            (true, Some(leader)) => match self.upstream(leader, obs) {
                Ok(upstream) => Some(upstream),
                Err(_) => return,
            },
            (true, None) => return,
        };
        let names = self.standby_names();
        let role = match &upstream {
            None => Role::Primary {
                synchronous_standby_names: names,
            },
            Some(upstream) => Role::Replica {
                upstream: Some(upstream),
            },
        };
        let result = match self.postgres.write_config(&role) {
            Ok(ConfigChange::Unchanged) => Ok(()),
            Ok(_) => self.postgres.reload().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(parameters = ?wanted, "applied PostgreSQL parameters");
                self.applied_parameters = Some(wanted.clone());
            }
            Err(e) => tracing::warn!(error = %e, "applying PostgreSQL parameters; retrying"),
        }
    }

    /// Carries out `decision`. Returns true when the loop should run its next cycle at once
    /// (the lease was just acquired, or PostgreSQL changed role), false to wait `loop_wait`.
    /// Failures are logged here, at the task boundary, and retried by a later cycle.
    pub async fn execute(&mut self, decision: &Decision, obs: &Observation) -> bool {
        // Fencing order (DESIGN §3): the VIP goes first (see Decision::keeps_vip).
        if !decision.keeps_vip() {
            self.release_vip().await;
        }
        // Not a primary: nothing for the fence to kill.
        if !obs.pg.running || obs.pg.in_recovery {
            self.tell_fence(crate::fence::Instruction::Disarm);
        }
        let result = self.try_execute(decision, obs).await;
        self.renewing = matches!(decision, Decision::RenewLease) && result.is_ok();
        self.renewed_ahead = false;
        match result {
            Ok(again) => again,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), ?decision, "action failed; retrying next cycle");
                false
            }
        }
    }

    /// Renews the lease at the start of a cycle, on `previous` (the last cycle's
    /// observation), when that cycle renewed as a healthy primary and the deadline is still
    /// ahead; the cycle's own renewal is then skipped. Past the deadline nothing is sent
    /// here: that cycle must fence first.
    pub async fn renew_ahead(&mut self, previous: &Observation) {
        let Some(lease) = previous.lease else {
            return;
        };
        let ahead = self
            .holder_clock
            .deadline(&lease, previous.config.ttl)
            .is_some_and(|deadline| deadline > Instant::now());
        if !(self.renewing && ahead) {
            return;
        }
        match self.renew(previous).await {
            Ok(()) => self.renewed_ahead = true,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "renewing the lease"),
        }
    }

    async fn try_execute(
        &mut self,
        decision: &Decision,
        obs: &Observation,
    ) -> anyhow::Result<bool> {
        match decision {
            Decision::Idle | Decision::Paused | Decision::Wait => Ok(false),
            Decision::AcquireLease { expected } | Decision::TakeOver { expected } => {
                self.acquire(*expected, obs).await
            }
            Decision::RenewLease => {
                if !self.renewed_ahead {
                    self.renew(obs).await?;
                }
                self.hold_vip(obs);
                self.after_renewal(obs).await?;
                Ok(false)
            }
            Decision::ReclaimLease => {
                // Renewing is all: the next cycle, with a fresh lease, acts on it.
                self.renew(obs).await?;
                tracing::info!("lease renewed: it is fresh again");
                Ok(true)
            }
            Decision::Bootstrap => {
                // Every step that makes us writable starts from a freshly committed renewal.
                self.renew(obs).await?;
                let pg = self.postgres.clone();
                self.with_renewals(obs, async move {
                    pg.initdb().await.context("initdb")?;
                    pg.start(START_TIMEOUT)
                        .await
                        .context("starting the new primary")?;
                    pg.create_replication_user()
                        .await
                        .context("creating the replication role")
                })
                .await?;
                self.following = None;
                self.set_needs_rewind(false);
                self.begin_tenure(obs);
                self.apply_primary_config().await?;
                self.record_database(obs).await?;
                tracing::info!("bootstrapped the cluster's database as its first primary");
                Ok(true)
            }
            Decision::StartPrimary => {
                self.renew(obs).await?;
                self.begin_tenure(obs);
                self.postgres.write_config(&Role::Primary {
                    synchronous_standby_names: self.standby_names(),
                })?;
                let pg = self.postgres.clone();
                let started = self
                    .with_renewals(obs, async move { pg.start(START_TIMEOUT).await })
                    .await;
                if let Err(e) = started {
                    let attempts = self.start_failure.as_ref().map_or(0, |f| f.attempts) + 1;
                    self.start_failure = Some(super::observe::StartFailure {
                        attempts,
                        error: format!("{e:#}"),
                    });
                    return Err(e.context("starting PostgreSQL as primary"));
                }
                self.start_failure = None;
                self.following = None;
                self.set_needs_rewind(false);
                self.renew(obs).await?;
                Ok(true)
            }
            Decision::Promote => {
                if let Some(command) = self.hooks.pre_promote.clone() {
                    let args = crate::hooks::HookArgs {
                        role: "primary".into(),
                        member: self.name.clone(),
                        epoch: obs.lease.map_or(0, |l| l.epoch.0),
                        vip: self.vip_text.clone(),
                    };
                    let timeout = self.hooks.timeout;
                    let verdict = self
                        .with_renewals(obs, async move {
                            let verdict =
                                crate::hooks::run("pre_promote", &command, &args, timeout).await;
                            Ok::<_, anyhow::Error>(verdict)
                        })
                        .await?;
                    if let Err(why) = verdict {
                        // The next cycle releases the lease; peers see us stand aside.
                        tracing::warn!(%why, "the pre_promote hook refused the promotion");
                        self.pre_promote_refused = Some((Instant::now(), why));
                        return Ok(true);
                    }
                }
                // Promote only on a renewal committed just now (the lease may be expiring),
                // and onto a timeline no other promotion ever had (see postgres::timeline).
                let timeline = self.reserve_timeline_renewing(obs).await?;
                let placed = self
                    .postgres
                    .place_timeline_placeholders(obs.pg.timeline, timeline)?;
                let pg = self.postgres.clone();
                let timeout = START_TIMEOUT;
                let promoted = self
                    .with_renewals(obs, async move { pg.promote(timeout).await })
                    .await;
                // After a failed attempt the placeholders above our timeline must go; after
                // a promotion they stay (below the new timeline) for standbys to fetch.
                if let Err(e) = self.postgres.remove_stray_timeline_placeholders() {
                    tracing::warn!(error = %e, "removing stray placeholder history files");
                }
                promoted?;
                // Strict synchronous mode: from the first commits on, wait for a standby.
                // (Between the promotion and this reload the new primary acknowledges alone;
                // the recorded rules block any failover until a standby has caught up.)
                self.begin_tenure(obs);
                self.apply_primary_config().await?;
                self.following = None;
                self.slots = None;
                self.set_needs_rewind(false);
                // Both in the background, so that the next cycle, which starts at once,
                // publishes our writable status (proxies route writers by it) and renews:
                // the roles are made to match this version's expectations (idempotent), so
                // the old primary can rewind from us; and a checkpoint, because the control
                // file names the new timeline only after one and pg_rewind on the old primary
                // reads it.
                let pg = self.postgres.clone();
                tokio::spawn(async move {
                    if let Err(e) = pg.create_replication_user().await {
                        tracing::warn!(error = %e, "refreshing the replication roles after promotion");
                    }
                    if let Err(e) = pg.execute("CHECKPOINT").await {
                        tracing::warn!(error = %e, "checkpoint after promotion");
                    }
                });
                tracing::info!(
                    epoch = ?obs.lease.map(|l| l.epoch.0),
                    timeline,
                    placeholders = ?placed,
                    "promoted to primary"
                );
                Ok(true)
            }
            Decision::Fence { follow } => {
                // Fencing: nothing may write here any more. Stop first; restarting as a
                // replica is the next cycle's job.
                tracing::warn!(?follow, "fencing: stopping the writable PostgreSQL");
                // It may have written WAL the next primary never gets: rewind before
                // following anyone.
                self.set_needs_rewind(true);
                self.stop_postgres().await.context("fencing")?;
                self.following = None;
                Ok(true)
            }
            Decision::HandOver { to } => {
                let lease = obs.lease.ok_or_else(|| anyhow!("no lease to hand over"))?;
                tracing::info!(to = %to, epoch = lease.epoch.0, "switchover: stopping PostgreSQL");
                // Not writable from here on; the fast shutdown sends connected standbys the
                // rest of the WAL before it completes.
                self.set_needs_rewind(true);
                self.stop_postgres().await.context("switchover")?;
                self.following = None;
                self.propose(
                    Command::ReleaseLease {
                        holder: self.me,
                        epoch: lease.epoch,
                    },
                    obs,
                )
                .await
                .context("switchover: releasing the lease")?;
                tracing::info!(to = %to, "switchover: lease released");
                Ok(true)
            }
            Decision::ReleaseLease { reason } => {
                let lease = obs.lease.ok_or_else(|| anyhow!("no lease to release"))?;
                tracing::warn!(%reason, epoch = lease.epoch.0, "releasing the lease");
                self.propose(
                    Command::ReleaseLease {
                        holder: self.me,
                        epoch: lease.epoch,
                    },
                    obs,
                )
                .await?;
                Ok(true)
            }
            Decision::Clone { source } => {
                let upstream = self.upstream(*source, obs)?;
                tracing::info!(source = %source, from = %format!("{}:{}", upstream.host, upstream.port), "cloning with pg_basebackup");
                self.postgres
                    .basebackup(&upstream)
                    .await
                    .context("pg_basebackup")?;
                self.start_replica(Some(*source), obs).await?;
                Ok(true)
            }
            Decision::Rewind { source } => {
                let upstream = self.upstream(*source, obs)?;
                if self.postgres.is_running() {
                    self.stop_postgres().await?;
                }
                tracing::info!(source = %source, "rewinding with pg_rewind");
                if self.rewind_retry_at.is_some_and(|at| Instant::now() < at) {
                    return Ok(false);
                }
                match self.postgres.rewind(&upstream).await {
                    Ok(outcome) => {
                        tracing::info!(?outcome, source = %source, "rewind done");
                        self.rewind_retry_at = None;
                        self.set_needs_rewind(false);
                        self.start_replica(Some(*source), obs).await?;
                        Ok(true)
                    }
                    Err(PgError::RecoveryUnfinished { .. }) => {
                        // A standby that crashed mid-recovery: pg_rewind cannot finish that
                        // recovery itself. Let PostgreSQL finish it as a standby, stop it
                        // cleanly, and rewind on the next cycle.
                        tracing::info!("finishing crash recovery as a standby before rewinding");
                        self.postgres
                            .write_config(&Role::Replica { upstream: None })?;
                        self.postgres.start(START_TIMEOUT).await?;
                        self.stop_postgres().await?;
                        Ok(true)
                    }
                    Err(
                        e @ PgError::RewindFailed {
                            may_be_damaged: true,
                            ..
                        },
                    ) => {
                        let reason = format!("pg_rewind from node {source} failed part-way: {e}");
                        tracing::error!(%reason, "this member stays out of the cluster");
                        self.block_rejoin(&reason);
                        Ok(false)
                    }
                    Err(e) => {
                        self.rewind_retry_at = Some(Instant::now() + REWIND_RETRY);
                        Err(e).with_context(|| {
                            format!("pg_rewind from node {source}; retrying in {REWIND_RETRY:?}")
                        })
                    }
                }
            }
            Decision::Reclone { source } => {
                self.clone_afresh(*source, Discard::MoveAside, obs).await?;
                Ok(true)
            }
            Decision::Restart { primary } => {
                if *primary {
                    self.renew(obs).await?;
                    self.postgres.write_config(&Role::Primary {
                        synchronous_standby_names: self.standby_names(),
                    })?;
                    let pg = self.postgres.clone();
                    self.with_renewals(obs, async move {
                        pg.stop(StopMode::Fast, STOP_TIMEOUT).await?;
                        pg.start(START_TIMEOUT).await
                    })
                    .await
                    .context("restarting the primary")?;
                } else {
                    self.stop_postgres().await?;
                    self.start_replica(self.following, obs).await?;
                }
                tracing::info!(primary, "restarted PostgreSQL as requested");
                self.action_done(crate::cluster::MemberAction::Restart, obs)
                    .await?;
                Ok(true)
            }
            Decision::Reinit { source } => {
                self.clone_afresh(*source, Discard::Remove, obs).await?;
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
                let upstream = self.upstream(*leader, obs)?;
                match self.postgres.write_config(&Role::Replica {
                    upstream: Some(&upstream),
                })? {
                    ConfigChange::Unchanged => {}
                    ConfigChange::Reload => self.postgres.reload().await?,
                    ConfigChange::Restart => {
                        self.stop_postgres().await?;
                        self.postgres.start(START_TIMEOUT).await?;
                    }
                }
                self.following = Some(*leader);
                tracing::info!(leader = %leader, "following the new primary");
                Ok(false)
            }
        }
    }

    /// Replaces this member's data directory with a fresh clone of `source`: stops
    /// PostgreSQL, moves the old directory aside or removes it (`discard`), forgets the
    /// rewind and rejoin markers, runs pg_basebackup and starts the replica.
    async fn clone_afresh(
        &mut self,
        source: NodeId,
        discard: Discard,
        obs: &Observation,
    ) -> anyhow::Result<()> {
        let upstream = self.upstream(source, obs)?;
        if self.postgres.is_running() {
            self.stop_postgres().await?;
        }
        let data_dir = self.postgres.settings().data_dir.clone();
        match discard {
            Discard::MoveAside => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = data_dir.with_extension(format!("rewind-failed-{now}"));
                std::fs::rename(&data_dir, &aside).with_context(|| {
                    format!("moving {} aside to {}", data_dir.display(), aside.display())
                })?;
                tracing::warn!(from = %data_dir.display(), to = %aside.display(), "moved the data directory that could not be rewound aside; cloning afresh");
            }
            Discard::Remove => {
                match std::fs::remove_dir_all(&data_dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", data_dir.display()));
                    }
                    _ => {}
                }
                tracing::warn!(data_dir = %data_dir.display(), "reinit: removed the data directory as requested");
            }
        }
        self.set_needs_rewind(false);
        match std::fs::remove_file(self.block_marker()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(error = %e, "removing the rejoin-blocked marker");
            }
            _ => {}
        }
        self.postgres
            .basebackup(&upstream)
            .await
            .context("pg_basebackup")?;
        self.start_replica(Some(source), obs).await
    }

    async fn start_replica(
        &mut self,
        follow: Option<NodeId>,
        obs: &Observation,
    ) -> anyhow::Result<()> {
        let upstream = follow.map(|id| self.upstream(id, obs)).transpose()?;
        let change = self.postgres.write_config(&Role::Replica {
            upstream: upstream.as_ref(),
        })?;
        // A postmaster left running by an earlier start that timed out gets the upstream
        // too: started without one, a standby whose own WAL ends before it is consistent
        // waits for ever.
        self.postgres
            .start_with(change, START_TIMEOUT)
            .await
            .context("starting as a replica")?;
        self.following = follow;
        Ok(())
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

    async fn acquire(
        &mut self,
        expected: Option<crate::cluster::LeaseRef>,
        obs: &Observation,
    ) -> anyhow::Result<bool> {
        let sent = Instant::now();
        match self
            .propose(
                Command::AcquireLease {
                    candidate: self.me,
                    expected,
                },
                obs,
            )
            .await?
        {
            CommandResult::Lease { lease } if lease.holder == self.me => {
                self.holder_clock.committed(lease.epoch, sent);
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

    /// Renews the lease, bounded by the holder's deadline: a renewal that commits after the
    /// deadline would come too late to justify staying writable.
    async fn renew(&mut self, obs: &Observation) -> anyhow::Result<()> {
        let lease = match obs.lease {
            Some(lease) if lease.holder == self.me => lease,
            _ => bail!("this member does not hold the lease"),
        };
        let sent = Instant::now();
        // While the deadline is ahead we may be writable, so the renewal must commit before
        // it. Past it, `decide` has already made us non-writable, and a renewal sent now may
        // take up to retry_timeout: it starts a new deadline from `sent`.
        let limit = match self.holder_clock.deadline(&lease, obs.config.ttl) {
            Some(deadline) if deadline > sent => deadline.min(sent + obs.config.retry_timeout),
            _ => sent + obs.config.retry_timeout,
        };
        let command = Command::RenewLease {
            holder: self.me,
            epoch: lease.epoch,
        };
        let handle = self.handle.clone();
        let proposal = handle.propose(command);
        tokio::pin!(proposal);
        // A writable primary whose renewal has not committed within half a loop_wait may be
        // cut off from the quorum: its commits wait from now on (they are not acknowledged)
        // until a renewal commits, rather than until the deadline demotes it.
        let contact = sent + obs.config.loop_wait / 2;
        let writable = obs.pg.running && !obs.pg.in_recovery;
        let mut early = None;
        if writable && !self.writes_blocked && contact < limit {
            match tokio::time::timeout_at(contact, &mut proposal).await {
                Ok(result) => early = Some(result),
                Err(_) => self.block_writes(obs).await,
            }
        }
        let outcome = match early {
            Some(result) => Ok(result),
            None => tokio::time::timeout_at(limit, &mut proposal).await,
        };
        match outcome {
            Ok(Ok(CommandResult::Lease { lease })) => {
                self.holder_clock.committed(lease.epoch, sent);
                self.arm_fence(&lease, obs.config.ttl);
                if self.writes_blocked {
                    self.writes_blocked = false;
                    if writable {
                        self.apply_primary_config().await?;
                        tracing::info!("lease renewed again: commits no longer wait");
                    }
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
    async fn reserve_timeline_renewing(&mut self, obs: &Observation) -> anyhow::Result<u32> {
        let lease = match obs.lease {
            Some(lease) if lease.holder == self.me => lease,
            _ => bail!("this member does not hold the lease"),
        };
        let at_least = self.postgres.lowest_next_timeline(obs.pg.timeline)?;
        let command = Command::ReserveTimeline {
            holder: self.me,
            epoch: lease.epoch,
            at_least,
        };
        let handle = self.handle.clone();
        let timeout = obs.config.retry_timeout;
        let reserve = async move { tokio::time::timeout(timeout, handle.propose(command)).await };
        let (reserved, renewed) = tokio::join!(reserve, self.renew(obs));
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
    async fn block_writes(&mut self, obs: &Observation) {
        self.writes_blocked = true;
        self.release_vip().await;
        tracing::warn!(
            after = ?obs.config.loop_wait / 2,
            "lease renewal not committed in time: commits wait until it is (cut off from the quorum?)"
        );
        if let Err(e) = self.apply_primary_config().await {
            tracing::warn!(error = %format!("{e:#}"), "blocking commits");
        }
    }

    /// Asks for the VIP until the lease deadline, if this member is a writable primary whose
    /// commits do not wait for a missing renewal (the decision was RenewLease and the
    /// renewal committed). Each call extends the last.
    fn hold_vip(&self, obs: &Observation) {
        let (Some(vip), Some(lease)) = (&self.vip, obs.lease) else {
            return;
        };
        let writable = obs.pg.running && !obs.pg.in_recovery;
        let deadline = self.holder_clock.deadline(&lease, obs.config.ttl);
        match deadline {
            Some(deadline) if writable && !self.writes_blocked && deadline > Instant::now() => {
                vip.hold_until(deadline)
            }
            _ => {}
        }
    }

    /// After a committed renewal: the fence kills our running PostgreSQL (a primary, or a
    /// replica about to be promoted) unless a later renewal moves the deadline, half the
    /// safety margin after the holder's deadline: after our own demotion, before anyone's
    /// takeover (`crate::fence`). A replica's arming is undone by the next cycle.
    fn arm_fence(&self, lease: &crate::cluster::Lease, ttl: Duration) {
        let (Some(deadline), Some(pid)) = (
            self.holder_clock.deadline(lease, ttl),
            self.postgres.postmaster_pid(),
        ) else {
            return;
        };
        let fires = deadline + super::safety_margin(ttl) / 2;
        self.tell_fence(crate::fence::Instruction::Arm {
            after: fires.saturating_duration_since(Instant::now()),
            pid,
        });
    }

    fn tell_fence(&self, instruction: crate::fence::Instruction) {
        if let Some(fence) = &self.fence {
            fence.tell(instruction);
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

    /// Removes the VIP (if held) and waits for it to be gone.
    async fn release_vip(&self) {
        if let Some(vip) = &self.vip {
            vip.release().await;
        }
    }

    /// Runs `action` while renewing the lease every loop_wait if this member holds it.
    async fn with_renewals<T, E: Into<anyhow::Error>>(
        &mut self,
        obs: &Observation,
        action: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T> {
        tokio::pin!(action);
        loop {
            tokio::select! {
                result = &mut action => return result.map_err(Into::into),
                _ = tokio::time::sleep(obs.config.loop_wait) => {
                    if let Err(e) = self.renew(obs).await {
                        tracing::warn!(error = %format!("{e:#}"), "renewing during a long action");
                    }
                }
            }
        }
    }

    /// Work a primary does after each renewal: make sure every member has its replication
    /// slot (and departed ones lose theirs), and that the database is recorded.
    async fn after_renewal(&mut self, obs: &Observation) -> anyhow::Result<()> {
        let wanted: BTreeSet<String> = obs
            .members
            .keys()
            .filter(|id| **id != self.me)
            .map(|id| slot_name(*id))
            .collect();
        if self.slots.as_ref() != Some(&wanted) {
            self.postgres
                .ensure_slots(&wanted)
                .await
                .context("replication slots")?;
            self.slots = Some(wanted);
        }
        if obs.database.is_none() {
            // A bootstrap that was interrupted may not have created the roles yet.
            self.postgres
                .create_replication_user()
                .await
                .context("creating the replication roles")?;
            self.record_database(obs).await?;
        }
        if obs.pg.timeline > obs.recorded_timeline.max(1) {
            self.record_timeline_switch(obs).await?;
        }
        self.manage_sync(obs)
            .await
            .context("synchronous replication")
    }

    /// Records how this primary's timeline began in the cluster's timeline history, from
    /// the history file PostgreSQL wrote at the promotion.
    async fn record_timeline_switch(&self, obs: &Observation) -> anyhow::Result<()> {
        let lease = obs.lease.ok_or_else(|| anyhow!("no lease"))?;
        let new_timeline = obs.pg.timeline;
        let Some((timeline, lsn, reason, at_unix_ms)) =
            self.postgres.timeline_switch(new_timeline)?
        else {
            return Ok(());
        };
        let switch = crate::cluster::TimelineSwitch {
            timeline,
            lsn,
            reason,
            at_unix_ms,
            new_primary: self.me,
            new_timeline,
        };
        let command = Command::RecordTimelineSwitch {
            holder: self.me,
            epoch: lease.epoch,
            switch,
        };
        if let CommandResult::Rejected { rejection } = self.propose(command, obs).await? {
            bail!("recording the timeline history: {rejection}");
        }
        tracing::info!(timeline, new_timeline, %lsn, "recorded the promotion in the timeline history");
        Ok(())
    }

    /// `synchronous_standby_names` as it should be now.
    fn standby_names(&self) -> Option<String> {
        if self.writes_blocked {
            return Some(NO_STANDBY.to_string());
        }
        self.sync.rule.as_ref()?.standby_names(slot_name)
    }

    /// Starts the synchronous bookkeeping of this member's tenure as primary (once per
    /// epoch): nothing is synchronous until a standby streams, except in strict mode, which
    /// waits for any eligible member from the first commit on.
    fn begin_tenure(&mut self, obs: &Observation) {
        let epoch = obs.lease.map(|l| l.epoch);
        if epoch.is_some() && self.sync.epoch == epoch {
            return;
        }
        let rule = super::sync::desired_rule(
            &obs.config,
            self.me,
            &obs.members,
            &std::collections::BTreeMap::new(),
            &SyncRule::none(),
        );
        self.sync = SyncInForce {
            epoch,
            rule: rule.filter(|r| *r != SyncRule::none()),
            switched: None,
        };
        self.writes_blocked = false;
    }

    /// Rewrites the primary's configuration (user parameters and synchronous standbys) and
    /// reloads if it changed.
    async fn apply_primary_config(&mut self) -> anyhow::Result<()> {
        let role = Role::Primary {
            synchronous_standby_names: self.standby_names(),
        };
        match self.postgres.write_config(&role)? {
            ConfigChange::Unchanged => Ok(()),
            _ => Ok(self.postgres.reload().await?),
        }
    }

    /// Keeps the synchronous rule of this primary and its record in Raft in step, in the
    /// order `cluster::sync` requires: record the new rule next to the old, then switch
    /// PostgreSQL to it, then drop the old one from the record once enough members of the
    /// new one have flushed past every commit acknowledged under the old.
    async fn manage_sync(&mut self, obs: &Observation) -> anyhow::Result<()> {
        let lease = obs.lease.ok_or_else(|| anyhow!("no lease"))?;
        if self.sync.epoch != Some(lease.epoch) {
            self.begin_tenure(obs);
        }
        if obs.config.synchronous_mode == SynchronousMode::Off {
            if self.sync.rule.take().is_some() {
                self.apply_primary_config().await?;
                tracing::info!("synchronous replication off");
            }
            if obs.sync.is_some() {
                self.record_sync(Vec::new(), obs).await?;
            }
            return Ok(());
        }
        let flushed: std::collections::BTreeMap<NodeId, crate::postgres::Lsn> = self
            .postgres
            .standbys()
            .await?
            .into_iter()
            .filter(|s| s.streaming)
            .filter_map(|s| Some((member_of_slot(&s.application_name)?, s.flushed?)))
            .collect();
        let current = self.sync.rule.clone().unwrap_or_default();
        let Some(wanted) =
            super::sync::desired_rule(&obs.config, self.me, &obs.members, &flushed, &current)
        else {
            return Ok(());
        };
        let recorded = obs
            .sync
            .as_ref()
            .filter(|s| s.epoch == lease.epoch)
            .map(|s| s.rules.as_slice());
        match super::sync::next_step(&current, &wanted, recorded) {
            super::sync::Step::InStep => {
                self.sync.switched = None;
                return Ok(());
            }
            super::sync::Step::Switch { record } => {
                if let Some(rules) = record {
                    self.record_sync(rules, obs).await?;
                }
                self.sync.rule = Some(wanted.clone()).filter(|r| *r != SyncRule::none());
                self.sync.switched = Some((Instant::now(), None));
                self.apply_primary_config().await?;
                tracing::info!(
                    "synchronous standbys now {} (was {})",
                    describe_rule(&wanted, obs),
                    describe_rule(&current, obs)
                );
                return Ok(());
            }
            super::sync::Step::DropOld => {}
        }
        let (switched_at, target) = self.sync.switched.get_or_insert((Instant::now(), None));
        if switched_at.elapsed() < obs.config.loop_wait {
            return Ok(());
        }
        let target = match target {
            Some(target) => *target,
            None => {
                let lsn = self.postgres.current_wal_lsn().await?;
                *target = Some(lsn);
                lsn
            }
        };
        if super::sync::covered(&wanted, &flushed, target) {
            self.record_sync(vec![wanted.clone()], obs).await?;
            self.sync.switched = None;
            if wanted.quorum > 0 {
                tracing::info!(
                    "recorded synchronous standbys {}: they hold every acknowledged commit",
                    describe_rule(&wanted, obs)
                );
            } else {
                tracing::warn!(
                    "recorded no synchronous standby: automatic failover is blocked until a \
                     standby streams and catches up"
                );
            }
        }
        Ok(())
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

    async fn record_sync(&self, rules: Vec<SyncRule>, obs: &Observation) -> anyhow::Result<()> {
        let lease = obs.lease.ok_or_else(|| anyhow!("no lease"))?;
        let command = Command::SetSynchronous {
            holder: self.me,
            epoch: lease.epoch,
            rules,
        };
        if let CommandResult::Rejected { rejection } = self.propose(command, obs).await? {
            bail!("recording the synchronous set: {rejection}");
        }
        Ok(())
    }

    async fn record_database(&mut self, obs: &Observation) -> anyhow::Result<()> {
        let DataDir::Initialised { system_id } = self.postgres.data_dir_state() else {
            bail!("no initialised data directory to record");
        };
        let lease = obs.lease.ok_or_else(|| anyhow!("no lease"))?;
        let command = Command::RecordDatabase {
            holder: self.me,
            epoch: lease.epoch,
            system_id,
        };
        if let CommandResult::Rejected { rejection } = self.propose(command, obs).await? {
            bail!("recording the database: {rejection}");
        }
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
