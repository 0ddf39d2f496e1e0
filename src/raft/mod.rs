//! Embedded Raft: openraft over gRPC with mutual TLS, its log and snapshots in sled.
//!
//! ```text
//!   peers ──RPC──► service ──► openraft core ──append/vote──► store (sled, fsync)
//!                                   │ apply committed entries
//!                                   ▼
//!                           state_machine ──cluster::apply──► watch<ClusterView> ──► consumers
//! ```
//!
//! Knows nothing about PostgreSQL. Everything that changes the cluster goes through
//! [`RaftHandle::propose`], which forwards to the leader when this node is not it.

pub mod join;
mod membership;
pub mod network;
pub mod proto;
pub mod service;
pub mod state_machine;
pub mod store;

pub use membership::{finish_joint_configurations, MembershipRole};
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Command, CommandResult};
pub use network::{NetworkFactory, Peers};
pub use openraft::ServerState;
use proto::pb;
pub use state_machine::{ClusterView, StateMachine};
pub use store::LogStore;

/// Raft node ids. Allocated by the cluster, never reused.
pub type NodeId = u64;

/// What Raft membership records of a node: enough to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftNode {
    pub name: String,
    /// `host:port` of the peer gRPC server.
    pub peer_addr: String,
}

impl fmt::Display for RaftNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of pgquorum.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = RaftNode,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Metrics = RaftMetrics<NodeId, RaftNode>;

/// Raft timings. See `config::RaftTimings` for the LAN and WAN profiles and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Timings {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long a proposal may wait for a leader and a commit before it fails.
    pub propose_timeout: Duration,
    /// Entries between snapshots; the log is purged behind each snapshot.
    pub snapshot_every: u64,
}

impl Timings {
    /// The openraft configuration for these timings and this cluster.
    pub fn openraft_config(&self, cluster_id: &str) -> Result<openraft::Config, Error> {
        let config = openraft::Config {
            cluster_name: cluster_id.to_string(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: (self.election_timeout_max * 4).as_millis() as u64,
            max_payload_entries: 64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_every / 2,
            replication_lag_threshold: self.snapshot_every * 2,
            purge_batch_size: 64,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| Error::Raft(format!("invalid raft timings: {e}")))
    }
}

/// Errors of proposals and membership changes. Messages say what failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no raft leader after {waited:?}: the cluster has no quorum (a majority of voters, \
         {quorum} of {voters}, must be reachable); check the other members with `pgquorum list` \
         there"
    )]
    NoLeader {
        waited: Duration,
        quorum: usize,
        voters: usize,
    },
    #[error(
        "not committed within {waited:?}: the cluster has no quorum (a majority of voters, \
         {quorum} of {voters}, must be reachable); the change may still be applied if \
         quorum returns"
    )]
    NotCommitted {
        waited: Duration,
        quorum: usize,
        voters: usize,
    },
    #[error("this member is not the raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("forwarding to leader node {leader}: {message}")]
    Forward { leader: NodeId, message: String },
    #[error("membership change: {0}")]
    Membership(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// The handle every other part uses to read and change the cluster. Cheap to clone.
#[derive(Clone)]
pub struct RaftHandle {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    peers: Peers,
    view: watch::Receiver<Arc<ClusterView>>,
    timings: Timings,
    /// Serialises membership changes made through this node: openraft allows concurrent
    /// ones but they can leave a joint configuration behind.
    membership_lock: Mutex<()>,
}

impl RaftHandle {
    pub fn new(
        id: NodeId,
        raft: Raft,
        peers: Peers,
        view: watch::Receiver<Arc<ClusterView>>,
        timings: Timings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                raft,
                peers,
                view,
                timings,
                membership_lock: Mutex::new(()),
            }),
        }
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// The committed cluster view; changes whenever entries are applied.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.inner.view.clone()
    }

    /// A copy of the current Raft metrics (never hold the borrow across an await).
    pub fn metrics(&self) -> Metrics {
        self.inner.raft.metrics().borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.metrics().state == ServerState::Leader
    }

    fn quorum(&self) -> (usize, usize) {
        let voters = self
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        (voters / 2 + 1, voters)
    }

    /// The current leader and where to reach it, if known.
    pub fn leader(&self) -> Option<(NodeId, RaftNode)> {
        let metrics = self.metrics();
        let id = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some((id, node))
    }

    /// Proposes `command` and returns its result once committed and applied on the leader.
    ///
    /// Forwards to the leader when this node is not it, and waits for a leader to exist, all
    /// within the propose timeout. Retries only when the command certainly was not submitted
    /// (no leader, leader unreachable before the call); a timeout after submission is
    /// [`Error::NotCommitted`], whose outcome is unknown.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, Error> {
        let started = Instant::now();
        let deadline = started + self.inner.timings.propose_timeout;
        let mut metrics = self.inner.raft.metrics();
        loop {
            let (quorum, voters) = self.quorum();
            let leader = self.leader();
            let outcome = match leader {
                None => None,
                Some((id, _)) if id == self.inner.id => {
                    match tokio::time::timeout_at(deadline, self.propose_local(command.clone()))
                        .await
                    {
                        Err(_) => {
                            return Err(Error::NotCommitted {
                                waited: started.elapsed(),
                                quorum,
                                voters,
                            })
                        }
                        Ok(Err(Error::NotLeader { .. })) => None,
                        Ok(result) => Some(result),
                    }
                }
                Some((id, ref node)) => {
                    let mut client = self.inner.peers.peer_client(id, &node.peer_addr);
                    let payload = serde_json::to_vec(&command)
                        .map_err(|e| Error::Raft(format!("encoding command: {e}")))?;
                    let mut request = tonic::Request::new(pb::ProposeRequest { command: payload });
                    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                    match client.propose(request).await {
                        Ok(reply) => {
                            let reply = reply.into_inner();
                            self.wait_applied(reply.index, deadline).await;
                            Some(
                                serde_json::from_slice(&reply.result)
                                    .map_err(|e| Error::Raft(format!("decoding result: {e}"))),
                            )
                        }
                        // The leader moved, or could not be reached: the command was not
                        // submitted, so trying again is safe.
                        Err(status)
                            if status.code() == tonic::Code::FailedPrecondition
                                || status.code() == tonic::Code::Unavailable =>
                        {
                            None
                        }
                        // tonic reports its own client-side timeout as Cancelled.
                        Err(status)
                            if matches!(
                                status.code(),
                                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                            ) || Instant::now() >= deadline =>
                        {
                            return Err(Error::NotCommitted {
                                waited: started.elapsed(),
                                quorum,
                                voters,
                            })
                        }
                        Err(status) => {
                            return Err(Error::Forward {
                                leader: id,
                                message: status.message().into(),
                            })
                        }
                    }
                }
            };
            if let Some(result) = outcome {
                return result;
            }
            // Wait for a change of leader (or a short pause when the leader is unreachable),
            // but never past the deadline.
            let pause = tokio::time::sleep(Duration::from_millis(50));
            let wait = async {
                tokio::select! {
                    _ = metrics.changed() => {}
                    _ = pause => {}
                }
            };
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                let waited = started.elapsed();
                return Err(match leader {
                    None => Error::NoLeader {
                        waited,
                        quorum,
                        voters,
                    },
                    Some(_) => Error::NotCommitted {
                        waited,
                        quorum,
                        voters,
                    },
                });
            }
        }
    }

    /// Proposes on this node, which must be the leader. Waits for the commit without a
    /// timeout of its own: callers bound it.
    pub async fn propose_local(&self, command: Command) -> Result<CommandResult, Error> {
        self.propose_local_at(command)
            .await
            .map(|(result, _)| result)
    }

    /// [`propose_local`](Self::propose_local), with the log index the command was committed
    /// (and applied) at.
    pub async fn propose_local_at(&self, command: Command) -> Result<(CommandResult, u64), Error> {
        match self.inner.raft.client_write(command).await {
            Ok(response) => Ok((response.data, response.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Waits (until `deadline` at most) until this node's state machine has applied log
    /// `index`: a command forwarded to the leader is then visible here when the caller gets
    /// its answer, so an operator's `pause` followed by `list` on the same member shows it.
    /// Past the deadline the answer goes out anyway: the command is committed.
    async fn wait_applied(&self, index: u64, deadline: Instant) {
        if index == 0 {
            return;
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self
            .inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "a forwarded command")
            .await
        {
            tracing::debug!(index, error = %e, "the local state machine lags the leader");
        }
    }
}
