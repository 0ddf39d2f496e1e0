//! The status exchange (DESIGN §2): fast-changing status — PostgreSQL role, WAL positions —
//! is not written to Raft. Each member serves its own status over the peer port (mTLS,
//! members only) and polls every other member every `loop_wait`, keeping the answers that
//! arrived within `member_timeout` on a watch channel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cluster::NodeId;
use crate::postgres::{DataDir, PgStatus};
use crate::raft::proto::pb;
use crate::raft::RaftHandle;

/// One peer's latest answer.
#[derive(Debug, Clone)]
pub struct PeerReport {
    pub status: PeerStatus,
    /// When the answer arrived.
    pub received: Instant,
    /// No later than when the peer took the status, on our clock: when we asked, minus the
    /// age the peer reported. A failover in synchronous mode trusts only statuses taken after
    /// the old primary stopped being writable.
    pub taken: Instant,
}

/// What one member reports of itself through the peer status exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node_id: NodeId,
    pub pg: PgStatus,
    pub data_dir: DataDir,
    /// The node this member's PostgreSQL streams from, if it is a replica.
    pub following: Option<NodeId>,
    /// The member's last HA sentence ("n2: replica of n1, streaming, 0 B behind"): what
    /// `list` shows to say why nothing happens.
    #[serde(default)]
    pub summary: String,
    /// Its `pre_promote` hook refused a promotion lately: it stands aside.
    #[serde(default)]
    pub pre_promote_refused: bool,
    /// Its interface carries the floating VIP.
    #[serde(default)]
    pub vip: bool,
    /// Its pgBackRest server, while one runs (see `crate::backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backrest: Option<crate::postgres::BackrestEndpoint>,
}

/// Peer statuses by member: each peer's latest answer, however old.
#[derive(Debug, Clone, Default)]
pub struct PeerStatuses {
    reports: BTreeMap<NodeId, PeerReport>,
    /// Each member's [`crate::cluster::COMMAND_LEVEL`] as its last answer gave it (0 from
    /// binaries older than the field); kept apart from the reports because a member with no
    /// status of its own yet (a witness) still answers with it.
    levels: BTreeMap<NodeId, u32>,
}

impl PeerStatuses {
    pub fn new() -> Self {
        Self::default()
    }

    /// The answers received within `horizon` of `now` (`member_timeout + loop_wait`, see
    /// `DynamicConfig::status_horizon`); older ones count as unknown. The one freshness
    /// rule of the HA loop, the health checks and the proxy.
    pub fn fresh(
        &self,
        horizon: Duration,
        now: Instant,
    ) -> impl Iterator<Item = (NodeId, &PeerReport)> {
        self.reports
            .iter()
            .filter(move |(_, report)| now.saturating_duration_since(report.received) <= horizon)
            .map(|(id, report)| (*id, report))
    }

    /// `part` of every member's status as this member knows it at `now`: its own
    /// (`local`), and the others' [`fresh`](Self::fresh) ones.
    pub fn known<T>(
        &self,
        local: Option<&PeerStatus>,
        horizon: Duration,
        now: Instant,
        part: impl Fn(&PeerStatus) -> T,
    ) -> BTreeMap<NodeId, T> {
        self.fresh(horizon, now)
            .map(|(id, report)| (id, part(&report.status)))
            .chain(local.map(|s| (s.node_id, part(s))))
            .collect()
    }

    /// Every member's PostgreSQL status as this member knows it at `now` (see
    /// [`known`](Self::known)).
    pub fn known_statuses(
        &self,
        local: Option<&PeerStatus>,
        horizon: Duration,
        now: Instant,
    ) -> BTreeMap<NodeId, PgStatus> {
        self.known(local, horizon, now, |s| s.pg.clone())
    }
}

impl PeerStatuses {
    /// Whether every member of `ids` has answered (at any time) from a binary that applies
    /// commands of `level` ([`crate::cluster::Command::level`]); one that never answered
    /// has not.
    pub fn all_at_command_level(&self, ids: &[NodeId], level: u32) -> bool {
        ids.iter()
            .all(|id| self.levels.get(id).is_some_and(|l| *l >= level))
    }

    /// Whether every member of `state` but `me` has answered from a binary that can apply
    /// `command` ([`crate::cluster::Command::level`]); always for a command of level 0.
    pub fn all_can_apply(
        &self,
        state: &crate::cluster::ClusterState,
        me: NodeId,
        command: &crate::cluster::Command,
    ) -> bool {
        let others: Vec<NodeId> = (state.members.keys().copied())
            .filter(|id| *id != me)
            .collect();
        command.level() == 0 || self.all_at_command_level(&others, command.level())
    }

    /// Records the command level member `id` answered with.
    pub fn set_level(&mut self, id: NodeId, level: u32) {
        self.levels.insert(id, level);
    }
}

impl std::ops::Deref for PeerStatuses {
    type Target = BTreeMap<NodeId, PeerReport>;
    fn deref(&self) -> &Self::Target {
        &self.reports
    }
}

impl std::ops::DerefMut for PeerStatuses {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.reports
    }
}

impl FromIterator<(NodeId, PeerReport)> for PeerStatuses {
    fn from_iter<I: IntoIterator<Item = (NodeId, PeerReport)>>(iter: I) -> Self {
        Self {
            reports: iter.into_iter().collect(),
            levels: BTreeMap::new(),
        }
    }
}

/// This member's own latest status and when it was taken, as the HA loop publishes it.
pub type LocalStatus = Option<(PeerStatus, Instant)>;

/// The gRPC side: answers with this member's latest status.
pub struct StatusService {
    handle: RaftHandle,
    local: watch::Receiver<LocalStatus>,
}

impl StatusService {
    /// The service, ready to be added to the peer server's routes.
    pub fn routes(
        handle: RaftHandle,
        local: watch::Receiver<LocalStatus>,
    ) -> tonic::service::Routes {
        tonic::service::Routes::new(pb::status_server::StatusServer::new(Self { handle, local }))
    }
}

#[tonic::async_trait]
impl pb::status_server::Status for StatusService {
    async fn get(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        crate::raft::service::authorize_member(&self.handle, &request)?;
        let (status, age) = match self.local.borrow().as_ref() {
            Some((status, taken)) => (
                serde_json::to_vec(status).map_err(|e| Status::internal(e.to_string()))?,
                taken.elapsed(),
            ),
            None => (Vec::new(), Duration::ZERO),
        };
        let age_us = u64::try_from(age.as_micros()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::StatusReply {
            status,
            age_us,
            command_level: crate::cluster::COMMAND_LEVEL,
        }))
    }
}

/// How often the lease holder is polled while it is not yet seen as a writable primary.
const TRANSITION_POLL: Duration = Duration::from_millis(25);

/// Polls every other member's status every `loop_wait` until `shutdown`; returns the
/// receiver of the collected statuses. Members that do not answer within `member_timeout`
/// keep their last answer with its old timestamp, so readers judge freshness themselves.
///
/// Each member has at most one poll in flight, and a new round does not wait for the last
/// one's stragglers: a member that does not answer (a host cut off, whose poll runs to
/// `member_timeout`) must not stretch the interval between the answers of those that do.
/// It did once: with the old primary cut off, a replica's answers came
/// `member_timeout + loop_wait` apart, exactly the age at which an answer stops counting, so
/// for a moment that replica was not seen at all and a less advanced one took over.
pub fn spawn_poller(
    handle: RaftHandle,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<PeerStatuses>> {
    let (tx, rx) = watch::channel(Arc::new(PeerStatuses::new()));
    tokio::spawn(async move {
        let me = NodeId(handle.id());
        let mut statuses = PeerStatuses::new();
        let mut in_flight = FuturesUnordered::new();
        // Members with a poll in flight, and when each member was last asked.
        let mut asking: BTreeSet<NodeId> = BTreeSet::new();
        let mut asked: BTreeMap<NodeId, Instant> = BTreeMap::new();
        let mut seen: Option<TenureKey> = None;
        loop {
            let view = handle.view().borrow().clone();
            let config = &view.state.config;
            // Everyone is due at once when the lease changes hands or the database is
            // recorded: members act on the new primary's status.
            let key = tenure_key(&view);
            if seen.as_ref() != Some(&key) {
                seen = Some(key);
                asked.clear();
            }
            let before = statuses.len();
            statuses.retain(|id, _| view.state.members.contains_key(id));
            statuses
                .levels
                .retain(|id, _| view.state.members.contains_key(id));
            asked.retain(|id, _| view.state.members.contains_key(id));
            if statuses.len() != before {
                tx.send_replace(Arc::new(statuses.clone()));
            }
            // While another member holds the lease but is not yet seen as a writable primary
            // (it is promoting), it is polled often: proxies route writers, and replicas
            // follow, as soon as its status says so, not a loop_wait later.
            let promoting_holder = view.state.lease.map(|l| l.holder).filter(|holder| {
                *holder != me
                    && !statuses
                        .get(holder)
                        .is_some_and(|r| r.status.pg.is_writable())
            });
            let interval = |id: NodeId| {
                if Some(id) == promoting_holder {
                    TRANSITION_POLL.min(config.loop_wait)
                } else {
                    config.loop_wait
                }
            };
            let now = Instant::now();
            let mut next = now + config.loop_wait;
            for member in view.state.members.values() {
                if member.id == me || asking.contains(&member.id) {
                    continue;
                }
                let due = asked
                    .get(&member.id)
                    .map_or(now, |at| *at + interval(member.id));
                if due > now {
                    next = next.min(due);
                    continue;
                }
                let client = pb::status_client::StatusClient::new(
                    handle.peers().channel(member.id.0, &member.peer_addr),
                );
                in_flight.push(poll(client, member.id, config.member_timeout));
                asking.insert(member.id);
                asked.insert(member.id, now);
            }
            let mut changes = handle.view();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some((id, status, level)) = in_flight.next(), if !in_flight.is_empty() => {
                    asking.remove(&id);
                    if let Some(level) = level.filter(|l| statuses.levels.get(&id) != Some(l)) {
                        statuses.set_level(id, level);
                        tx.send_replace(Arc::new(statuses.clone()));
                    }
                    if let Some((status, taken)) = status {
                        let report = PeerReport {
                            status,
                            received: Instant::now(),
                            taken,
                        };
                        statuses.insert(id, report);
                        tx.send_replace(Arc::new(statuses.clone()));
                    }
                }
                _ = tokio::time::sleep_until(next) => {}
                _ = async {
                    while changes.changed().await.is_ok() {
                        if tenure_key(&changes.borrow_and_update()) != key {
                            return;
                        }
                    }
                    std::future::pending::<()>().await
                } => {}
            }
        }
    });
    rx
}

/// What makes the poller start a round at once when it changes: the lease's holder and
/// epoch, and the recorded database.
type TenureKey = (Option<(NodeId, crate::cluster::Epoch)>, Option<u64>);

fn tenure_key(view: &crate::raft::ClusterView) -> TenureKey {
    (
        view.state.lease.map(|l| (l.holder, l.epoch)),
        view.state.database,
    )
}

/// One status poll of member `id`, within `timeout`: its status and when it took it (on our
/// clock), or `None` if it did not answer or has no status yet; and its command level, if it
/// answered.
async fn poll(
    mut client: pb::status_client::StatusClient<tonic::transport::Channel>,
    id: NodeId,
    timeout: Duration,
) -> (NodeId, Option<(PeerStatus, Instant)>, Option<u32>) {
    let mut request = Request::new(pb::StatusRequest {});
    request.set_timeout(timeout);
    let asked = Instant::now();
    let reply = tokio::time::timeout(timeout, client.get(request)).await;
    let level = match &reply {
        Ok(Ok(reply)) => Some(reply.get_ref().command_level),
        _ => None,
    };
    let status = match reply {
        Ok(Ok(reply)) if !reply.get_ref().status.is_empty() => {
            let reply = reply.into_inner();
            let age = Duration::from_micros(reply.age_us);
            serde_json::from_slice::<PeerStatus>(&reply.status)
                .ok()
                .and_then(|status| Some((status, asked.checked_sub(age)?)))
        }
        Ok(Err(status)) => {
            tracing::debug!(node = %id, %status, "status poll failed");
            None
        }
        _ => None,
    };
    (id, status, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_level_counts_only_when_every_member_reported_it() {
        let mut statuses = PeerStatuses::new();
        statuses.set_level(NodeId(2), 1);
        statuses.set_level(NodeId(3), 0);
        let cases: [(&str, &[u64], bool); 5] = [
            ("no other member", &[], true),
            ("one at the level", &[2], true),
            ("one from an older binary (0)", &[2, 3], false),
            ("one that never answered", &[2, 4], false),
            ("only the older one", &[3], false),
        ];
        for (case, ids, expected) in cases {
            let ids: Vec<NodeId> = ids.iter().copied().map(NodeId).collect();
            assert_eq!(statuses.all_at_command_level(&ids, 1), expected, "{case}");
        }
    }
}
