//! Raft membership: adding a voter (as a learner first), finishing a joint configuration,
//! removing a member, a joining node asking to become a voter.

use super::*;

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

impl RaftHandle {
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
