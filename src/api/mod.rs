//! The REST API (port 8008): the cluster view and health endpoints, open; and admin
//! endpoints that change the cluster, which need `Authorization: Bearer <admin token>` (the
//! token is in the node's state directory, readable only by the daemon's user).
//!
//! Read-only handlers serve this node's committed view; changes are proposed through Raft
//! like everything else. Errors are one JSON shape: `{"error": "..."}`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Command, CommandResult, JoinToken, Lease};
use crate::lease::LeaseClock;
use crate::raft::RaftHandle;
use crate::secret::Secret;

/// What every handler can use.
#[derive(Clone)]
pub struct AppState {
    pub handle: RaftHandle,
    pub lease_clock: LeaseClock,
    pub admin_token: Secret<String>,
    pub ca_sha256: String,
    pub name: String,
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/liveness", get(liveness))
        .route("/cluster", get(cluster))
        .route("/admin/lease/{action}", post(lease))
        .route("/admin/members/{name}", delete(remove_member))
        .route("/admin/tokens", post(create_token))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// An API error: a status and a message for `{"error": ...}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::raft::Error> for ApiError {
    fn from(e: crate::raft::Error) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token)
            if bool::from(
                token
                    .as_bytes()
                    .ct_eq(state.admin_token.expose().as_bytes()),
            ) =>
        {
            Ok(())
        }
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "admin endpoints need `Authorization: Bearer <token>` with the token from the \
             node's state directory (admin.token)"
                .into(),
        )),
    }
}

/// `GET /liveness`: 200 while the Raft core runs, 503 once it has stopped for good.
async fn liveness(State(state): State<AppState>) -> Response {
    match state.handle.metrics().running_state {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "running" }))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stopped", "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// One member in `/cluster`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberReport {
    pub id: u64,
    pub name: String,
    pub peer_addr: String,
    pub api_addr: String,
    /// `leader`, `voter` or `learner` in Raft; `registered` if not (yet) in Raft membership.
    pub raft_role: String,
    pub lease_holder: bool,
}

/// The body of `GET /cluster`, as seen by the answering member.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterReport {
    pub cluster_id: String,
    /// The member that answered and its Raft state (`Leader`, `Follower`, `Candidate`, `Learner`).
    pub answered_by: String,
    pub raft_state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_applied: Option<u64>,
    pub lease: Option<Lease>,
    pub members: Vec<MemberReport>,
}

async fn cluster(State(state): State<AppState>) -> Json<ClusterReport> {
    let metrics = state.handle.metrics();
    let view = state.handle.view().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members = view
        .state
        .members
        .values()
        .map(|m| {
            let id = m.id.0;
            let raft_role = if metrics.current_leader == Some(id) {
                "leader"
            } else if voters.contains(&id) {
                "voter"
            } else if membership.get_node(&id).is_some() {
                "learner"
            } else {
                "registered"
            };
            MemberReport {
                id,
                name: m.name.clone(),
                peer_addr: m.peer_addr.clone(),
                api_addr: m.api_addr.clone(),
                raft_role: raft_role.into(),
                lease_holder: view.state.lease.as_ref().is_some_and(|l| l.holder == m.id),
            }
        })
        .collect();
    Json(ClusterReport {
        cluster_id: view.state.cluster_id.clone(),
        answered_by: state.name.clone(),
        raft_state: format!("{:?}", metrics.state),
        term: metrics.current_term,
        leader: metrics.current_leader,
        last_applied: metrics.last_applied.map(|l| l.index),
        lease: view.state.lease,
        members,
    })
}

fn command_response(result: CommandResult) -> Response {
    match result {
        CommandResult::Rejected { rejection } => {
            ApiError(StatusCode::CONFLICT, rejection.to_string()).into_response()
        }
        other => (StatusCode::OK, Json(other)).into_response(),
    }
}

/// `POST /admin/lease/{acquire|renew|release}` for this member. The supervisor does this
/// itself; the endpoint exists for operators and tests.
async fn lease(
    State(state): State<AppState>,
    Path(action): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let me = crate::cluster::NodeId(state.handle.id());
    let view = state.handle.view().borrow().clone();
    let current = view.state.lease;
    let command = match action.as_str() {
        "acquire" => {
            let expected = state
                .lease_clock
                .takeover(me, current.as_ref(), view.state.config.ttl)
                .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
            Command::AcquireLease {
                candidate: me,
                expected,
            }
        }
        "renew" | "release" => {
            let epoch = match &current {
                Some(l) if l.holder == me => l.epoch,
                _ => {
                    return Err(ApiError(
                        StatusCode::CONFLICT,
                        format!("this member (node {me}) does not hold the lease"),
                    ))
                }
            };
            if action == "renew" {
                Command::RenewLease { holder: me, epoch }
            } else {
                Command::ReleaseLease { holder: me, epoch }
            }
        }
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("unknown lease action {other:?}; use acquire, renew or release"),
            ))
        }
    };
    Ok(command_response(state.handle.propose(command).await?))
}

/// `DELETE /admin/members/{name}`: removes a member from Raft and from the cluster.
async fn remove_member(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let view = state.handle.view().borrow().clone();
    let member = view.state.member_by_name(&name).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no member named {name:?}; see `pgquorum list`"),
        )
    })?;
    state.handle.remove_member(member.id.0).await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "removed": name, "id": member.id.0 })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    pub uses: u32,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

/// `POST /admin/tokens`: creates a join token and returns it (the only time it is shown).
async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let token = crate::tls::JoinTokenString::generate(&state.ca_sha256);
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
        return Err(ApiError(StatusCode::CONFLICT, rejection.to_string()));
    }
    Ok((StatusCode::OK, Json(json!({ "token": token.to_string() }))).into_response())
}
