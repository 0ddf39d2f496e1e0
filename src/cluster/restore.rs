//! Taking the whole cluster back to a point in its past (`pgquorum restore --to`), in three
//! steps the cluster state keeps track of:
//!
//! 1. `RequestRestore` records the restore and the member that runs it. From then on no
//!    member runs PostgreSQL on its own: each stops it, moves its data directory aside (or
//!    removes it, with `--force`) and reports `RestoreStopped`; the lease holder also gives
//!    up its lease.
//! 2. Once every member with PostgreSQL has reported, the runner takes the free lease and
//!    restores from the repository; PostgreSQL replays the archive to the target and is
//!    promoted onto a new, reserved timeline.
//! 3. It reports `FinishRestore`; the others, with no data directory, clone it as new
//!    members do.
//!
//! The proposer checks the target against the repository; `apply` only keeps the record.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::command::{CommandResult, Rejection};
use super::member::NodeId;
use super::state::ClusterState;

/// Where the restore stops replaying WAL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum RestoreTarget {
    /// The end of the archive.
    Latest,
    /// A time, as PostgreSQL and pgBackRest read it: `2026-12-07 14:30:00.25+01:00`.
    Time(String),
    /// A WAL position, `16/B374D848`.
    Lsn(String),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
}

impl RestoreTarget {
    /// What an operator typed after `--to`: `latest`, an LSN, a time with its offset
    /// (`2026-12-07 14:30:00+00`, RFC 3339 too) or `name:<restore point>`.
    pub fn parse(text: &str) -> Result<RestoreTarget, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("latest") {
            return Ok(RestoreTarget::Latest);
        }
        if let Some(name) = text.strip_prefix("name:") {
            if name.is_empty() || name.len() > 63 {
                return Err(format!(
                    "restore point name {name:?} must have 1 to 63 characters"
                ));
            }
            return Ok(RestoreTarget::Name(name.to_string()));
        }
        if let Some((high, low)) = text.split_once('/') {
            let hex =
                |s: &str| !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
            if hex(high) && hex(low) {
                return Ok(RestoreTarget::Lsn(text.to_ascii_uppercase()));
            }
        }
        match parse_time(text) {
            // pgBackRest reads only this form (to choose the backup).
            Some(time) => Ok(RestoreTarget::Time(
                time.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string(),
            )),
            None => Err(format!(
                "restore target {text:?} is not one of: latest; a WAL position such as \
                 16/B374D848; a time with its UTC offset such as \"2026-12-07 14:30:00+00\" or \
                 2026-12-07T14:30:00Z; name:<restore point>"
            )),
        }
    }

    /// The target as a time, for range checks; `None` for the others.
    pub fn unix_seconds(&self) -> Option<f64> {
        match self {
            RestoreTarget::Time(text) => parse_time(text)
                .map(|t| t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6),
            _ => None,
        }
    }
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Latest => f.write_str("latest (the end of the archive)"),
            RestoreTarget::Time(t) => write!(f, "time {t}"),
            RestoreTarget::Lsn(l) => write!(f, "WAL position {l}"),
            RestoreTarget::Name(n) => write!(f, "restore point {n}"),
        }
    }
}

/// A time with an explicit offset (a time without one would be read in whatever time zone
/// PostgreSQL runs in).
fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").ok())
        .or_else(|| {
            let utc = text
                .strip_suffix(" UTC")
                .or_else(|| text.strip_suffix('Z'))?;
            let naive = chrono::NaiveDateTime::parse_from_str(utc, "%Y-%m-%d %H:%M:%S%.f").ok()?;
            Some(naive.and_utc().fixed_offset())
        })
}

/// A restore under way.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Restore {
    pub id: u64,
    pub target: RestoreTarget,
    /// The member that restores and becomes the primary.
    pub runner: NodeId,
    /// Remove the old data directories instead of moving them aside (`--force`).
    #[serde(default)]
    pub remove_old: bool,
    /// The backup to restore (pgBackRest's label); `None`: the newest, or for a time the
    /// newest that ended before it.
    #[serde(default)]
    pub set: Option<String>,
    /// Unix seconds, as the proposer judged them.
    pub requested_unix: u64,
    /// The members that have stopped PostgreSQL and put their data directory away.
    #[serde(default)]
    pub stopped: BTreeSet<NodeId>,
}

impl Restore {
    /// The members with PostgreSQL that have not reported stopping yet.
    pub fn waiting_for(
        &self,
        state_members: &std::collections::BTreeMap<NodeId, super::Member>,
    ) -> Vec<NodeId> {
        state_members
            .iter()
            .filter(|(id, m)| !m.is_witness() && !self.stopped.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// How the last restore ended, as its runner reported.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub id: u64,
    pub target: RestoreTarget,
    pub runner: NodeId,
    pub ok: bool,
    /// What was restored (backup, timeline), or what failed.
    pub message: String,
    pub finished_unix: u64,
}

/// `RequestRestore`: records `restore` under the next id. Refused without `[backup]`, for a
/// runner that is not a member with PostgreSQL, while another restore or a backup is under
/// way. Clears a pending switchover or failover: nobody is primary until the restore ends.
pub(super) fn request(
    state: &mut ClusterState,
    mut restore: Restore,
) -> Result<CommandResult, Rejection> {
    super::backup_job::can_run(state, restore.runner)?;
    if let Some(pending) = &state.restore {
        return Err(Rejection::RestoreInProgress {
            id: pending.id,
            runner: state.name_of(pending.runner),
        });
    }
    if let Some(job) = &state.backup_job {
        return Err(Rejection::BackupInProgress {
            id: job.id,
            runner: state.name_of(job.runner),
        });
    }
    state.next_restore_id += 1;
    restore.id = state.next_restore_id;
    restore.stopped.clear();
    let id = restore.id;
    state.restore = Some(restore);
    state.switchover = None;
    state.failover = None;
    Ok(CommandResult::RestoreRequested { id })
}

/// `RestoreStopped`: `member` has stopped PostgreSQL and put its data directory away for
/// restore `id`.
pub(super) fn stopped(
    state: &mut ClusterState,
    id: u64,
    member: NodeId,
) -> Result<CommandResult, Rejection> {
    if state.member(member).is_none() {
        return Err(Rejection::UnknownMember { id: member });
    }
    match &mut state.restore {
        Some(restore) if restore.id == id => {
            restore.stopped.insert(member);
            Ok(CommandResult::Applied)
        }
        _ => Err(Rejection::NoSuchRestore { id }),
    }
}

/// `FinishRestore`: the runner of restore `outcome.id` reports how it ended.
pub(super) fn finish(
    state: &mut ClusterState,
    outcome: &RestoreOutcome,
) -> Result<CommandResult, Rejection> {
    match &state.restore {
        Some(restore) if restore.id == outcome.id && restore.runner == outcome.runner => {
            state.restore = None;
            state.last_restore = Some(outcome.clone());
            Ok(CommandResult::Applied)
        }
        _ => Err(Rejection::NoSuchRestore { id: outcome.id }),
    }
}
