//! A restore of the whole cluster, as `decide/restore.rs` chose it: standing down for it,
//! and running it (see `cluster::restore`).

use anyhow::{anyhow, bail, Context};

use super::primary::begin_tenure;
use super::{Executor, Observation};
use crate::cluster::{Command, CommandResult, Restore, RestoreOutcome};
use crate::ha::memory::Memory;
use crate::postgres::Role;

/// How long replaying the archive to the target may take.
const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

impl Executor {
    /// Stops PostgreSQL, puts the data directory away (moved aside, or removed with
    /// `remove`), reports it for `restore` and, with `release`, gives up the lease.
    pub(super) async fn stand_down(
        &mut self,
        restore: u64,
        remove: bool,
        release: bool,
        obs: &Observation,
    ) -> anyhow::Result<bool> {
        if obs.pg.is_writable() {
            // "latest" then includes everything committed until now.
            if let Err(e) = self.postgres.seal_archive().await {
                tracing::warn!(error = %e, "switching WAL before stopping for the restore");
            }
        }
        if self.postgres.is_running() {
            tracing::info!(restore, "restore requested: stopping PostgreSQL");
            self.stop_postgres()
                .await
                .context("stopping PostgreSQL for the restore")?;
        }
        self.following = None;
        let suffix = format!("before-restore-{restore}");
        match self.postgres.put_data_dir_away(&suffix, remove)? {
            Some(aside) => {
                tracing::warn!(restore, to = %aside.display(), "moved the data directory aside for the restore; remove it once the restored cluster is what you want")
            }
            None if remove => {
                tracing::warn!(
                    restore,
                    "removed the data directory for the restore (--force)"
                )
            }
            None => {}
        }
        self.forget_markers();
        let command = Command::RestoreStopped {
            id: restore,
            member: self.me,
        };
        if let CommandResult::Rejected { rejection } = self.propose(command, obs).await? {
            bail!("reporting that PostgreSQL stopped for the restore: {rejection}");
        }
        if release {
            self.release_lease(obs)
                .await
                .context("giving up the lease for the restore")?;
        }
        Ok(true)
    }

    /// Runs `restore` under the lease and reports how it ended. A failed attempt's data
    /// directory is moved aside and the restore ends: the operator chooses what next.
    pub(super) async fn restore(
        &mut self,
        restore: u64,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        let restore = (obs.restore.clone())
            .filter(|r| r.id == restore)
            .ok_or_else(|| anyhow!("restore {restore} is no longer under way"))?;
        self.renew(obs, memory).await?;
        let result = self.run_restore(&restore, obs, memory).await;
        let (ok, message) = match result {
            Ok(message) => (true, message),
            Err(e) => {
                let message = crate::backup::one_line(&format!("{e:#}"));
                tracing::error!(restore = restore.id, error = %format!("{e:#}"), "the restore failed");
                if self.postgres.is_running() {
                    if let Err(e) = self.stop_postgres().await {
                        tracing::warn!(error = %e, "stopping the PostgreSQL of a failed restore");
                    }
                }
                let suffix = format!("failed-restore-{}", restore.id);
                if let Err(e) = self.postgres.put_data_dir_away(&suffix, false) {
                    tracing::warn!(error = %e, "moving the failed restore aside");
                }
                (false, message)
            }
        };
        let outcome = RestoreOutcome {
            id: restore.id,
            target: restore.target.clone(),
            runner: self.me,
            ok,
            message,
            finished_unix: crate::backup::unix_now(),
        };
        if let CommandResult::Rejected { rejection } = self
            .propose(Command::FinishRestore { outcome }, obs)
            .await?
        {
            bail!("reporting the end of the restore: {rejection}");
        }
        Ok(true)
    }

    /// Restores from the repository onto a newly reserved timeline and waits until
    /// PostgreSQL has replayed to the target and been promoted; says what it restored.
    async fn run_restore(
        &mut self,
        restore: &Restore,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<String> {
        // The leftover of an earlier attempt, if any, is kept too.
        let now = crate::backup::unix_now();
        let suffix = format!("failed-restore-{}-{now}", restore.id);
        self.postgres.put_data_dir_away(&suffix, false)?;
        let backup = obs.config.backup.as_ref().map(crate::backup::backrest_of);
        self.postgres.set_backrest(backup);
        // Above every timeline any promotion reserved, so no two histories share an ID.
        let reserved = self.reserve_timeline(obs, memory, 2).await?;
        let pg = self.postgres.clone();
        let target = restore.target.clone();
        let set = restore.set.clone();
        let followed = self
            .with_renewals(obs, memory, async move {
                pg.restore_to(&target, reserved - 1, set.as_deref()).await
            })
            .await
            .context("pgbackrest restore")?;
        let placed = self
            .postgres
            .place_timeline_placeholders(followed, reserved)?;
        begin_tenure(obs, memory);
        self.postgres.write_config(&Role::Primary {
            synchronous_standby_names: memory.standby_names(),
        })?;
        let pg = self.postgres.clone();
        self.with_renewals(obs, memory, async move {
            pg.start_restored(RESTORE_TIMEOUT).await?;
            pg.wait_restored(RESTORE_TIMEOUT).await
        })
        .await
        .context("replaying the archive to the target")?;
        if let Err(e) = self.postgres.remove_stray_timeline_placeholders() {
            tracing::warn!(error = %e, "removing stray placeholder history files");
        }
        self.postgres.forget_recovery_target().await?;
        self.apply_primary_config(memory).await?;
        self.settle_as_new_primary();
        let timeline = self.postgres.status().await.timeline;
        tracing::info!(restore = restore.id, target = %restore.target, timeline, followed, placeholders = ?placed, "restored: primary on a new timeline");
        Ok(format!(
            "restored to {} along timeline {followed}; primary on timeline {timeline}",
            restore.target
        ))
    }
}
