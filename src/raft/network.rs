//! Outgoing peer connections: one cached gRPC channel per member, over mutual TLS, used both
//! for Raft RPCs ([`NetworkFactory`], handed to openraft) and for the peer service (joining,
//! forwarding proposals).
//!
//! TLS is done here with tokio-rustls rather than by tonic, so that the server name checked
//! on every connection is the target's node identity (`node-<id>.<cluster>`): reaching the
//! wrong node, or a node of another cluster, fails the handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use super::proto::pb;
use super::{NodeId, RaftNode, TypeConfig};
use crate::tls;

/// How long to wait for a TCP connection plus TLS handshake to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to peers. Cheap to clone; clones share the channel cache.
#[derive(Clone)]
pub struct Peers {
    cluster_id: String,
    tls: Arc<rustls::ClientConfig>,
    /// Channels by node id, with the address they were made for: an address change makes a
    /// new channel.
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
}

impl Peers {
    pub fn new(cluster_id: String, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            cluster_id,
            tls,
            channels: Arc::default(),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The channel to `target` at `addr` (`host:port`). Connects lazily: this never blocks.
    pub fn channel(&self, target: NodeId, addr: &str) -> Channel {
        let mut channels = self.channels.lock().expect("peer channel cache poisoned");
        if let Some((cached_addr, channel)) = channels.get(&target) {
            if cached_addr == addr {
                return channel.clone();
            }
        }
        let server_name = tls::node_server_name(target, &self.cluster_id);
        let channel = tls_channel(addr, server_name, self.tls.clone());
        channels.insert(target, (addr.to_string(), channel.clone()));
        channel
    }

    /// Drops every cached channel, so the next call to each member makes a new connection
    /// (and TLS handshake). A certificate rotation calls it once this member presents its
    /// new certificate: connections made with the old one go when their last user does.
    pub fn reconnect(&self) {
        self.channels
            .lock()
            .expect("peer channel cache poisoned")
            .clear();
    }

    /// A client of the peer service on `target`.
    pub fn peer_client(&self, target: NodeId, addr: &str) -> pb::peer_client::PeerClient<Channel> {
        pb::peer_client::PeerClient::new(self.channel(target, addr))
    }
}

/// A lazily connecting channel that dials `addr` over TCP and runs a TLS handshake with
/// `config`, expecting the server to prove it is `server_name`.
pub fn tls_channel(addr: &str, server_name: String, config: Arc<rustls::ClientConfig>) -> Channel {
    let connector = TlsConnector::from(config);
    let addr = addr.to_string();
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let addr = addr.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(server_name)
                .map_err(|e| std::io::Error::other(format!("invalid server name: {e}")))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    // The URI only satisfies HTTP/2's need for an authority; the connector above decides
    // where to connect.
    Endpoint::from_static("http://peer")
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(connect)
}

/// openraft's network factory: hands out clients that share the cached channels.
#[derive(Clone)]
pub struct NetworkFactory {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = RaftClient;

    async fn new_client(&mut self, target: NodeId, node: &RaftNode) -> Self::Network {
        // Called for every replication stream and every vote: must not connect.
        RaftClient {
            target,
            addr: node.peer_addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// Raft RPCs to one member, each on the cached channel of the moment (see
/// [`Peers::reconnect`]).
pub struct RaftClient {
    target: NodeId,
    addr: String,
    peers: Peers,
}

/// The ways one RPC can fail before the remote Raft has answered.
enum CallError {
    /// Connecting failed or the peer is down: openraft backs off.
    Unreachable(String),
    /// Anything else that is not an answer from Raft.
    Network(String),
}

impl RaftClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, RaftError<NodeId, E>>, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let payload = serde_json::to_vec(req).map_err(|e| CallError::Network(e.to_string()))?;
        let mut request = tonic::Request::new(pb::RaftRequest {
            cluster_id: self.peers.cluster_id.clone(),
            payload,
        });
        request.set_timeout(option.soft_ttl());
        let mut client =
            pb::raft_client::RaftClient::new(self.peers.channel(self.target, &self.addr))
                .max_decoding_message_size(16 * 1024 * 1024);
        let reply = match rpc {
            "append_entries" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                CallError::Unreachable(format!(
                    "{rpc} to node {}: {}",
                    self.target,
                    status.message()
                ))
            }
            _ => CallError::Network(format!("{rpc} to node {}: {status}", self.target)),
        })?;
        serde_json::from_slice(&reply.into_inner().payload)
            .map_err(|e| CallError::Network(format!("decoding {rpc} reply: {e}")))
    }
}

#[allow(clippy::result_large_err)] // openraft's own error type, returned as openraft wants it
fn rpc_error<R, E: std::error::Error>(
    target: NodeId,
    result: Result<Result<R, RaftError<NodeId, E>>, CallError>,
) -> Result<R, RPCError<NodeId, RaftNode, RaftError<NodeId, E>>> {
    match result {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(target, remote))),
        Err(CallError::Unreachable(msg)) => Err(RPCError::Unreachable(Unreachable::new(
            &std::io::Error::other(msg),
        ))),
        Err(CallError::Network(msg)) => Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other(msg),
        ))),
    }
}

impl RaftNetwork<TypeConfig> for RaftClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, RaftNode, RaftError<NodeId>>> {
        let result = self.call("append_entries", &rpc, &option).await;
        rpc_error(self.target, result)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, RaftNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let result = self.call("install_snapshot", &rpc, &option).await;
        rpc_error(self.target, result)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, RaftNode, RaftError<NodeId>>> {
        let result = self.call("vote", &rpc, &option).await;
        rpc_error(self.target, result)
    }
}
