//! One backup at a time, run by one member: requested (by an operator or the schedule),
//! taken by the member named in the request, and finished by that member's report. The
//! proposer chooses the runner (a healthy replica when there is one); `apply` only keeps
//! the record.

use serde::{Deserialize, Serialize};

use super::command::{CommandResult, Rejection};
use super::member::NodeId;
use super::state::ClusterState;

/// pgBackRest's backup types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Everything.
    #[default]
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any type.
    Incr,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

/// A backup requested and not yet reported finished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupJob {
    pub id: u64,
    pub kind: BackupKind,
    /// The member that takes it.
    pub runner: NodeId,
    /// Unix seconds, as the proposer judged them.
    pub requested_unix: u64,
    /// Asked by the schedule rather than by an operator.
    #[serde(default)]
    pub scheduled: bool,
    /// Not a backup but the restore drill (`pgquorum backup verify`): the newest backup
    /// restored into a scratch directory, started, checked and removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// How the last backup ended, as its runner reported.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupOutcome {
    pub id: u64,
    pub kind: BackupKind,
    pub runner: NodeId,
    pub ok: bool,
    /// pgBackRest's label of the backup when it succeeded, else what failed.
    pub message: String,
    pub finished_unix: u64,
    /// The outcome of a restore drill, not of a backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// Whether `runner` may take a backup or run a restore: `[backup]` is configured and it is
/// a member with PostgreSQL.
pub(super) fn can_run(state: &ClusterState, runner: NodeId) -> Result<(), Rejection> {
    if state.config.backup.is_none() {
        return Err(Rejection::NoBackupConfigured);
    }
    match state.member(runner) {
        Some(m) if !m.is_witness() => Ok(()),
        _ => Err(Rejection::UnknownMember { id: runner }),
    }
}

/// `RequestBackup`: records `job` under the next id. Refused without `[backup]`, for a
/// runner that is not a member with PostgreSQL, and while another backup is pending unless
/// `replace` (the proposer saw that backup's runner stop answering).
pub(super) fn request(
    state: &mut ClusterState,
    mut job: BackupJob,
    replace: bool,
) -> Result<CommandResult, Rejection> {
    can_run(state, job.runner)?;
    if let Some(restore) = &state.restore {
        return Err(Rejection::RestoreInProgress {
            id: restore.id,
            runner: state.name_of(restore.runner),
        });
    }
    if let Some(pending) = &state.backup_job {
        if !replace {
            return Err(Rejection::BackupInProgress {
                id: pending.id,
                runner: state.name_of(pending.runner),
            });
        }
    }
    state.next_backup_id += 1;
    job.id = state.next_backup_id;
    let id = job.id;
    state.backup_job = Some(job);
    Ok(CommandResult::BackupRequested { id })
}

/// `FinishBackup`: the runner of the pending backup `outcome.id` reports how it ended.
/// A report for another backup (one that was replaced) changes nothing. A drill's outcome
/// is kept apart from the backups'.
pub(super) fn finish(
    state: &mut ClusterState,
    outcome: &BackupOutcome,
) -> Result<CommandResult, Rejection> {
    match &state.backup_job {
        Some(job) if job.id == outcome.id && job.runner == outcome.runner => {
            state.backup_job = None;
            if outcome.verify {
                state.last_verify = Some(outcome.clone());
                return Ok(CommandResult::Applied);
            }
            state.last_backup = Some(outcome.clone());
            if outcome.ok {
                state.last_good_backup = Some(outcome.clone());
            }
            Ok(CommandResult::Applied)
        }
        _ => Err(Rejection::NoSuchBackup { id: outcome.id }),
    }
}
