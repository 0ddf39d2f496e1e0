//! Becoming a primary (bootstrap, start, promotion), being one (slots, records, parameters,
//! an operator's restart) and stopping being one (fencing).

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Context};
use tokio::time::Instant;

use super::{slot_name, Executor, Observation, START_TIMEOUT, STOP_TIMEOUT};
use crate::cluster::{Command, CommandResult, NodeId};
use crate::ha::decide::reinit_after_lost_slots;
use crate::ha::memory::{Event, Memory};
use crate::postgres::{ConfigChange, DataDir, Role, StopMode};

impl Executor {
    pub(super) async fn bootstrap(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        // Every step that makes us writable starts from a freshly committed renewal.
        self.renew(obs, memory).await?;
        let pg = self.postgres.clone();
        self.with_renewals(obs, memory, async move {
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
        begin_tenure(obs, memory);
        self.apply_primary_config(memory).await?;
        self.record_database(obs).await?;
        tracing::info!("bootstrapped the cluster's database as its first primary");
        Ok(true)
    }

    pub(super) async fn start_primary(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        self.renew(obs, memory).await?;
        begin_tenure(obs, memory);
        self.postgres.write_config(&Role::Primary {
            synchronous_standby_names: memory.standby_names(),
        })?;
        let pg = self.postgres.clone();
        let started = self
            .with_renewals(obs, memory, async move { pg.start(START_TIMEOUT).await })
            .await;
        if let Err(e) = started {
            memory.fold(Event::StartFailed {
                error: format!("{e:#}"),
            });
            return Err(e.context("starting PostgreSQL as primary"));
        }
        memory.fold(Event::PrimaryStarted);
        self.following = None;
        self.set_needs_rewind(false);
        self.renew(obs, memory).await?;
        Ok(true)
    }

    pub(super) async fn promote(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        if let Some(command) = self.hooks.pre_promote.clone() {
            let args = crate::hooks::HookArgs {
                role: "primary".into(),
                member: self.name.clone(),
                epoch: obs.lease.map_or(0, |l| l.epoch.0),
                vip: self.vip_text.clone(),
            };
            let timeout = self.hooks.timeout;
            let verdict = self
                .with_renewals(obs, memory, async move {
                    let verdict = crate::hooks::run("pre_promote", &command, &args, timeout).await;
                    Ok::<_, anyhow::Error>(verdict)
                })
                .await?;
            if let Err(why) = verdict {
                // The next cycle releases the lease; peers see us stand aside.
                tracing::warn!(%why, "the pre_promote hook refused the promotion");
                memory.fold(Event::PrePromoteRefused {
                    at: Instant::now(),
                    why,
                });
                return Ok(true);
            }
        }
        // Promote only on a renewal committed just now (the lease may be expiring), and onto
        // a timeline no other promotion ever had (see postgres::timeline).
        let timeline = self.reserve_timeline_renewing(obs, memory).await?;
        let placed = self
            .postgres
            .place_timeline_placeholders(obs.pg.timeline, timeline)?;
        let pg = self.postgres.clone();
        let promoted = self
            .with_renewals(obs, memory, async move { pg.promote(START_TIMEOUT).await })
            .await;
        // After a failed attempt the placeholders above our timeline must go; after a
        // promotion they stay (below the new timeline) for standbys to fetch.
        if let Err(e) = self.postgres.remove_stray_timeline_placeholders() {
            tracing::warn!(error = %e, "removing stray placeholder history files");
        }
        promoted?;
        // Strict synchronous mode: from the first commits on, wait for a standby. (Between
        // the promotion and this reload the new primary acknowledges alone; the recorded
        // rules block any failover until a standby has caught up.)
        begin_tenure(obs, memory);
        self.apply_primary_config(memory).await?;
        self.settle_as_new_primary();
        tracing::info!(
            epoch = ?obs.lease.map(|l| l.epoch.0),
            timeline,
            placeholders = ?placed,
            "promoted to primary"
        );
        Ok(true)
    }

    /// What a member does once it is a new primary on a new timeline (promoted, or
    /// restored): it follows nobody, has no slots made yet and needs no rewind. In the
    /// background, so that the next cycle, which starts at once, publishes our writable
    /// status (proxies route writers by it) and renews: the roles are made to match this
    /// version's expectations (idempotent), so the old primary can rewind from us; and a
    /// checkpoint, because the control file names the new timeline only after one and
    /// pg_rewind on the old primary reads it.
    pub(super) fn settle_as_new_primary(&mut self) {
        self.following = None;
        self.slots = None;
        self.set_needs_rewind(false);
        let pg = self.postgres.clone();
        tokio::spawn(async move {
            if let Err(e) = pg.create_replication_user().await {
                tracing::warn!(error = %e, "refreshing the replication roles on the new primary");
            }
            if let Err(e) = pg.execute("CHECKPOINT").await {
                tracing::warn!(error = %e, "checkpoint on the new primary");
            }
        });
    }

    /// Fencing: nothing may write here any more. Stop first; restarting as a replica is the
    /// next cycle's job.
    pub(super) async fn fence_primary(&mut self, follow: Option<NodeId>) -> anyhow::Result<bool> {
        tracing::warn!(?follow, "fencing: stopping the writable PostgreSQL");
        // It may have written WAL the next primary never gets: rewind before following.
        self.set_needs_rewind(true);
        self.stop_postgres().await.context("fencing")?;
        self.following = None;
        Ok(true)
    }

    /// An operator's restart of this member's PostgreSQL, as primary or replica.
    pub(super) async fn restart(
        &mut self,
        primary: bool,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<bool> {
        if primary {
            self.renew(obs, memory).await?;
            self.postgres.write_config(&Role::Primary {
                synchronous_standby_names: memory.standby_names(),
            })?;
            let pg = self.postgres.clone();
            self.with_renewals(obs, memory, async move {
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

    /// Work a primary does after each renewal: make sure every member with PostgreSQL has
    /// its replication slot (departed ones and witnesses have none, and a slot PostgreSQL
    /// invalidated is made afresh, its member cloned again), that the database and the
    /// timeline history are recorded, and that the synchronous rule is in step.
    pub(super) async fn after_renewal(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<()> {
        let wanted: BTreeSet<String> = (obs.members.values())
            .filter(|m| m.id != self.me && !m.is_witness())
            .map(|m| slot_name(m.id))
            .collect();
        let due = match &self.slots {
            Some((made, at)) => *made != wanted || at.elapsed() >= SLOT_CHECK,
            None => true,
        };
        if due {
            let lost = (self.postgres.ensure_slots(&wanted).await).context("replication slots")?;
            self.slots = Some((wanted, Instant::now()));
            self.after_lost_slots(&lost, obs).await?;
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
        self.manage_sync(obs, memory)
            .await
            .context("synchronous replication")
    }

    /// Says which members lost their slot, and asks those [`reinit_after_lost_slots`]
    /// picks to clone themselves afresh (`MemberAction::Reinit`, as `pgquorum reinit`).
    async fn after_lost_slots(&self, lost: &[String], obs: &Observation) -> anyhow::Result<()> {
        let lost: Vec<NodeId> = (obs.members.keys())
            .filter(|id| lost.contains(&slot_name(**id)))
            .copied()
            .collect();
        let reinit = reinit_after_lost_slots(&lost, obs);
        for id in &lost {
            let name = obs.members.get(id).map_or("?", |m| m.name.as_str());
            let next = if reinit.contains(id) {
                "it is asked to clone itself afresh (reinit)"
            } else if obs.paused {
                "paused: run `pgquorum reinit` for it when ready"
            } else {
                "restore_command is set, so it may catch up from the archive; else run \
                 `pgquorum reinit` for it"
            };
            tracing::warn!(
                member = %name,
                "the replication slot of {name} was invalidated: it fell more than \
                 max_slot_wal_keep_size behind and the WAL it needs is gone (the slot is made \
                 afresh); {next}"
            );
        }
        for member in reinit {
            let command = Command::RequestAction {
                member,
                action: crate::cluster::MemberAction::Reinit,
            };
            if let CommandResult::Rejected { rejection } = self.propose(command, obs).await? {
                tracing::warn!(%rejection, "asking for a reinit after a lost slot");
            }
        }
        Ok(())
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

    /// Applies changed user parameters (the dynamic configuration's `postgresql_parameters`)
    /// to the running server: rewrites `pgquorum.conf` and reloads. A parameter that needs a
    /// restart then shows as pending restart (`pg_settings`); restarting stays the operator's
    /// call. Skipped while the server's role is not known, so that a replica's upstream is
    /// never written away; a server that is not running gets them when it is next started.
    pub async fn apply_parameters(&mut self, obs: &Observation, memory: &Memory) {
        let wanted = (
            obs.config.postgresql_parameters.clone(),
            obs.config.pg_hba.clone(),
            obs.config.backup.clone(),
        );
        self.postgres.set_parameters(&wanted.0);
        self.postgres.set_hba_rules(&wanted.1);
        (self.postgres).set_backrest(wanted.2.as_ref().map(crate::backup::backrest_of));
        if self.applied_parameters.as_ref() == Some(&wanted) || !obs.pg.running {
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
        let role = match &upstream {
            None => Role::Primary {
                synchronous_standby_names: memory.standby_names(),
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
                tracing::info!(parameters = ?wanted.0, pg_hba = ?wanted.1, backup = ?wanted.2, "applied PostgreSQL parameters");
                self.applied_parameters = Some(wanted);
            }
            Err(e) => tracing::warn!(error = %e, "applying PostgreSQL parameters; retrying"),
        }
    }
}

/// Starts the engine's synchronous bookkeeping of this member's tenure as primary, once
/// per epoch (see [`Memory::new_tenure`]).
pub(super) fn begin_tenure(obs: &Observation, memory: &mut Memory) {
    if let Some(event) = memory.new_tenure(obs) {
        memory.fold(event);
    }
}

/// How often a primary looks for slots PostgreSQL invalidated.
pub(super) const SLOT_CHECK: std::time::Duration = std::time::Duration::from_secs(10);
