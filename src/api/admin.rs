//! The admin handlers: each checks the token, turns the request into a [`Command`] with a
//! pure function over the committed state (tested in `admin/tests.rs`), and proposes it.
//!
//! What can change between reading the state and committing the command is judged again by
//! `apply`, atomically: the lease holder for a switchover, a reinit of the primary, a witness
//! as the target of anything. What the API judges alone is what `apply` cannot see (the
//! members' PostgreSQL statuses) or the shape of the request; a forced failover refused
//! here because a healthy primary holds the lease would not act while it holds it anyway.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::authorize;
use super::error::{command_response, ApiError};
use super::read::Snapshot;
use super::state::AppState;
use crate::cluster::{
    ClusterState, Command, CommandResult, DynamicConfig, Failover, JoinToken, Member, MemberAction,
    NodeId, Switchover,
};
use crate::postgres::PgStatus;

/// The body of `POST /admin/switchover`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct SwitchoverRequest {
    /// The member to hand over to; the best eligible replica when absent.
    #[serde(default)]
    pub candidate: Option<String>,
    /// Not before this time (RFC 3339, e.g. `2026-11-24T02:00:00Z`); now when absent.
    #[serde(default)]
    pub at: Option<String>,
}

/// The body of `POST /admin/failover`, `/admin/restart` and `/admin/reinit`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct MemberRequest {
    /// The member concerned (for restart: none means every member).
    #[serde(default)]
    pub member: Option<String>,
}

/// The body of `POST /admin/tokens`.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    pub uses: u32,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

// ---- the judgements, pure over the committed state ----------------------------------------

/// The member named `name`, or 404 naming it.
fn member_named<'a>(cluster: &'a ClusterState, name: &str) -> Result<&'a Member, ApiError> {
    cluster.member_by_name(name).ok_or_else(|| {
        ApiError::not_found(format!("no member named {name:?}; see `pgquorum list`"))
    })
}

/// The switchover `request` asks for: from the current holder, to the named candidate, not
/// before the given time.
fn switchover(cluster: &ClusterState, request: &SwitchoverRequest) -> Result<Switchover, ApiError> {
    let lease = cluster.lease.ok_or_else(|| {
        ApiError::conflict(
            "no member holds the lease, so there is no primary to switch over from; use \
             failover instead",
        )
    })?;
    let to = match &request.candidate {
        Some(name) => Some(member_named(cluster, name)?.id),
        None => None,
    };
    let at_unix_ms = match request.at.as_deref() {
        None => None,
        Some(text) => {
            let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "switchover time {text:?} is not a time ({e}); write it as RFC 3339, e.g. \
                     2026-11-24T02:00:00Z"
                ))
            })?;
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            Some(ms)
        }
    };
    Ok(Switchover {
        from: lease.holder,
        to,
        at_unix_ms,
    })
}

/// The forced failover `request` asks for, judged against the statuses this member knows:
/// refused while a healthy primary holds the lease (that is a switchover).
fn failover(
    cluster: &ClusterState,
    statuses: &BTreeMap<NodeId, PgStatus>,
    request: &MemberRequest,
) -> Result<Failover, ApiError> {
    let name = request.member.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "a failover needs a candidate: `pgquorum failover --candidate <member>`",
        )
    })?;
    let candidate = member_named(cluster, name)?;
    if let Some(lease) = cluster.lease {
        if statuses
            .get(&lease.holder)
            .is_some_and(PgStatus::is_writable)
        {
            let holder = cluster.name_of(lease.holder);
            return Err(ApiError::conflict(format!(
                "{holder} is a healthy primary (lease epoch {}); a failover is for a cluster \
                 without one: use `pgquorum switchover --candidate {name}`",
                lease.epoch
            )));
        }
    }
    Ok(Failover { to: candidate.id })
}

/// The members a restart `request` concerns: the named one (a witness is refused by
/// `apply`), or every member with PostgreSQL.
fn restart_targets(
    cluster: &ClusterState,
    request: &MemberRequest,
) -> Result<Vec<NodeId>, ApiError> {
    match request.member.as_deref() {
        Some(name) => Ok(vec![member_named(cluster, name)?.id]),
        None => Ok(cluster
            .members
            .values()
            .filter(|m| !m.is_witness())
            .map(|m| m.id)
            .collect()),
    }
}

/// The dynamic configuration after merging `patch` into `current`, one level deep: so
/// `{"postgresql_parameters": {"work_mem": "64MB"}}` adds one parameter, and a null value
/// inside such an object removes that parameter. Validated by `apply`, not here.
fn merged_config(
    current: &DynamicConfig,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<DynamicConfig, ApiError> {
    let mut merged = serde_json::to_value(current)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(object) = merged.as_object_mut() {
        for (key, value) in patch {
            match (object.get_mut(&key), value) {
                (Some(serde_json::Value::Object(current)), serde_json::Value::Object(changes)) => {
                    for (name, value) in changes {
                        if value.is_null() {
                            current.remove(&name);
                        } else {
                            current.insert(name, value);
                        }
                    }
                }
                (_, value) => {
                    object.insert(key, value);
                }
            }
        }
    }
    serde_json::from_value(merged)
        .map_err(|e| ApiError::bad_request(format!("invalid configuration: {e}")))
}

// ---- the handlers ---------------------------------------------------------------------------

/// An admin call that is one proposal: checks the token, proposes `command`, answers with
/// its result.
async fn propose_as_admin(
    state: &AppState,
    headers: &HeaderMap,
    command: Command,
) -> Result<Response, ApiError> {
    authorize(state, headers)?;
    propose(state, command).await
}

/// Proposes `command` and answers with its result (the caller has checked the token).
/// Refused while a member's binary is too old to apply it ([`Command::level`]): during a
/// rolling upgrade such an entry would stop that member applying the log.
pub(super) async fn propose(state: &AppState, command: Command) -> Result<Response, ApiError> {
    let me = NodeId(state.handle.id());
    if !state
        .peer_statuses
        .borrow()
        .all_can_apply(&committed(state).state, me, &command)
    {
        return Err(ApiError::conflict(
            "not every member runs a version of pgquorum that can apply this change (or \
             one has not answered lately); upgrade them all and retry",
        ));
    }
    Ok(command_response(state.handle.propose(command).await?))
}

/// The committed state as this member last applied it.
fn committed(state: &AppState) -> std::sync::Arc<crate::raft::ClusterView> {
    state.handle.view().borrow().clone()
}

/// `POST /admin/lease/{acquire|renew|release}` for this member. The supervisor does this
/// itself; the endpoint exists for operators and tests.
pub(super) async fn lease(
    State(state): State<AppState>,
    Path(action): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let me = NodeId(state.handle.id());
    let view = committed(&state);
    let current = view.state.lease;
    let command = match action.as_str() {
        "acquire" => {
            let expected = state
                .lease_clock
                .takeover(me, current.as_ref(), view.state.config.ttl)
                .map_err(|e| ApiError::conflict(e.to_string()))?;
            Command::AcquireLease {
                candidate: me,
                expected,
            }
        }
        "renew" | "release" => {
            let epoch = match &current {
                Some(l) if l.holder == me => l.epoch,
                _ => {
                    return Err(ApiError::conflict(format!(
                        "this member (node {me}) does not hold the lease"
                    )))
                }
            };
            if action == "renew" {
                Command::RenewLease { holder: me, epoch }
            } else {
                Command::ReleaseLease { holder: me, epoch }
            }
        }
        other => {
            return Err(ApiError::not_found(format!(
                "unknown lease action {other:?}; use acquire, renew or release"
            )))
        }
    };
    propose(&state, command).await
}

/// `DELETE /admin/members/{name}`: removes a member from Raft and from the cluster.
pub(super) async fn remove_member(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let id = member_named(&committed(&state).state, &name)?.id;
    state.handle.remove_member(id.0).await?;
    Ok((StatusCode::OK, Json(json!({ "removed": name, "id": id.0 }))).into_response())
}

/// `POST /admin/failover`: makes the named member take the lease as soon as it is vacant,
/// whatever lag or the synchronous set say (forced; acknowledged commits the lost primary
/// had may be lost). Refused while a healthy primary holds the lease: that is a switchover.
pub(super) async fn request_failover(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<MemberRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let snapshot = Snapshot::take(&state);
    let failover = failover(&snapshot.view.state, &snapshot.statuses, &request)?;
    propose(&state, Command::RequestFailover { failover }).await
}

/// `DELETE /admin/failover`: cancels a pending forced failover.
pub(super) async fn cancel_failover(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::ClearFailover).await
}

/// `POST /admin/certificate/rotate`: moves this member to a new node key and certificate
/// (see [`crate::rotate`]); answers when the old key is refused, or 409 with why not.
pub(super) async fn rotate_certificate(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    match state.rotator.rotate().await {
        Ok(rotated) => Ok(Json(rotated).into_response()),
        Err(error) => Err(ApiError::conflict(format!("{error:#}"))),
    }
}

/// What `POST /admin/ca/rotate` is asked to do.
#[derive(Debug, Deserialize)]
pub(super) struct CaRotateRequest {
    /// Finish the rotation under way instead of starting one.
    #[serde(default)]
    finish: bool,
}

/// `POST /admin/ca/rotate`: starts moving the cluster to a new CA (every member moves by
/// itself; `GET /admin/ca` shows how far), or finishes once every member has moved (see
/// [`crate::ca_rotation`]). 409 with why not.
pub(super) async fn rotate_ca(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<CaRotateRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let done = match request.finish {
        false => crate::ca_rotation::start(&state.authority, &state.rotator).await,
        true => crate::ca_rotation::finish(&state.handle).await.map(|_| ()),
    };
    match done {
        Ok(()) => ca_status(State(state), headers).await,
        Err(error) => Err(ApiError::conflict(format!("{error:#}"))),
    }
}

/// `GET /admin/ca`: the CA this member uses and a CA rotation's progress.
pub(super) async fn ca_status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let view = committed(&state);
    let status = crate::ca_rotation::status(&state.authority, &view.state);
    Ok(Json(status).into_response())
}

/// `POST /admin/restart`: restarts PostgreSQL on the named member, or on every member with
/// PostgreSQL; stops at the first refusal.
pub(super) async fn request_restart(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<MemberRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let targets = restart_targets(&committed(&state).state, &request)?;
    let mut result = CommandResult::Applied;
    for member in targets {
        let action = MemberAction::Restart;
        result = state
            .handle
            .propose(Command::RequestAction { member, action })
            .await?;
        if result.is_rejected() {
            break;
        }
    }
    Ok(command_response(result))
}

/// `POST /admin/reinit`: replaces the named replica's data directory with a fresh clone of
/// the primary. `apply` refuses it for the lease holder and for a witness.
pub(super) async fn request_reinit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<MemberRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let name = request.member.as_deref().unwrap_or_default();
    let member = member_named(&committed(&state).state, name)?.id;
    let action = MemberAction::Reinit;
    propose(&state, Command::RequestAction { member, action }).await
}

/// `POST /admin/switchover`: asks the current primary to hand over, once the candidate has
/// caught up (planned: no acknowledged commit is lost).
pub(super) async fn request_switchover(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<SwitchoverRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let switchover = switchover(&committed(&state).state, &request)?;
    propose(&state, Command::RequestSwitchover { switchover }).await
}

/// `DELETE /admin/switchover`: cancels a pending switchover.
pub(super) async fn cancel_switchover(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::ClearSwitchover).await
}

/// `GET /config`: the dynamic (cluster-wide) configuration, as committed.
pub(super) async fn show_config(State(state): State<AppState>) -> Json<DynamicConfig> {
    Json(committed(&state).state.config.clone())
}

/// `PATCH /config` (admin): merges the given keys into the dynamic configuration (see
/// [`merged_config`]); the result is validated when applied, and a rejection names the key
/// and the fix.
pub(super) async fn patch_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let current = committed(&state).state.config.clone();
    let config = merged_config(&current, patch)?;
    check_backup(&current, &config)?;
    propose(&state, Command::SetConfig { config }).await
}

/// A new or changed `[backup]` is tried here first: pgbackrest must be installed and a
/// directory repository must exist on this member, else nothing is proposed.
fn check_backup(current: &DynamicConfig, new: &DynamicConfig) -> Result<(), ApiError> {
    match &new.backup {
        Some(backup) if current.backup.as_ref() != Some(backup) => (backup.validate())
            .and_then(|()| crate::backup::precheck(backup))
            .map_err(ApiError::bad_request),
        _ => Ok(()),
    }
}

/// `PUT /config` (admin): replaces the whole dynamic configuration (what `config edit`
/// sends); validated when applied.
pub(super) async fn replace_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(config): Json<DynamicConfig>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    check_backup(&committed(&state).state.config, &config)?;
    propose_as_admin(&state, &headers, Command::SetConfig { config }).await
}

/// `POST /admin/pause`: maintenance mode on; no automatic action until `resume`.
pub(super) async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::SetPaused { paused: true }).await
}

/// `POST /admin/resume`: maintenance mode off.
pub(super) async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::SetPaused { paused: false }).await
}

/// `POST /admin/tokens`: creates a join token and returns it (the only time it is shown).
pub(super) async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let token = crate::tls::JoinTokenString::generate(&state.authority.current().sha256_hex());
    let record = JoinToken {
        id: token.id().to_string(),
        secret_sha256: token.secret_sha256_hex(),
        uses_left: request.uses,
        expires_at_unix: crate::raft::service::now_unix() + request.ttl.as_secs(),
    };
    let result = state
        .handle
        .propose(Command::CreateToken { token: record })
        .await?;
    if let CommandResult::Rejected { rejection } = result {
        return Err(ApiError::conflict(rejection.to_string()));
    }
    Ok((StatusCode::OK, Json(json!({ "token": token.to_string() }))).into_response())
}

/// `GET /admin/tokens`: the join tokens, without their secrets (or hashes).
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let now = crate::raft::service::now_unix();
    let tokens: Vec<_> = (committed(&state).state.tokens.values())
        .map(|t| {
            json!({
                "id": t.id,
                "uses_left": t.uses_left,
                "expires_at_unix": t.expires_at_unix,
                "usable": t.uses_left > 0 && now < t.expires_at_unix,
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({ "tokens": tokens }))).into_response())
}

/// `DELETE /admin/tokens/{id}`: revokes a join token.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::RevokeToken { id }).await
}

#[cfg(test)]
mod tests;
