//! Being a replica: cloning, rewinding, starting and following; and the two markers next to
//! the data directory that outlive a daemon restart (a rewind is needed; rejoining is
//! blocked).

use anyhow::Context;
use tokio::time::Instant;

use super::{Executor, Observation, START_TIMEOUT};
use crate::cluster::NodeId;
use crate::ha::memory::{Event, Memory, REWIND_RETRY};
use crate::postgres::{ConfigChange, DataDir, Error as PgError, Role};

/// What [`Executor::clone_afresh`] does with the data directory it replaces.
#[derive(Debug, Clone, Copy)]
pub(super) enum Discard {
    /// Renamed `<data dir>.rewind-failed-<unix time>`: a failed rewind deletes nothing.
    MoveAside,
    /// Deleted: the operator asked for it (`pgquorum reinit --force`).
    Remove,
}

impl Executor {
    /// Records at start-up that a data directory last used by a primary must be rewound
    /// before following anyone: whatever it wrote after the last failover may be missing on
    /// the new primary.
    pub fn with_rewind_marker_checked(self) -> Self {
        if self.last_a_primarys() {
            self.set_needs_rewind(true);
        }
        self
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
    /// have written WAL that the next primary never got; asynchronous replication lags.
    /// Reads only: the marker is written when a replica is started there (which writes
    /// standby.signal, see [`Executor::start_replica`]).
    pub fn needs_rewind(&self) -> bool {
        self.rewind_marker().exists() || (!self.postgres.is_running() && self.last_a_primarys())
    }

    pub(super) fn set_needs_rewind(&self, needed: bool) {
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

    /// Forgets the rewind and rejoin markers of a data directory that is gone.
    pub(super) fn forget_markers(&self) {
        self.set_needs_rewind(false);
        match std::fs::remove_file(self.block_marker()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(error = %e, "removing the rejoin-blocked marker");
            }
            _ => {}
        }
    }

    pub(super) async fn clone_from(
        &mut self,
        source: NodeId,
        obs: &Observation,
    ) -> anyhow::Result<bool> {
        let upstream = self.upstream(source, obs)?;
        tracing::info!(source = %source, from = %format!("{}:{}", upstream.host, upstream.port), "cloning");
        self.clone_data(&upstream, obs).await?;
        self.start_replica(Some(source), obs).await?;
        Ok(true)
    }

    /// Fills the missing data directory: from the backup repository when `[backup]` says
    /// `create_replica_from_backup` (falling back to pg_basebackup if that fails), else
    /// with pg_basebackup from `upstream`.
    async fn clone_data(
        &self,
        upstream: &crate::postgres::Upstream,
        obs: &Observation,
    ) -> anyhow::Result<()> {
        let from_backup =
            (obs.config.backup.as_ref()).is_some_and(|b| b.create_replica_from_backup);
        if from_backup {
            // A new member clones before its first parameters are applied.
            (self.postgres)
                .set_backrest(obs.config.backup.as_ref().map(crate::backup::backrest_of));
            match self.postgres.restore_standby(obs.restored_unix).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), "restoring from the pgBackRest repository failed; cloning with pg_basebackup instead")
                }
            }
        }
        self.postgres
            .basebackup(upstream)
            .await
            .context("pg_basebackup")
    }

    pub(super) async fn rewind(
        &mut self,
        source: NodeId,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        let upstream = self.upstream(source, obs)?;
        if self.postgres.is_running() {
            self.stop_postgres().await?;
        }
        tracing::info!(source = %source, "rewinding with pg_rewind");
        match self.postgres.rewind(&upstream).await {
            Ok(outcome) => {
                tracing::info!(?outcome, source = %source, "rewind done");
                memory.fold(Event::Rewound);
                self.set_needs_rewind(false);
                self.start_replica(Some(source), obs).await?;
                Ok(true)
            }
            Err(PgError::RecoveryUnfinished { .. }) => {
                // A standby that crashed mid-recovery: pg_rewind cannot finish that recovery
                // itself. Let PostgreSQL finish it as a standby, stop it cleanly, and rewind
                // on the next cycle.
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
                memory.fold(Event::RewindFailedCleanly { at: Instant::now() });
                Err(e).with_context(|| {
                    format!("pg_rewind from node {source}; trying again in {REWIND_RETRY:?}")
                })
            }
        }
    }

    /// Replaces this member's data directory with a fresh clone of `source`: stops
    /// PostgreSQL, moves the old directory aside or removes it (`discard`), forgets the
    /// rewind and rejoin markers, runs pg_basebackup and starts the replica.
    pub(super) async fn clone_afresh(
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
        self.forget_markers();
        self.clone_data(&upstream, obs).await?;
        self.start_replica(Some(source), obs).await
    }

    /// Starts PostgreSQL as a replica of `follow` (or of nobody yet). A directory last used
    /// by a stopped primary gets the rewind marker first: the standby.signal written here
    /// would otherwise hide that it may hold WAL the next primary never had. (A fresh
    /// clone or rewind already has standby.signal, see `Postgres::basebackup`.)
    pub(super) async fn start_replica(
        &mut self,
        follow: Option<NodeId>,
        obs: &Observation,
    ) -> anyhow::Result<()> {
        let upstream = follow.map(|id| self.upstream(id, obs)).transpose()?;
        if !self.postgres.is_running() && self.last_a_primarys() {
            self.set_needs_rewind(true);
        }
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

    /// Points a running replica at `leader`: a reload, or a restart if PostgreSQL needs one.
    pub(super) async fn follow(&mut self, leader: NodeId, obs: &Observation) -> anyhow::Result<()> {
        let upstream = self.upstream(leader, obs)?;
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
        self.following = Some(leader);
        tracing::info!(leader = %leader, "following the new primary");
        Ok(())
    }
}
