//! The peer gRPC server: Raft RPCs and the peer service (join, add voter, propose, remove),
//! behind mutual TLS.
//!
//! Every TLS connection is accepted with an optional client certificate, because a joining
//! host has none yet. Each handler then decides: Raft RPCs and the peer calls other than
//! `Join` require a certificate of this cluster's CA naming a current member; `Join` requires
//! a valid join token instead.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::InstallSnapshotError;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::proto::pb;
use super::{Error, NodeId, RaftHandle, RaftNode, TypeConfig};
use crate::cluster::{Command, CommandResult, Rejection, Tags};
use crate::secret::Secret;
use crate::tls;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many connections the peer port keeps open at once, handshakes included (see
/// [`crate::accept`]): far more than members and joiners need, far fewer than the file
/// descriptors a member has.
const MAX_PEER_CONNECTIONS: usize = 512;
/// How long adding a learner may wait for it to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a handler knows about the connection a call arrived on.
#[derive(Debug, Clone)]
pub struct PeerConnInfo {
    pub remote: SocketAddr,
    /// The client's leaf certificate, already verified against the cluster CA by rustls.
    pub cert: Option<CertificateDer<'static>>,
}

/// An accepted TLS connection that tells tonic who is on the other end.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    info: PeerConnInfo,
    /// Counts this connection against [`MAX_PEER_CONNECTIONS`] until it closes.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerConnInfo;
    fn connect_info(&self) -> PeerConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener`, runs the TLS handshake of each in its own task, and
/// yields the established ones. Failed handshakes (plain text, a foreign CA, garbage) are
/// logged at debug and dropped: they are the peer's problem, not ours.
fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<PeerStream, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut gate = crate::accept::Gate::new(listener, MAX_PEER_CONNECTIONS, "peer");
    tokio::spawn(async move {
        loop {
            let crate::accept::Admitted {
                tcp,
                remote,
                permit,
            } = tokio::select! {
                _ = shutdown.cancelled() => return,
                admitted = gate.accept() => admitted,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|c| c.clone().into_owned());
                        let info = PeerConnInfo { remote, cert };
                        let stream = PeerStream {
                            inner: tls,
                            info,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "peer TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%remote, "peer TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves the Raft and peer services on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls_config: Arc<rustls::ServerConfig>,
    handle: RaftHandle,
    ca: Arc<tls::Authority>,
    secrets: ClusterSecrets,
    extra: tonic::service::Routes,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = accept_tls(listener, TlsAcceptor::from(tls_config), shutdown.clone());
    let raft = RaftService {
        handle: handle.clone(),
    };
    let peer = PeerService {
        handle,
        ca,
        secrets,
    };
    tonic::transport::Server::builder()
        .add_routes(extra)
        .add_service(
            pb::raft_server::RaftServer::new(raft).max_decoding_message_size(16 * 1024 * 1024),
        )
        .add_service(pb::peer_server::PeerServer::new(peer))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// The member id of the caller, if it presented a certificate of this cluster naming a
/// current member. A node whose state is still empty (it is joining and has not yet received
/// the log) accepts any certificate of its cluster's CA, or it could never learn the log.
pub(crate) fn authorize_member<T>(
    handle: &RaftHandle,
    request: &Request<T>,
) -> Result<NodeId, Status> {
    let info = request
        .extensions()
        .get::<PeerConnInfo>()
        .ok_or_else(|| Status::internal("connection info missing"))?;
    let cert = info.cert.as_ref().ok_or_else(|| {
        Status::unauthenticated("a client certificate of this cluster is required")
    })?;
    let cluster_id = handle.peers().cluster_id();
    let id = tls::node_id_from_cert_der(cert.as_ref(), cluster_id).ok_or_else(|| {
        Status::permission_denied("client certificate does not name a node of this cluster")
    })?;
    let view = handle.view();
    let state = &view.borrow().state;
    if state.is_bootstrapped() && state.member(id.into()).is_none() {
        return Err(Status::permission_denied(format!(
            "node {id} is not a member of this cluster"
        )));
    }
    // The member's pinned key, not just a CA signature on its id: a certificate minted with
    // the CA key for this id (another key) is refused.
    if let Some(keys) = state.accepted_keys(id.into()) {
        if !tls::key_sha256_of_cert_der(cert.as_ref()).is_some_and(|key| keys.contains(&key)) {
            return Err(Status::permission_denied(format!(
                "the certificate presented for node {id} is not for the key the cluster \
                 recorded for that member (a certificate minted for its id, or one it no longer \
                 uses); refused"
            )));
        }
    }
    Ok(id)
}

fn decode_request<T: DeserializeOwned>(
    handle: &RaftHandle,
    request: pb::RaftRequest,
) -> Result<T, Status> {
    if request.cluster_id != handle.peers().cluster_id() {
        return Err(Status::permission_denied(format!(
            "call for cluster {} refused by a member of cluster {}",
            request.cluster_id,
            handle.peers().cluster_id()
        )));
    }
    serde_json::from_slice(&request.payload)
        .map_err(|e| Status::invalid_argument(format!("malformed raft request: {e}")))
}

fn encode_reply<T: Serialize>(value: &T) -> Result<Response<pb::RaftReply>, Status> {
    let payload = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::RaftReply { payload }))
}

struct RaftService {
    handle: RaftHandle,
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        authorize_member(&self.handle, &request)?;
        let req: AppendEntriesRequest<TypeConfig> =
            decode_request(&self.handle, request.into_inner())?;
        let result = self.handle.raft().append_entries(req).await;
        encode_reply(&result)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        authorize_member(&self.handle, &request)?;
        let req: VoteRequest<NodeId> = decode_request(&self.handle, request.into_inner())?;
        let result = self.handle.raft().vote(req).await;
        encode_reply(&result)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        authorize_member(&self.handle, &request)?;
        let req: InstallSnapshotRequest<TypeConfig> =
            decode_request(&self.handle, request.into_inner())?;
        let result: Result<_, RaftError<NodeId, InstallSnapshotError>> =
            self.handle.raft().install_snapshot(req).await;
        encode_reply(&result)
    }
}

/// Secrets every member holds and a joining member receives with its certificate.
#[derive(Clone)]
pub struct ClusterSecrets {
    /// The password of PostgreSQL's replication role.
    pub replication_password: Secret<String>,
    /// The password of its rewind role (the replication one in a cluster made before the
    /// rewind role had its own).
    pub rewind_password: Secret<String>,
}

struct PeerService {
    handle: RaftHandle,
    ca: Arc<tls::Authority>,
    secrets: ClusterSecrets,
}

/// The status for "ask the leader instead", with where the leader is.
fn not_leader(handle: &RaftHandle) -> Status {
    let mut status = Status::failed_precondition("this member is not the raft leader");
    if let Some((id, node)) = handle.leader() {
        if let (Ok(id), Ok(addr)) = (id.to_string().parse(), node.peer_addr.parse()) {
            status.metadata_mut().insert("pgquorum-leader-id", id);
            status.metadata_mut().insert("pgquorum-leader-addr", addr);
        }
    }
    status
}

fn status_from(handle: &RaftHandle, error: Error) -> Status {
    match error {
        Error::NotLeader { .. } => not_leader(handle),
        Error::NotCommitted { .. } | Error::NoLeader { .. } => {
            Status::deadline_exceeded(error.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

/// How long a join waits for a just-started member's cluster state.
const STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinReply>, Status> {
        let remote = request.extensions().get::<PeerConnInfo>().map(|i| i.remote);
        let req = request.into_inner();
        if req.name.is_empty() || req.peer_addr.is_empty() {
            return Err(Status::invalid_argument(
                "join needs a member name and a peer address",
            ));
        }
        // A first member that has just started is still committing its bootstrap record
        // (itself and the init token): a join that arrives then waits for it, instead of
        // being told the token is unknown.
        let mut views = self.handle.view();
        let loaded = tokio::time::timeout(STARTING_WAIT, async {
            let view = views.wait_for(|v| !v.state.members.is_empty()).await;
            view.map(|view| view.clone())
        })
        .await;
        let view = match loaded {
            Ok(Ok(view)) => view,
            _ => {
                return Err(Status::unavailable(
                    "this member is still starting (its cluster state is not loaded yet); \
                     retry the join in a few seconds",
                ))
            }
        };
        // One answer for an unknown token id and a wrong secret: the peer port is open to
        // anyone, and telling the two apart would confirm which ids exist.
        let token = view
            .state
            .tokens
            .get(&req.token_id)
            .filter(|token| tls::secret_matches(&req.token_secret, &token.secret_sha256))
            .ok_or_else(|| {
                tracing::warn!(?remote, token = %req.token_id, "join refused: unknown token or wrong secret");
                let refused = Rejection::TokenRefused {
                    id: req.token_id.clone(),
                };
                Status::permission_denied(refused.to_string())
            })?;
        let cluster_id = self.handle.peers().cluster_id().to_string();
        // The CA of this moment (joins wait while a CA rotation runs: `RegisterMember` is
        // refused until it finishes).
        let ca = self.ca.current();
        // Before the member is registered: a CSR that cannot be signed must not spend a use
        // of the token or leave a member without a certificate.
        let key_pin = ca
            .check_node_request(&cluster_id, &req.csr_pem, &req.sans)
            .map_err(|e| {
                tracing::warn!(?remote, name = %req.name, error = %format!("{e:#}"), "join refused: bad certificate request");
                Status::invalid_argument(format!("the certificate signing request: {e}"))
            })?;
        let command = Command::RegisterMember {
            token_id: req.token_id.clone(),
            secret_sha256: token.secret_sha256.clone(),
            name: req.name.clone(),
            peer_addr: req.peer_addr.clone(),
            api_addr: req.api_addr.clone(),
            pg_addr: req.pg_addr.clone(),
            tags: Tags::default(),
            now_unix: now_unix(),
            key_sha256: Some(key_pin),
        };
        let id = match self.handle.propose(command).await {
            Ok(CommandResult::MemberRegistered { id }) => id,
            Ok(CommandResult::Rejected { rejection }) => {
                tracing::warn!(?remote, name = %req.name, %rejection, "join refused");
                return Err(Status::permission_denied(rejection.to_string()));
            }
            Ok(other) => return Err(Status::internal(format!("unexpected result {other:?}"))),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let cert_pem = ca
            .issue_node(id.0, &cluster_id, &req.csr_pem, &req.sans)
            .map_err(|e| Status::invalid_argument(format!("signing the node certificate: {e}")))?;
        tracing::info!(node = id.0, name = %req.name, peer_addr = %req.peer_addr, "member registered");
        Ok(Response::new(pb::JoinReply {
            node_id: id.0,
            cluster_id,
            cert_pem,
            ca_pem: ca.cert_pem().to_string(),
            ca_key_pem: ca.key_pem().expose().to_string(),
            server_node_id: self.handle.id(),
            replication_password: self.secrets.replication_password.expose().clone(),
            rewind_password: self.secrets.rewind_password.expose().clone(),
        }))
    }

    async fn add_voter(
        &self,
        request: Request<pb::AddVoterRequest>,
    ) -> Result<Response<pb::AddVoterReply>, Status> {
        let id = authorize_member(&self.handle, &request)?;
        if !self.handle.is_leader() {
            return Err(not_leader(&self.handle));
        }
        let view = self.handle.view().borrow().clone();
        let member = view
            .state
            .member(id.into())
            .ok_or_else(|| Status::permission_denied(format!("node {id} is not registered")))?;
        let node = RaftNode {
            name: member.name.clone(),
            peer_addr: member.peer_addr.clone(),
        };
        match tokio::time::timeout(CATCH_UP_TIMEOUT, self.handle.add_voter(id, node)).await {
            Ok(Ok(())) => Ok(Response::new(pb::AddVoterReply {})),
            Ok(Err(e)) => Err(status_from(&self.handle, e)),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "node {id} did not catch up within {CATCH_UP_TIMEOUT:?}"
            ))),
        }
    }

    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        authorize_member(&self.handle, &request)?;
        if !self.handle.is_leader() {
            return Err(not_leader(&self.handle));
        }
        let command: Command = serde_json::from_slice(&request.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("malformed command: {e}")))?;
        let timeout = self.handle.inner.timings.propose_timeout;
        let (result, index) =
            match tokio::time::timeout(timeout, self.handle.propose_local_at(command)).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err(status_from(&self.handle, e)),
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "not committed within {timeout:?}: no quorum"
                    )))
                }
            };
        let result = serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ProposeReply { result, index }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberReply>, Status> {
        authorize_member(&self.handle, &request)?;
        if !self.handle.is_leader() {
            return Err(not_leader(&self.handle));
        }
        let id = request.into_inner().node_id;
        self.handle
            .remove_member_local(id)
            .await
            .map_err(|e| status_from(&self.handle, e))?;
        Ok(Response::new(pb::RemoveMemberReply {}))
    }
}
