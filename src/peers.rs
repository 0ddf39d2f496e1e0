//! The status exchange (DESIGN §2): fast-changing status — PostgreSQL role, WAL positions —
//! is not written to Raft. Each member serves its own status over the peer port (mTLS,
//! members only) and polls every other member every `loop_wait`, keeping the answers that
//! arrived within `member_timeout` on a watch channel.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cluster::NodeId;
use crate::ha::PeerStatus;
use crate::raft::proto::pb;
use crate::raft::RaftHandle;

/// Peer statuses with the instant each answer arrived.
pub type PeerStatuses = BTreeMap<NodeId, (PeerStatus, Instant)>;

/// The gRPC side: answers with this member's latest status.
pub struct StatusService {
    handle: RaftHandle,
    local: watch::Receiver<Option<PeerStatus>>,
}

impl StatusService {
    /// The service, ready to be added to the peer server's routes.
    pub fn routes(
        handle: RaftHandle,
        local: watch::Receiver<Option<PeerStatus>>,
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
        let status = match self.local.borrow().as_ref() {
            Some(status) => {
                serde_json::to_vec(status).map_err(|e| Status::internal(e.to_string()))?
            }
            None => Vec::new(),
        };
        Ok(Response::new(pb::StatusReply { status }))
    }
}

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
                        let reply = tokio::time::timeout(timeout, client.get(request)).await;
                        let status = match reply {
                            Ok(Ok(reply)) if !reply.get_ref().status.is_empty() => {
                                serde_json::from_slice::<PeerStatus>(&reply.into_inner().status)
                                    .ok()
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
            let results = futures_util::future::join_all(polls).await;
            let now = Instant::now();
            for (id, status) in results {
                if let Some(status) = status {
                    statuses.insert(id, (status, now));
                }
            }
            statuses.retain(|id, _| view.state.members.contains_key(id));
            tx.send_replace(Arc::new(statuses.clone()));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.loop_wait) => {}
            }
        }
    });
    rx
}
