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

pub mod network;
pub mod proto;
pub mod service;
pub mod state_machine;
pub mod store;
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

/// How a member takes part in the Raft membership: what `list` shows as its Raft role (the
/// leader aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipRole {
    /// Votes in every configuration: counts toward every quorum.
    Voter,
    /// A voter of the new configuration of a joint one only: a change that adds it is under
    /// way (or was left half done by a leader that stopped).
    Joining,
    /// A voter of the old configuration of a joint one only: a change that removes it is
    /// under way.
    Leaving,
    /// Receives the log, does not vote.
    Learner,
    /// Not in Raft membership at all (registered in the cluster state only).
    Registered,
}

impl MembershipRole {
    pub fn of(membership: &openraft::Membership<NodeId, RaftNode>, id: NodeId) -> Self {
        let configs = membership.get_joint_config();
        let in_last = configs.last().is_some_and(|c| c.contains(&id));
        let in_all = !configs.is_empty() && configs.iter().all(|c| c.contains(&id));
        if in_all {
            Self::Voter
        } else if in_last {
            Self::Joining
        } else if configs.iter().any(|c| c.contains(&id)) {
            Self::Leaving
        } else if membership.get_node(&id).is_some() {
            Self::Learner
        } else {
            Self::Registered
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voter => "voter",
            Self::Joining => "joining",
            Self::Leaving => "leaving",
            Self::Learner => "learner",
            Self::Registered => "registered",
        }
    }
}

/// A failed membership change as [`Error`]: a redirect when this member is not the leader.
fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, RaftNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
            leader: f.leader_id,
        },
        other => Error::Membership(other.to_string()),
    }
}

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

    /// Adds `id` as a learner, waits until it has caught up, then makes it a voter. Must run
    /// on the leader; one membership change at a time.
    pub async fn add_voter(&self, id: NodeId, node: RaftNode) -> Result<(), Error> {
        let _guard = self.inner.membership_lock.lock().await;
        // A joint configuration (a change a previous leader left half done) counts `id` as a
        // voter already but does not let it make up a quorum yet: finish it first.
        self.finish_joint_locked().await?;
        let membership = self.metrics().membership_config.membership().clone();
        let role = MembershipRole::of(&membership, id);
        if role == MembershipRole::Voter {
            return Ok(());
        }
        let raft = &self.inner.raft;
        tracing::info!(node = id, %node, "adding member as learner");
        raft.add_learner(id, node, true)
            .await
            .map_err(membership_error)?;
        tracing::info!(node = id, "learner caught up; promoting to voter");
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        if role == MembershipRole::Joining {
            // The joint configuration was not committed yet when checked above; this change
            // took its second step.
            tracing::warn!(
                node = id,
                before = ?membership.get_joint_config(),
                "finished a membership change a previous leader left half done"
            );
        }
        tracing::info!(node = id, "member is a voter");
        Ok(())
    }

    /// On the leader, finishes a membership change that a previous leader left in its joint
    /// configuration (it stopped between openraft's two steps). Until then every election and
    /// commit needs a majority of the old voters *and* of the new ones, so a cluster that looks
    /// like five voters may stop at two losses of the old four. Does nothing when this member
    /// is not the leader or a change through this member is under way (that change finishes
    /// itself).
    pub async fn finish_joint_configuration(&self) -> Result<(), Error> {
        if !self.is_leader() {
            return Ok(());
        }
        let Ok(_guard) = self.inner.membership_lock.try_lock() else {
            return Ok(());
        };
        self.finish_joint_locked().await
    }

    /// [`Self::finish_joint_configuration`] with the membership lock held.
    async fn finish_joint_locked(&self) -> Result<(), Error> {
        let membership = self.metrics().membership_config.membership().clone();
        let configs = membership.get_joint_config();
        if configs.len() < 2 {
            return Ok(());
        }
        // From the joint configuration [old, new], a change to `new` (adding nobody) is its
        // second step: the uniform configuration `new`.
        match self
            .inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::new()), false)
            .await
        {
            Ok(_) => {}
            // The joint entry is not committed yet (a leader commits it with its first entry),
            // or this member only believes it leads (restarted with its old committed vote):
            // nothing to finish from here yet.
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(e),
            ))) => {
                tracing::debug!(error = %e, "a joint configuration to finish is not committed yet");
                return Ok(());
            }
            Err(e) => return Err(membership_error(e)),
        }
        let voters = self
            .metrics()
            .membership_config
            .membership()
            .get_joint_config()
            .clone();
        tracing::warn!(
            before = ?configs,
            after = ?voters,
            "finished a membership change a previous leader left half done"
        );
        Ok(())
    }

    /// Removes `id` from Raft membership (voter and node). Must run on the leader.
    pub async fn remove_from_membership(&self, id: NodeId) -> Result<(), Error> {
        let _guard = self.inner.membership_lock.lock().await;
        let membership = self.metrics().membership_config.membership().clone();
        if membership.get_node(&id).is_none() {
            return Ok(());
        }
        if membership.voter_ids().any(|v| v == id) {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        let membership = self.metrics().membership_config.membership().clone();
        if membership.get_node(&id).is_some() {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        tracing::info!(node = id, "member removed from raft membership");
        Ok(())
    }
}

impl RaftHandle {
    /// Removes member `id` from Raft membership and from the cluster state, forwarding to the
    /// leader when this node is not it.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), Error> {
        if self.is_leader() {
            return self.remove_member_local(id).await;
        }
        let (leader, node) = self.leader().ok_or(Error::NoLeader {
            waited: Duration::ZERO,
            quorum: self.quorum().0,
            voters: self.quorum().1,
        })?;
        let mut client = self.inner.peers.peer_client(leader, &node.peer_addr);
        let mut request = tonic::Request::new(pb::RemoveMemberRequest { node_id: id });
        request.set_timeout(self.inner.timings.propose_timeout * 2);
        client
            .remove_member(request)
            .await
            .map_err(|s| Error::Forward {
                leader,
                message: s.message().to_string(),
            })?;
        Ok(())
    }

    /// [`Self::remove_member`] on the leader.
    pub(crate) async fn remove_member_local(&self, id: NodeId) -> Result<(), Error> {
        self.remove_from_membership(id).await?;
        match self
            .propose_local(Command::RemoveMember { id: id.into() })
            .await?
        {
            CommandResult::Rejected { rejection } => Err(Error::Membership(rejection.to_string())),
            _ => Ok(()),
        }
    }

    /// Asks the leader (starting from `seed`) to make this node a voter, following
    /// redirects, retrying until `deadline`.
    pub async fn request_voter(
        &self,
        seed: (NodeId, String),
        deadline: Instant,
    ) -> Result<(), Error> {
        let (mut target, mut addr) = seed;
        loop {
            let mut client = self.inner.peers.peer_client(target, &addr);
            let mut request = tonic::Request::new(pb::AddVoterRequest {});
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            match client.add_voter(request).await {
                Ok(_) => return Ok(()),
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    let meta = status.metadata();
                    let id = meta.get("pgquorum-leader-id").and_then(|v| v.to_str().ok());
                    let leader_addr = meta
                        .get("pgquorum-leader-addr")
                        .and_then(|v| v.to_str().ok());
                    if let (Some(id), Some(leader_addr)) =
                        (id.and_then(|i| i.parse().ok()), leader_addr)
                    {
                        target = id;
                        addr = leader_addr.to_string();
                    }
                }
                Err(status) => {
                    tracing::debug!(target, %addr, %status, "asking to become a voter");
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Membership(format!(
                    "could not become a voter before the deadline (last asked node {target} at {addr})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs on every member for the daemon's life: whenever this member leads and finds a joint
/// configuration no change is finishing, finishes it (see
/// [`RaftHandle::finish_joint_configuration`]).
pub async fn finish_joint_configurations(handle: RaftHandle, token: CancellationToken) {
    let mut metrics = handle.raft().metrics();
    // Metrics change on every election and commit; the tick retries a change that failed.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        if let Err(e) = handle.finish_joint_configuration().await {
            tracing::warn!(error = %e, "could not finish a half-done membership change; retrying");
        }
    }
}
