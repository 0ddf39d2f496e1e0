//! `POST /admin/restore`: take the whole cluster back to a point in time from the backup
//! repository (`cluster::restore`). The target is checked against the repository here,
//! before anything stops.

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
use crate::cluster::{ClusterState, Command, NodeId, Rejection, Restore, RestoreTarget};
use crate::postgres::PgStatus;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// `latest`, a WAL position, a time with its offset, or `name:<restore point>`.
    pub to: String,
    /// Remove the members' data directories instead of moving them aside.
    #[serde(default)]
    pub force: bool,
}

pub(super) async fn request_restore(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<RestoreRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let target = RestoreTarget::parse(&request.to).map_err(ApiError::bad_request)?;
    let snapshot = Snapshot::take(&state);
    let cluster = &snapshot.view.state;
    if cluster.config.backup.is_none() {
        return Err(ApiError::conflict(
            Rejection::NoBackupConfigured.to_string(),
        ));
    }
    if let Some(restore) = &cluster.restore {
        return Err(ApiError::conflict(
            Rejection::RestoreInProgress {
                id: restore.id,
                runner: cluster.name_of(restore.runner),
            }
            .to_string(),
        ));
    }
    let pg = state.postgres.as_ref().ok_or_else(|| {
        ApiError::conflict(
            "this member runs no PostgreSQL and cannot read the repository; ask a member \
             that does (--api <its address>)",
        )
    })?;
    let info = pg
        .pgbackrest(&["info", "--output=json"])
        .await
        .map_err(|e| ApiError::conflict(format!("reading the repository: {e}")))?;
    let info: serde_json::Value = serde_json::from_str(&info)
        .map_err(|e| ApiError::conflict(format!("reading pgbackrest info: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let set =
        crate::backup::restore::check_target(&target, &info[0], now, snapshot.primary_position)
            .map_err(ApiError::bad_request)?;
    let runner = choose_runner(cluster, &snapshot.statuses, snapshot.me).ok_or_else(|| {
        ApiError::conflict(
            "no member with PostgreSQL has answered lately to run the restore; retry once \
             `pgquorum list` shows members",
        )
    })?;
    let restore = Restore {
        id: 0,
        target,
        runner,
        remove_old: request.force,
        set,
        requested_unix: crate::backup::unix_now(),
        stopped: Default::default(),
    };
    propose(&state, Command::RequestRestore { restore }).await
}

/// Who restores: the lease holder if it answers (the primary stays where it was), else
/// this member, else the first member with PostgreSQL that answers.
fn choose_runner(
    cluster: &ClusterState,
    statuses: &std::collections::BTreeMap<NodeId, PgStatus>,
    me: NodeId,
) -> Option<NodeId> {
    let eligible = |id: &NodeId| cluster.member(*id).is_some_and(|m| !m.is_witness());
    let answering = |id: &NodeId| eligible(id) && statuses.contains_key(id);
    cluster
        .lease_holder()
        .filter(answering)
        .or(Some(me).filter(eligible))
        .or_else(|| statuses.keys().copied().find(answering))
}
