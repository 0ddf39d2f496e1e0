//! The read-only handlers: `/liveness`, the health checks, `/metrics` and `/cluster`, each
//! answered from one [`Snapshot`] of this member's committed view and the statuses it knows.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::state::AppState;
use super::{health, metrics};
use crate::cluster::{Lease, Member, NodeId, SynchronousMode, Tags};
use crate::postgres::{Lsn, PgRole, PgStatus};
use crate::raft::{ClusterView, MembershipRole};

/// `GET /liveness`: 200 while the Raft core runs, 503 once it has stopped for good.
pub(super) async fn liveness(State(state): State<AppState>) -> Response {
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
pub(super) struct Snapshot {
    pub(super) me: NodeId,
    pub(super) view: Arc<ClusterView>,
    /// Every member's PostgreSQL status known now (see [`crate::peers::PeerStatuses::known_statuses`]).
    pub(super) statuses: BTreeMap<NodeId, PgStatus>,
    /// The lease holder's WAL position, if it is a running primary with a fresh status.
    pub(super) primary_position: Option<Lsn>,
    /// Each member's last HA sentence, from fresh statuses.
    pub(super) summaries: BTreeMap<NodeId, String>,
    /// Whether each member's interface carries the VIP, from fresh statuses.
    pub(super) vips: BTreeMap<NodeId, bool>,
}

impl Snapshot {
    pub(super) fn take(state: &AppState) -> Snapshot {
        let me = NodeId(state.handle.id());
        let view = state.handle.view().borrow().clone();
        let local = state.local_status.borrow().as_ref().map(|(s, _)| s.clone());
        let peers = state.peer_statuses.borrow().clone();
        let (horizon, now) = (view.state.config.status_horizon(), Instant::now());
        let statuses = peers.known_statuses(local.as_ref(), horizon, now);
        let summaries = peers.known(local.as_ref(), horizon, now, |s| s.summary.clone());
        let vips = peers.known(local.as_ref(), horizon, now, |s| s.vip);
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

    pub(super) fn health_input(&self, name: &str) -> health::HealthInput {
        let member = self.view.state.member(self.me);
        health::HealthInput {
            me: self.me,
            name: name.to_string(),
            witness: member.is_some_and(Member::is_witness),
            pg: self.statuses.get(&self.me).cloned(),
            lease: self.view.state.lease,
            tags: member.map(|m| m.tags.clone()).unwrap_or_default(),
            primary_position: self.primary_position,
            maximum_lag_on_failover: self.view.state.config.maximum_lag_on_failover,
            synchronous: self.view.state.synchronous_members().contains(&self.me),
        }
    }
}

/// The route of one health check: GET answers the status code and the status document,
/// HEAD (axum drops the body) and OPTIONS the status code only, as HAProxy's
/// `option httpchk OPTIONS /primary` expects.
pub(super) fn health_route(endpoint: health::Endpoint) -> MethodRouter<AppState> {
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
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = Snapshot::take(&state);
    let raft = state.handle.metrics();
    let health = snapshot.health_input(&state.name);
    let cluster = &snapshot.view.state;
    let archiver = (health.pg.as_ref())
        .filter(|pg| pg.is_writable())
        .and_then(|pg| pg.archive);
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
        pools: state.pools.as_ref().map(|p| p.report()),
        vip_held: state.vip_handle.as_ref().map(crate::vip::Vip::is_held),
        names: cluster
            .members
            .values()
            .map(|m| (m.id, m.name.clone()))
            .collect(),
        certificates: state.expiries.unix_seconds(),
        ca_rotation: cluster.ca_rotation.is_some(),
        backup: cluster
            .config
            .backup
            .as_ref()
            .map(|_| metrics::BackupMetrics {
                archiver,
                last_success_unix: cluster.last_good_backup.as_ref().map(|b| b.finished_unix),
                running: cluster.backup_job.as_ref().is_some_and(|j| !j.verify),
                last_verify: (cluster.last_verify.as_ref()).map(|v| (v.ok, v.finished_unix)),
            }),
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
    /// During a CA rotation (`pgquorum ca rotate`), the members still to move to the new CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation_waiting: Option<Vec<String>>,
    /// What an operator should look at (failing WAL archiving, a failed backup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
        _ if member.is_witness() => ("", ""),
        _ if lease_holder => ("Leader", pg_state(pg)),
        Some(pg) if pg.is_writable() => ("Primary (no lease)", "running"),
        _ => match synchronous {
            Some(SynchronousMode::Quorum) => ("Quorum Standby", pg_state(pg)),
            Some(_) => ("Sync Standby", pg_state(pg)),
            None => ("Replica", pg_state(pg)),
        },
    };
    let running = pg.filter(|pg| pg.running && !member.is_witness());
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
    match pg.map(|pg| (pg.role(), pg.streaming)) {
        None => "unknown",
        Some((PgRole::Stopped, _)) => "stopped",
        Some((PgRole::Replica, true)) => "streaming",
        Some(_) => "running",
    }
}

pub(super) async fn cluster(State(state): State<AppState>) -> Json<ClusterReport> {
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
        ca_rotation_waiting: (view.state.ca_rotation.as_ref())
            .map(|_| crate::ca_rotation::status(&state.authority, &view.state).waiting),
        warnings: crate::backup::warnings(&view.state, &snapshot.statuses),
        members,
    })
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
            archive: None,
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
