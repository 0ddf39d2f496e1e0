//! The synchronous rule in the runtime: reading the standbys' positions, switching
//! `synchronous_standby_names`, recording the rules in Raft, in the steps
//! [`Memory::sync_plan`] gives.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use tokio::time::Instant;

use super::{Executor, Observation};
use crate::cluster::{Command, CommandResult, NodeId, SyncRule};
use crate::ha::memory::{Event, Memory, SyncPlan};
use crate::postgres::{ConfigChange, Lsn, Role};

/// The member whose `application_name` is `name`, if it is one of ours.
fn member_of_slot(name: &str) -> Option<NodeId> {
    name.strip_prefix("pgquorum_")?.parse().ok().map(NodeId)
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

impl Executor {
    /// Rewrites the primary's configuration (user parameters and synchronous standbys, as
    /// the engine has them) and reloads if it changed.
    pub(super) async fn apply_primary_config(&mut self, memory: &Memory) -> anyhow::Result<()> {
        let role = Role::Primary {
            synchronous_standby_names: memory.standby_names(),
        };
        match self.postgres.write_config(&role)? {
            ConfigChange::Unchanged => Ok(()),
            _ => Ok(self.postgres.reload().await?),
        }
    }

    /// Carries out the engine's next steps for the synchronous rule of this primary.
    pub(super) async fn manage_sync(
        &mut self,
        obs: &Observation,
        memory: &mut Memory,
    ) -> anyhow::Result<()> {
        let lease = obs.lease.ok_or_else(|| anyhow!("no lease"))?;
        if memory.tenure() != Some(lease.epoch) {
            super::primary::begin_tenure(obs, memory);
        }
        let flushed: BTreeMap<NodeId, Lsn> =
            if obs.config.synchronous_mode == crate::cluster::SynchronousMode::Off {
                BTreeMap::new()
            } else {
                self.postgres
                    .standbys()
                    .await?
                    .into_iter()
                    .filter(|s| s.streaming)
                    .filter_map(|s| Some((member_of_slot(&s.application_name)?, s.flushed?)))
                    .collect()
            };
        // At most: read the target, then drop the old rule, in one cycle.
        for _ in 0..2 {
            match memory.sync_plan(obs, &flushed, Instant::now()) {
                SyncPlan::Nothing | SyncPlan::Settling => {}
                SyncPlan::TurnOff {
                    unset,
                    clear_record,
                } => {
                    if unset {
                        memory.fold(Event::SyncOff);
                        self.apply_primary_config(memory).await?;
                        tracing::info!("synchronous replication off");
                    }
                    if clear_record {
                        self.record_sync(Vec::new(), obs).await?;
                    }
                }
                SyncPlan::InStep => memory.fold(Event::SyncInStep),
                SyncPlan::Switch { from, to, record } => {
                    if let Some(rules) = record {
                        self.record_sync(rules, obs).await?;
                    }
                    memory.fold(Event::SyncSwitched {
                        rule: to.clone(),
                        at: Instant::now(),
                    });
                    self.apply_primary_config(memory).await?;
                    tracing::info!(
                        "synchronous standbys now {} (was {})",
                        describe_rule(&to, obs),
                        describe_rule(&from, obs)
                    );
                }
                SyncPlan::StartSettling => memory.fold(Event::SyncSettling { at: Instant::now() }),
                SyncPlan::ReadTarget => {
                    let lsn = self.postgres.current_wal_lsn().await?;
                    memory.fold(Event::SyncTarget { lsn });
                    continue;
                }
                SyncPlan::DropOld { rule } => {
                    self.record_sync(vec![rule.clone()], obs).await?;
                    memory.fold(Event::SyncSettled);
                    if rule.quorum > 0 {
                        tracing::info!(
                            "recorded synchronous standbys {}: they hold every acknowledged commit",
                            describe_rule(&rule, obs)
                        );
                    } else {
                        tracing::warn!(
                            "recorded no synchronous standby: automatic failover is blocked \
                             until a standby streams and catches up"
                        );
                    }
                }
            }
            break;
        }
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
}
