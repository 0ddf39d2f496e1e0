//! The status exchange (DESIGN §2): fast-changing status — PostgreSQL role, WAL positions —
//! is not written to Raft. Each member serves its own status over the peer port (mTLS,
//! members only) and polls every other member every `loop_wait`, keeping the answers that
//! arrived within `member_timeout` on a watch channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cluster::NodeId;
use crate::ha::PeerStatus;
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

/// Peer statuses by member.
pub type PeerStatuses = BTreeMap<NodeId, PeerReport>;

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
        Ok(Response::new(pb::StatusReply { status, age_us }))
    }
}

/// How often the lease holder is polled while it is not yet seen as a writable primary.
const TRANSITION_POLL: Duration = Duration::from_millis(25);

/// Polls every other member's status every `loop_wait` until `shutdown`; returns the
/// receiver of the collected statuses. Members that do not answer within `member_timeout`
/// keep their last answer with its old timestamp, so readers judge freshness themselves.
pub fn spawn_poller(
    handle: RaftHandle,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<PeerStatuses>> {
    let (tx, rx) = watch::channel(Arc::new(PeerStatuses::new()));
    tokio::spawn(async move {
        let mut statuses = PeerStatuses::new();
        loop {
            let view = handle.view().borrow().clone();
            let config = &view.state.config;
            let me = NodeId(handle.id());
            let polls = view
                .state
                .members
                .values()
                .filter(|m| m.id != me)
                .map(|member| {
                    let mut client = pb::status_client::StatusClient::new(
                        handle.peers().channel(member.id.0, &member.peer_addr),
                    );
                    let id = member.id;
                    let timeout = config.member_timeout;
                    async move {
                        let mut request = Request::new(pb::StatusRequest {});
                        request.set_timeout(timeout);
                        let asked = Instant::now();
                        let reply = tokio::time::timeout(timeout, client.get(request)).await;
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
                        (id, status)
                    }
                });
            // Each answer is published as it arrives: a member that does not answer (a host cut
            // off) must not delay the others' statuses by member_timeout.
            let mut polls: futures_util::stream::FuturesUnordered<_> = polls.collect();
            while let Some((id, status)) = polls.next().await {
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
            statuses.retain(|id, _| view.state.members.contains_key(id));
            tx.send_replace(Arc::new(statuses.clone()));
            // Poll again after loop_wait, or at once when the lease changes hands or the
            // database is recorded: members act on the new primary's status.
            let mut changes = handle.view();
            let key = |v: &crate::raft::ClusterView| {
                (v.state.lease.map(|l| (l.holder, l.epoch)), v.state.database)
            };
            let seen = key(&view);
            // While another member holds the lease but is not yet seen as a writable primary
            // (it is promoting), poll it often: proxies route writers, and replicas follow,
            // as soon as its status says so, not a loop_wait later.
            let promoting = view.state.lease.is_some_and(|lease| {
                lease.holder != me
                    && !statuses
                        .get(&lease.holder)
                        .is_some_and(|r| r.status.pg.running && !r.status.pg.in_recovery)
            });
            let next_poll = if promoting {
                TRANSITION_POLL.min(config.loop_wait)
            } else {
                config.loop_wait
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(next_poll) => {}
                _ = async {
                    while changes.changed().await.is_ok() {
                        if key(&changes.borrow_and_update()) != seen {
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
