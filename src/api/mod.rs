//! The REST API (port 8008): the cluster view and health endpoints, open; and admin
//! endpoints that change the cluster, which need `Authorization: Bearer <admin token>` (the
//! token is in the node's state directory, readable only by the daemon's user).
//!
//! Read-only handlers serve this node's committed view and the statuses it knows (its own
//! from the HA loop, the others' from the status exchange); changes are proposed through
//! Raft like everything else. Errors are one JSON shape: `{"error": "..."}`.
//!
//! Open: the Patroni-compatible health checks (see [`health`], GET, HEAD and OPTIONS),
//! `/liveness`, `/cluster`, `/metrics` (see [`metrics`]) and `/history`.

pub mod health;
pub mod history;
pub mod metrics;

use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    Command, CommandResult, JoinToken, Lease, Member, NodeId, SynchronousMode, Tags,
};
use crate::lease::LeaseClock;
use crate::peers::{LocalStatus, PeerStatuses};
use crate::postgres::{Lsn, PgStatus};
use crate::raft::ClusterView;
use crate::raft::{MembershipRole, RaftHandle};
use crate::secret::Secret;

/// What every handler can use.
#[derive(Clone)]
pub struct AppState {
    pub handle: RaftHandle,
    pub lease_clock: LeaseClock,
    pub admin_token: Secret<String>,
    pub ca_sha256: String,
    pub name: String,
    /// This member's own status (None for a witness, or before the first HA cycle).
    pub local_status: watch::Receiver<LocalStatus>,
    /// The other members' statuses with the instant each answer arrived.
    pub peer_statuses: watch::Receiver<Arc<PeerStatuses>>,
    /// The proxy's counters, when it runs.
    pub proxy_stats: Option<Arc<crate::proxy::stats::Stats>>,
    /// The configured VIP (`address/prefix`) and, in netlink mode, whether this member's
    /// interface carries it.
    pub vip: Option<String>,
    pub vip_handle: Option<crate::vip::Vip>,
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut app = Router::new();
    for (path, endpoint) in health::Endpoint::PATHS {
        app = app.route(path, health_route(*endpoint));
    }
    let app = app
        .route(
            "/liveness",
            get(liveness).options(|state| async { liveness(state).await.status() }),
        )
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .route("/history", get(history::history))
        .route("/admin/lease/{action}", post(lease))
        .route("/admin/members/{name}", delete(remove_member))
        .route("/admin/tokens", post(create_token))
        .route(
            "/admin/switchover",
            post(request_switchover).delete(cancel_switchover),
        )
        .route(
            "/admin/failover",
            post(request_failover).delete(cancel_failover),
        )
        .route("/admin/restart", post(request_restart))
        .route("/admin/reinit", post(request_reinit))
        .route(
            "/config",
            get(show_config).patch(patch_config).put(replace_config),
        )
        .route("/admin/pause", post(pause))
        .route("/admin/resume", post(resume))
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

/// What the read-only handlers look at, taken once per request so that one answer is
/// consistent with itself.
struct Snapshot {
    me: NodeId,
    view: Arc<ClusterView>,
    /// Every member's PostgreSQL status known now (see [`health::known_statuses`]).
    statuses: BTreeMap<NodeId, PgStatus>,
    /// The lease holder's WAL position, if it is a running primary with a fresh status.
    primary_position: Option<Lsn>,
    /// Each member's last HA sentence, from fresh statuses.
    summaries: BTreeMap<NodeId, String>,
    /// Whether each member's interface carries the VIP, from fresh statuses.
    vips: BTreeMap<NodeId, bool>,
}

impl Snapshot {
    fn take(state: &AppState) -> Snapshot {
        let me = NodeId(state.handle.id());
        let view = state.handle.view().borrow().clone();
        let local = state.local_status.borrow().as_ref().map(|(s, _)| s.clone());
        let peers = state.peer_statuses.borrow().clone();
        let (config, now) = (&view.state.config, Instant::now());
        let statuses = health::known_statuses(local.as_ref(), &peers, config, now);
        let summaries = health::known(local.as_ref(), &peers, config, now, |s| s.summary.clone());
        let vips = health::known(local.as_ref(), &peers, config, now, |s| s.vip);
        let primary_position = health::primary_position(view.state.lease.as_ref(), &statuses);
        Snapshot {
            me,
            view,
            statuses,
            primary_position,
            summaries,
            vips,
        }
    }

    fn health_input(&self, name: &str) -> health::HealthInput {
        let member = self.view.state.member(self.me);
        health::HealthInput {
            me: self.me,
            name: name.to_string(),
            witness: member.is_some_and(is_witness),
            pg: self.statuses.get(&self.me).cloned(),
            lease: self.view.state.lease,
            tags: member.map(|m| m.tags.clone()).unwrap_or_default(),
            primary_position: self.primary_position,
            maximum_lag_on_failover: self.view.state.config.maximum_lag_on_failover,
            synchronous: self.view.state.synchronous_members().contains(&self.me),
        }
    }
}

/// A member without PostgreSQL (it registered no PostgreSQL address).
fn is_witness(member: &Member) -> bool {
    member.pg_addr.is_empty()
}

/// The route of one health check: GET answers the status code and the status document,
/// HEAD (axum drops the body) and OPTIONS the status code only, as HAProxy's
/// `option httpchk OPTIONS /primary` expects.
fn health_route(endpoint: health::Endpoint) -> MethodRouter<AppState> {
    let answer = move |state: AppState, query: Vec<(String, String)>| {
        let input = Snapshot::take(&state).health_input(&state.name);
        health::check(endpoint, &query, &input)
    };
    get(
        move |State(state): State<AppState>, Query(query): Query<Vec<(String, String)>>| async move {
            let (code, body) = answer(state, query);
            (code, Json(body))
        },
    )
    .options(
        move |State(state): State<AppState>, Query(query): Query<Vec<(String, String)>>| async move {
            answer(state, query).0
        },
    )
}

/// `GET /metrics`: Prometheus text format (see [`metrics`]).
async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = Snapshot::take(&state);
    let raft = state.handle.metrics();
    let health = snapshot.health_input(&state.name);
    let cluster = &snapshot.view.state;
    let input = metrics::MetricsInput {
        cluster_id: cluster.cluster_id.clone(),
        name: state.name.clone(),
        raft_term: raft.current_term,
        raft_leader: raft.current_leader == Some(snapshot.me.0),
        lease_epoch: cluster.lease.map_or(cluster.last_epoch, |l| l.epoch).0,
        lease_holder: cluster.lease.is_some_and(|l| l.holder == snapshot.me),
        members: cluster.members.len(),
        replication_lag: health.replica_lag(),
        synchronous: health.synchronous,
        pg: health.pg,
        proxy: state.proxy_stats.as_ref().map(|s| s.snapshot()),
        vip_held: state.vip_handle.as_ref().map(crate::vip::Vip::is_held),
        names: cluster
            .members
            .values()
            .map(|m| (m.id, m.name.clone()))
            .collect(),
    };
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&input),
    )
        .into_response()
}

/// One member in `/cluster`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberReport {
    pub id: u64,
    pub name: String,
    pub peer_addr: String,
    pub api_addr: String,
    /// Where clients and replicas reach its PostgreSQL; empty for a witness.
    #[serde(default)]
    pub pg_addr: String,
    /// `leader`, `voter` or `learner` in Raft; `registered` if not (yet) in Raft membership.
    pub raft_role: String,
    pub lease_holder: bool,
    /// As `patronictl list`: `Leader` for the lease holder, `Replica`, `Sync Standby` or
    /// `Quorum Standby` (a recorded synchronous standby); `Primary (no lease)` for a writable
    /// PostgreSQL without the lease; empty for a witness.
    #[serde(default)]
    pub role: String,
    /// `running`, `streaming` (a replica receiving WAL), `stopped`, or `unknown` when the
    /// answering member has no fresh status of it; empty for a witness.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub timeline: Option<u32>,
    /// How far the member's received WAL is behind the lease holder's position, in MiB with
    /// one decimal (the measure `maximum_lag_on_failover` uses); null for the holder, a
    /// witness, or when a position is unknown.
    #[serde(default)]
    pub lag_mb: Option<f64>,
    #[serde(default)]
    pub pending_restart: bool,
    #[serde(default)]
    pub tags: Tags,
    /// The member's last HA sentence, saying what it does or waits for; empty when unknown.
    #[serde(default)]
    pub summary: String,
    /// Its interface carries the floating VIP (as of its last fresh status).
    #[serde(default)]
    pub vip: bool,
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
    /// The epoch of the current lease, or of the last one when it is free.
    #[serde(default)]
    pub lease_epoch: u64,
    /// Maintenance mode (`pgquorum pause`).
    #[serde(default)]
    pub paused: bool,
    /// A pending planned switchover.
    #[serde(default)]
    pub switchover: Option<crate::cluster::Switchover>,
    /// The VIP configured on the answering member (`address/prefix`), if any.
    #[serde(default)]
    pub vip: Option<String>,
    pub members: Vec<MemberReport>,
}

/// Role, state, timeline, lag and pending restart of `member` from its status `pg` (`None`:
/// no fresh status), against the holder's position `primary_position`.
fn describe_member(
    member: &Member,
    raft_role: &str,
    lease_holder: bool,
    pg: Option<&PgStatus>,
    primary_position: Option<Lsn>,
    synchronous: Option<SynchronousMode>,
) -> MemberReport {
    let (role, state) = match pg {
        _ if is_witness(member) => ("", ""),
        _ if lease_holder => ("Leader", pg_state(pg)),
        Some(pg) if pg.running && !pg.in_recovery => ("Primary (no lease)", "running"),
        _ => match synchronous {
            Some(SynchronousMode::Quorum) => ("Quorum Standby", pg_state(pg)),
            Some(_) => ("Sync Standby", pg_state(pg)),
            None => ("Replica", pg_state(pg)),
        },
    };
    let running = pg.filter(|pg| pg.running && !is_witness(member));
    let lag_mb = running
        .filter(|_| !lease_holder)
        .and_then(|pg| pg.lag_behind(pg.wal_position?, primary_position))
        .map(|bytes| (bytes as f64 / (1u64 << 20) as f64 * 10.0).round() / 10.0);
    MemberReport {
        id: member.id.0,
        name: member.name.clone(),
        peer_addr: member.peer_addr.clone(),
        api_addr: member.api_addr.clone(),
        pg_addr: member.pg_addr.clone(),
        raft_role: raft_role.into(),
        lease_holder,
        role: role.into(),
        state: state.into(),
        timeline: running.map(|pg| pg.timeline).filter(|tl| *tl != 0),
        lag_mb,
        pending_restart: running.is_some_and(|pg| pg.pending_restart),
        tags: member.tags.clone(),
        summary: String::new(),
        vip: false,
    }
}

fn pg_state(pg: Option<&PgStatus>) -> &'static str {
    match pg {
        None => "unknown",
        Some(pg) if !pg.running => "stopped",
        Some(pg) if pg.in_recovery && pg.streaming => "streaming",
        Some(_) => "running",
    }
}

async fn cluster(State(state): State<AppState>) -> Json<ClusterReport> {
    let metrics = state.handle.metrics();
    let snapshot = Snapshot::take(&state);
    let view = &snapshot.view;
    let membership = metrics.membership_config.membership();
    let synchronous = view.state.synchronous_members();
    let members = view
        .state
        .members
        .values()
        .map(|m| {
            let id = m.id.0;
            let raft_role = if metrics.current_leader == Some(id) {
                "leader"
            } else {
                MembershipRole::of(membership, id).as_str()
            };
            describe_member(
                m,
                raft_role,
                view.state.lease.as_ref().is_some_and(|l| l.holder == m.id),
                snapshot.statuses.get(&m.id),
                snapshot.primary_position,
                synchronous
                    .contains(&m.id)
                    .then_some(view.state.config.synchronous_mode),
            )
        })
        .map(|mut report| {
            report.summary = snapshot
                .summaries
                .get(&NodeId(report.id))
                .cloned()
                .unwrap_or_default();
            report.vip = snapshot
                .vips
                .get(&NodeId(report.id))
                .copied()
                .unwrap_or_default();
            report
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
        lease_epoch: view
            .state
            .lease
            .map_or(view.state.last_epoch, |l| l.epoch)
            .0,
        paused: view.state.paused,
        switchover: view.state.switchover.clone(),
        vip: state.vip.clone(),
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

/// The member named `name`, or 404 naming it.
fn member_named(view: &ClusterView, name: &str) -> Result<Member, ApiError> {
    view.state.member_by_name(name).cloned().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no member named {name:?}; see `pgquorum list`"),
        )
    })
}

/// `POST /admin/failover`: makes the named member take the lease as soon as it is vacant,
/// whatever lag or the synchronous set say (forced; acknowledged commits the lost primary
/// had may be lost). Refused while a healthy primary holds the lease: that is a switchover.
async fn request_failover(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<MemberRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let snapshot = Snapshot::take(&state);
    let name = request.member.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "a failover needs a candidate: `pgquorum failover --candidate <member>`".into(),
        )
    })?;
    let candidate = member_named(&snapshot.view, name)?;
    if let Some(lease) = snapshot.view.state.lease {
        let healthy = snapshot
            .statuses
            .get(&lease.holder)
            .is_some_and(|pg| pg.running && !pg.in_recovery);
        if healthy {
            let holder = snapshot
                .view
                .state
                .member(lease.holder)
                .map_or(lease.holder.to_string(), |m| m.name.clone());
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "{holder} is a healthy primary (lease epoch {}); a failover is for a cluster \
                     without one: use `pgquorum switchover --candidate {name}`",
                    lease.epoch
                ),
            ));
        }
    }
    let failover = crate::cluster::Failover { to: candidate.id };
    let result = state
        .handle
        .propose(Command::RequestFailover { failover })
        .await?;
    Ok(command_response(result))
}

/// An admin call that is one proposal: checks the token, proposes `command`, answers with
/// its result.
async fn propose_as_admin(
    state: &AppState,
    headers: &HeaderMap,
    command: Command,
) -> Result<Response, ApiError> {
    authorize(state, headers)?;
    Ok(command_response(state.handle.propose(command).await?))
}

/// `DELETE /admin/failover`: cancels a pending forced failover.
async fn cancel_failover(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::ClearFailover).await
}

/// `POST /admin/restart`: restarts PostgreSQL on the named member, or on every member.
async fn request_restart(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<MemberRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let view = state.handle.view().borrow().clone();
    let members: Vec<Member> = match request.member.as_deref() {
        Some(name) => vec![member_named(&view, name)?],
        None => view.state.members.values().cloned().collect(),
    };
    let mut result = CommandResult::Applied;
    for member in members.iter().filter(|m| !is_witness(m)) {
        let action = crate::cluster::MemberAction::Restart;
        result = state
            .handle
            .propose(Command::RequestAction {
                member: member.id,
                action,
            })
            .await?;
        if result.is_rejected() {
            break;
        }
    }
    Ok(command_response(result))
}

/// `POST /admin/reinit`: replaces the named replica's data directory with a fresh clone of
/// the primary. Refused for the lease holder and for a witness.
async fn request_reinit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<MemberRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let view = state.handle.view().borrow().clone();
    let name = request.member.as_deref().unwrap_or_default();
    let member = member_named(&view, name)?;
    if view.state.lease_holder() == Some(member.id) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "{name} is the primary; it is never re-initialised (switch over first with \
                 `pgquorum switchover`)"
            ),
        ));
    }
    if is_witness(&member) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{name} is a witness: it has no PostgreSQL to re-initialise"),
        ));
    }
    let action = crate::cluster::MemberAction::Reinit;
    let result = state
        .handle
        .propose(Command::RequestAction {
            member: member.id,
            action,
        })
        .await?;
    Ok(command_response(result))
}

/// `POST /admin/switchover`: asks the current primary to hand over, once the candidate has
/// caught up (planned: no acknowledged commit is lost).
async fn request_switchover(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<SwitchoverRequest>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let view = state.handle.view().borrow().clone();
    let lease = view.state.lease.ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            "no member holds the lease, so there is no primary to switch over from; use \
             failover instead"
                .into(),
        )
    })?;
    let to = match &request.candidate {
        Some(name) => Some(
            view.state
                .member_by_name(name)
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::NOT_FOUND,
                        format!("no member named {name:?}; see `pgquorum list`"),
                    )
                })?
                .id,
        ),
        None => None,
    };
    let at_unix_ms = match request.at.as_deref() {
        None => None,
        Some(text) => {
            let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "switchover time {text:?} is not a time ({e}); write it as RFC 3339, \
                         e.g. 2026-11-24T02:00:00Z"
                    ),
                )
            })?;
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            Some(ms)
        }
    };
    let switchover = crate::cluster::Switchover {
        from: lease.holder,
        to,
        at_unix_ms,
    };
    let result = state
        .handle
        .propose(Command::RequestSwitchover { switchover })
        .await?;
    Ok(command_response(result))
}

/// `GET /config`: the dynamic (cluster-wide) configuration, as committed.
async fn show_config(State(state): State<AppState>) -> Json<crate::cluster::DynamicConfig> {
    Json(state.handle.view().borrow().state.config.clone())
}

/// `PATCH /config` (admin): merges the given keys into the dynamic configuration; the
/// result is validated when applied, and a rejection names the key and the fix.
async fn patch_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let current = state.handle.view().borrow().state.config.clone();
    let mut merged = serde_json::to_value(&current)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Merged one level deep, so `{"postgresql_parameters": {"work_mem": "64MB"}}` adds one
    // parameter; a null value removes a parameter.
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
    let config: crate::cluster::DynamicConfig = serde_json::from_value(merged).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid configuration: {e}"),
        )
    })?;
    let result = state.handle.propose(Command::SetConfig { config }).await?;
    Ok(command_response(result))
}

/// `PUT /config` (admin): replaces the whole dynamic configuration (what `config edit`
/// sends); validated when applied.
async fn replace_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(config): Json<crate::cluster::DynamicConfig>,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::SetConfig { config }).await
}

/// `POST /admin/pause`: maintenance mode on; no automatic action until `resume`.
async fn pause(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::SetPaused { paused: true }).await
}

/// `POST /admin/resume`: maintenance mode off.
async fn resume(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::SetPaused { paused: false }).await
}

/// `DELETE /admin/switchover`: cancels a pending switchover.
async fn cancel_switchover(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    propose_as_admin(&state, &headers, Command::ClearSwitchover).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pg_addr: &str) -> Member {
        Member {
            id: NodeId(2),
            name: "n2".into(),
            peer_addr: "10.0.0.2:7400".into(),
            api_addr: "10.0.0.2:8008".into(),
            pg_addr: pg_addr.into(),
            tags: Tags::default(),
        }
    }

    fn pg(in_recovery: bool, streaming: bool, position: u64) -> PgStatus {
        PgStatus {
            running: true,
            in_recovery,
            timeline: 1,
            wal_position: Some(Lsn(position)),
            replayed: in_recovery.then_some(Lsn(position)),
            streaming,
            pending_restart: false,
            replay_delay_ms: None,
            // Its primary has told it of more WAL than any test's holder position.
            primary_end: (in_recovery && streaming).then_some(Lsn(u64::MAX)),
        }
    }

    #[test]
    fn members_are_described_as_patronictl_list_does() {
        const MB: u64 = 1 << 20;
        let primary = Some(Lsn(100 * MB));
        let stopped = PgStatus::default();
        let restart = PgStatus {
            pending_restart: true,
            replay_delay_ms: None,
            ..pg(true, true, 100 * MB)
        };
        /// role, state, timeline, lag_mb, pending_restart
        type Row<'a> = (&'a str, &'a str, Option<u32>, Option<f64>, bool);
        /// name, pg_addr, lease holder, status, holder's position, expected
        type Case<'a> = (
            &'a str,
            &'a str,
            bool,
            Option<PgStatus>,
            Option<Lsn>,
            Row<'a>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("holder, writable", "pg:5432", true, Some(pg(false, false, 100 * MB)), primary, ("Leader", "running", Some(1), None, false)),
            ("holder, crashed", "pg:5432", true, Some(stopped.clone()), None, ("Leader", "stopped", None, None, false)),
            ("holder, no status", "pg:5432", true, None, None, ("Leader", "unknown", None, None, false)),
            ("streaming replica", "pg:5432", false, Some(pg(true, true, 100 * MB)), primary, ("Replica", "streaming", Some(1), Some(0.0), false)),
            ("replica 2.5 MB behind", "pg:5432", false, Some(pg(true, true, 97 * MB + MB / 2)), primary, ("Replica", "streaming", Some(1), Some(2.5), false)),
            ("replica not streaming", "pg:5432", false, Some(pg(true, false, 100 * MB)), primary, ("Replica", "running", Some(1), Some(0.0), false)),
            ("replica just connected, nothing heard", "pg:5432", false, Some(PgStatus { primary_end: None, ..pg(true, true, 80 * MB) }), Some(Lsn(96 * MB)), ("Replica", "streaming", Some(1), None, false)),
            ("holder sampled after a segment switch", "pg:5432", false, Some(PgStatus { primary_end: Some(Lsn(80 * MB)), ..pg(true, true, 80 * MB) }), Some(Lsn(96 * MB)), ("Replica", "streaming", Some(1), Some(0.0), false)),
            ("replica, holder unknown", "pg:5432", false, Some(pg(true, true, 100 * MB)), None, ("Replica", "streaming", Some(1), None, false)),
            ("replica needing a restart", "pg:5432", false, Some(restart.clone()), primary, ("Replica", "streaming", Some(1), Some(0.0), true)),
            ("stopped replica", "pg:5432", false, Some(stopped.clone()), primary, ("Replica", "stopped", None, None, false)),
            ("silent member", "pg:5432", false, None, primary, ("Replica", "unknown", None, None, false)),
            ("writable without the lease", "pg:5432", false, Some(pg(false, false, 100 * MB)), primary, ("Primary (no lease)", "running", Some(1), None, false)),
            ("witness", "", false, None, primary, ("", "", None, None, false)),
            ("witness holding the lease", "", true, None, primary, ("", "", None, None, false)),
        ];
        for (name, pg_addr, holder, status, position, want) in cases {
            let m = describe_member(
                &member(pg_addr),
                "voter",
                holder,
                status.as_ref(),
                position,
                None,
            );
            let got = (
                m.role.as_str(),
                m.state.as_str(),
                m.timeline,
                m.lag_mb,
                m.pending_restart,
            );
            assert_eq!(got, want, "{name}");
        }
    }
}
