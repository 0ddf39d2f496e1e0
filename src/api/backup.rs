//! `POST /admin/backup` (take a backup: the cluster chooses who) and `GET /backup` (the
//! repository's backups and WAL range as pgBackRest reports them, and the cluster's
//! pending and last backup).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::admin::propose;
use super::auth::authorize;
use super::error::ApiError;
use super::read::Snapshot;
use super::state::AppState;
use crate::cluster::{BackupJob, BackupKind, BackupOutcome, Command};

/// A pending backup whose runner has been silent this long may be handed to another.
const RUNNER_SILENT_SECS: u64 = 60;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BackupRequest {
    #[serde(default, rename = "type")]
    pub kind: BackupKind,
}

/// `GET /backup`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupReport {
    pub stanza: Option<String>,
    /// The backup being taken, and by whom.
    pub pending: Option<BackupJob>,
    pub pending_runner: Option<String>,
    pub last: Option<BackupOutcome>,
    pub last_runner: Option<String>,
    /// `pgbackrest info --output=json` for the stanza, as this member read it.
    pub info: Option<serde_json::Value>,
    /// Why `info` is missing.
    pub info_error: Option<String>,
    /// How the last restore drill (`pgquorum backup verify`) ended.
    #[serde(default)]
    pub last_verify: Option<BackupOutcome>,
    #[serde(default)]
    pub last_verify_runner: Option<String>,
    /// The restore under way (`pgquorum restore`), and the last one that ended.
    #[serde(default)]
    pub restore: Option<crate::cluster::Restore>,
    #[serde(default)]
    pub last_restore: Option<crate::cluster::RestoreOutcome>,
}

pub(super) async fn request_backup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<BackupRequest>,
) -> Result<Response, ApiError> {
    request_job(&state, &headers, request.kind, false).await
}

/// `POST /admin/backup/verify`: the restore drill, on a replica when one streams.
pub(super) async fn request_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    request_job(&state, &headers, BackupKind::Full, true).await
}

async fn request_job(
    state: &AppState,
    headers: &HeaderMap,
    kind: BackupKind,
    verify: bool,
) -> Result<Response, ApiError> {
    let state = state.clone();
    authorize(&state, headers)?;
    let snapshot = Snapshot::take(&state);
    let cluster = &snapshot.view.state;
    if cluster.config.backup.is_none() {
        return Err(ApiError::conflict(
            crate::cluster::Rejection::NoBackupConfigured.to_string(),
        ));
    }
    if let Some(pg) = &state.postgres {
        stanza_ready(pg, verify).await?;
    }
    // The drill needs no primary's pgBackRest server: it only reads the repository.
    let from_standby = verify
        || cluster
            .config
            .backup
            .as_ref()
            .is_some_and(|b| b.from_standby)
            && primary_serves_backrest(&state, cluster);
    let runner = crate::backup::choose_runner(cluster, &snapshot.statuses, from_standby)
        .ok_or_else(|| {
            ApiError::conflict(
                "no member can take a backup now: there is no writable primary with a fresh \
                 status; retry once `pgquorum list` shows one",
            )
        })?;
    let now = crate::backup::unix_now();
    let replace = cluster.backup_job.as_ref().is_some_and(|job| {
        !snapshot.statuses.contains_key(&job.runner)
            && now.saturating_sub(job.requested_unix) >= RUNNER_SILENT_SECS
    });
    let job = BackupJob {
        id: 0,
        kind,
        runner,
        requested_unix: now,
        scheduled: false,
        verify,
    };
    propose(&state, Command::RequestBackup { job, replace }).await
}

/// Refuses a backup while the repository has no stanza yet: the primary creates it a few
/// seconds after `[backup]` is set (`pgbackrest info` status 1, missing stanza path, or 3,
/// missing stanza data); and a drill (`verify`) while it has no backup.
async fn stanza_ready(pg: &crate::postgres::Postgres, verify: bool) -> Result<(), ApiError> {
    let Ok(text) = pg.pgbackrest(&["info", "--output=json"]).await else {
        return Ok(()); // the runner's own attempt will say what is wrong
    };
    let info: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    match info
        .pointer("/0/status/code")
        .and_then(serde_json::Value::as_u64)
    {
        Some(1 | 3) => Err(ApiError::conflict(
            "the repository has no stanza yet: the primary creates it once [backup] is set \
             (its log then says so); retry in a few seconds, or see \
             `pgquorum backup info`",
        )),
        _ if verify && info.pointer("/0/backup/0").is_none() => Err(ApiError::conflict(
            "the repository has no backup to verify yet; take one with `pgquorum backup`",
        )),
        _ => Ok(()),
    }
}

/// Whether the lease holder's last fresh status shows its pgBackRest server running, so a
/// standby can take the backup.
fn primary_serves_backrest(state: &AppState, cluster: &crate::cluster::ClusterState) -> bool {
    let Some(holder) = cluster.lease_holder() else {
        return false;
    };
    let local = state.local_status.borrow();
    if let Some((status, _)) = local.as_ref().filter(|(s, _)| s.node_id == holder) {
        return status.backrest.is_some();
    }
    let peers = state.peer_statuses.borrow();
    let horizon = cluster.config.status_horizon();
    let found = peers
        .fresh(horizon, tokio::time::Instant::now())
        .find(|(id, _)| *id == holder)
        .is_some_and(|(_, report)| report.status.backrest.is_some());
    found
}

pub(super) async fn backup_report(State(state): State<AppState>) -> Json<BackupReport> {
    let view = state.handle.view().borrow().clone();
    let cluster = &view.state;
    let (info, info_error) = match (&state.postgres, &cluster.config.backup) {
        (_, None) => (None, Some("no [backup] configured".to_string())),
        (None, Some(_)) => (None, Some("this member runs no PostgreSQL".to_string())),
        (Some(pg), Some(_)) => match pg.pgbackrest(&["info", "--output=json"]).await {
            Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(value) => (value.get(0).cloned(), None),
                Err(e) => (None, Some(format!("pgbackrest info: {e}"))),
            },
            Err(e) => (None, Some(e.to_string())),
        },
    };
    Json(BackupReport {
        stanza: cluster.config.backup.as_ref().map(|b| b.stanza.clone()),
        pending_runner: cluster
            .backup_job
            .as_ref()
            .map(|j| cluster.name_of(j.runner)),
        pending: cluster.backup_job.clone(),
        last_runner: cluster
            .last_backup
            .as_ref()
            .map(|o| cluster.name_of(o.runner)),
        last: cluster.last_backup.clone(),
        info,
        info_error,
        last_verify: cluster.last_verify.clone(),
        last_verify_runner: (cluster.last_verify.as_ref()).map(|o| cluster.name_of(o.runner)),
        restore: cluster.restore.clone(),
        last_restore: cluster.last_restore.clone(),
    })
}
