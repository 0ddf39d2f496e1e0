//! `pgquorum cert rotate`: a member moves to a new node key and certificate while it runs,
//! with no restart and no moment in which another member refuses it.
//!
//! ```text
//!  1. a fresh key; a certificate for it from the cluster CA (same id, same names)
//!  2. BeginKeyRotation      every member accepts the new key beside the pin
//!  3. confirm               each other member is dialled with the new certificate until it
//!                           accepts it (it has applied 2); if one does not in time:
//!                           EndKeyRotation { adopt: false }, the old key stays, an error
//!  4. switch                the new pair is written (crash-safe) and presented from the next
//!                           handshake on; outgoing connections are remade
//!  5. EndKeyRotation adopt  the new key is the pin; the old one is refused from then on
//! ```
//!
//! A crash between 4 and 5 leaves a member whose certificate is its next key: accepted, as
//! the rotation has not ended; the daemon ends it once it is back, as it ends any rotation
//! a failed step left open (see [`Rotator::finish_interrupted`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::{Command, NodeId};
use crate::peers::PeerStatuses;
use crate::raft::proto::pb;
use crate::raft::{Peers, RaftHandle};
use crate::tls::{self, Authority, CertSlot, KeyPins, NodeIdentity, NodeKey};

/// How long every other member has to accept the new certificate (step 3).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a rotation waits for every member to report that it can apply one.
const LEVELS_WAIT: Duration = Duration::from_secs(5);
/// How long one confirming call may take.
const CONFIRM_CALL: Duration = Duration::from_secs(2);

/// What a finished rotation reports.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub member: String,
    pub old_key_sha256: String,
    pub new_key_sha256: String,
}

/// Rotates this member's node certificate. One rotation at a time.
pub struct Rotator {
    pub handle: RaftHandle,
    /// Signs the new certificate ([`Authority::node_issuer`]: the next CA during a CA
    /// rotation) and says which CAs it goes out with.
    pub authority: Arc<Authority>,
    /// What the peer server and client present (see [`tls::node_chain_slot`]).
    pub slot: Arc<CertSlot>,
    pub pins: KeyPins,
    pub peer_statuses: watch::Receiver<Arc<PeerStatuses>>,
    pub state_dir: PathBuf,
    pub name: String,
    /// The names besides the node name that its certificate carries.
    pub sans: Vec<String>,
    /// The pin of the key this member presents now.
    pub presented: std::sync::Mutex<String>,
    /// Where `/metrics` reads the node certificate's expiry.
    pub expiries: Arc<tls::Expiries>,
    pub lock: tokio::sync::Mutex<()>,
}

impl Rotator {
    /// Runs the rotation (see the module docs). An error leaves the old certificate in use
    /// and trusted (before step 4) or the new one (after it); either way, both keys stay
    /// trusted only until [`Rotator::finish_interrupted`] ends the rotation, seconds later.
    pub async fn rotate(&self) -> anyhow::Result<Rotated> {
        let _one = self
            .lock
            .try_lock()
            .map_err(|_| anyhow!("a rotation of this member's certificate is already running"))?;
        let me = NodeId(self.handle.id());
        let cluster_id = self.handle.peers().cluster_id().to_string();
        let current =
            NodeIdentity::load(&self.state_dir).context("reading the current identity")?;
        let old_key = tls::key_sha256_of_cert_pem(current.cert_pem())
            .ok_or_else(|| anyhow!("this member's certificate does not parse"))?;

        let key = NodeKey::generate()?;
        let cert = (self.authority.node_issuer()).issue_node(
            me.0,
            &cluster_id,
            &key.csr_pem(&self.name)?,
            &self.sans,
        )?;
        let new_key = tls::key_sha256_of_cert_pem(&cert)
            .ok_or_else(|| anyhow!("the new certificate does not parse"))?;
        let next = NodeIdentity::new(self.authority.bundle(), cert, key.key_pem());

        let begin = Command::BeginKeyRotation {
            id: me,
            key_sha256: new_key.clone(),
        };
        self.wait_until_all_can_apply(&begin).await?;
        committed(self.handle.propose(begin).await, "starting the rotation")?;
        tracing::info!(new_key = %new_key, "certificate rotation: the new key is trusted beside the old one");

        if let Err(error) = self.confirm(&next, &cluster_id).await {
            let end = Command::EndKeyRotation {
                id: me,
                key_sha256: new_key.clone(),
                adopt: false,
            };
            if let Err(e) = committed(self.handle.propose(end).await, "cancelling the rotation") {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the unused next key stays trusted until the rotation is ended, seconds from now"
                );
            }
            return Err(error.context("the old certificate stays in use"));
        }

        next.save_rotated(&self.state_dir)
            .context("writing the new certificate")?;
        self.slot
            .replace(&tls::node_chain(&next), next.key_pem())
            .context("loading the new certificate")?;
        *self.presented.lock().unwrap_or_else(|e| e.into_inner()) = new_key.clone();
        if let Some((_, until)) = tls::validity_of_cert_pem(next.cert_pem()) {
            self.expiries.set("node", until);
        }
        self.handle.peers().reconnect();
        tracing::info!("certificate rotation: presenting the new certificate");
        crate::failpoint::crash_if_set(
            Some(&crate::failpoint::dir(&self.state_dir)),
            crate::failpoint::ROTATION_BEFORE_END,
        );

        let end = Command::EndKeyRotation {
            id: me,
            key_sha256: new_key.clone(),
            adopt: true,
        };
        committed(self.handle.propose(end).await, "ending the rotation")
            .context("both keys stay trusted until the rotation is ended, seconds from now")?;
        tracing::info!(old_key = %old_key, new_key = %new_key, "certificate rotated: the old key is refused from now on");
        Ok(Rotated {
            member: self.name.clone(),
            old_key_sha256: old_key,
            new_key_sha256: new_key,
        })
    }

    /// Waits (up to [`LEVELS_WAIT`]: right after a start, not every member has answered the
    /// status exchange yet) until every other member has answered from a binary that can
    /// apply `command`.
    pub(crate) async fn wait_until_all_can_apply(&self, command: &Command) -> anyhow::Result<()> {
        let me = NodeId(self.handle.id());
        let deadline = tokio::time::Instant::now() + LEVELS_WAIT;
        let mut statuses = self.peer_statuses.clone();
        loop {
            let view = self.handle.view().borrow().clone();
            if statuses
                .borrow_and_update()
                .all_can_apply(&view.state, me, command)
            {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => bail!(
                    "not every member runs a version of pgquorum that can rotate certificates \
                     (or one has not answered for {LEVELS_WAIT:?}); upgrade them all, start the \
                     ones that are down, and retry"
                ),
                _ = statuses.changed() => {}
            }
        }
    }

    /// Dials every other member with `next` until each accepts it, or fails naming those
    /// that did not within [`CONFIRM_TIMEOUT`].
    async fn confirm(&self, next: &NodeIdentity, cluster_id: &str) -> anyhow::Result<()> {
        let slot = tls::node_chain_slot(next)?;
        let trust = self.authority.trust().clone();
        let config = tls::member_client_config(trust, slot, cluster_id, self.pins.clone())?;
        let probe = Peers::new(cluster_id.to_string(), config);
        let me = NodeId(self.handle.id());
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        let mut waiting: Vec<_> = {
            let view = self.handle.view().borrow().clone();
            (view.state.members.values())
                .filter(|m| m.id != me)
                .map(|m| (m.id, m.name.clone(), m.peer_addr.clone(), String::new()))
                .collect()
        };
        while !waiting.is_empty() {
            for (id, _, addr, last_error) in waiting.iter_mut() {
                let mut client = pb::status_client::StatusClient::new(probe.channel(id.0, addr));
                let mut request = tonic::Request::new(pb::StatusRequest {});
                request.set_timeout(CONFIRM_CALL);
                match tokio::time::timeout(CONFIRM_CALL, client.get(request)).await {
                    Ok(Ok(_)) => last_error.clear(),
                    Ok(Err(status)) => *last_error = status.message().to_string(),
                    Err(_) => *last_error = "no answer".into(),
                }
                if !last_error.is_empty() {
                    // A refused call leaves the channel's connection to be remade.
                    probe.reconnect();
                }
            }
            let mut confirmed = Vec::new();
            waiting.retain(|(_, name, _, error)| {
                if error.is_empty() {
                    confirmed.push(name.clone());
                }
                !error.is_empty()
            });
            if waiting.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let who: Vec<String> = (waiting.iter())
                    .map(|(_, name, _, error)| format!("{name} ({error})"))
                    .collect();
                bail!(
                    "members that did not accept the new certificate within {CONFIRM_TIMEOUT:?}: \
                     {}; rotate when every member is up",
                    who.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

pub(crate) fn committed(
    result: Result<crate::cluster::CommandResult, crate::raft::Error>,
    what: &str,
) -> anyhow::Result<()> {
    match result {
        Ok(result) if result.is_rejected() => Err(anyhow!("{what}: refused: {result:?}")),
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(what.to_string())),
    }
}

impl Rotator {
    /// Ends any rotation of this member that no running rotation owns, for as long as the
    /// daemon runs: one a crash cut short (at the next start, once this member has applied
    /// the log), or one whose last proposal failed. The next key is adopted if this member
    /// presents it (it got as far as step 4), else dropped.
    pub async fn finish_interrupted(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let me = NodeId(self.handle.id());
        let mut view = self.handle.view();
        loop {
            let next = view.borrow_and_update().state.next_keys.get(&me).cloned();
            if let (Some(next), Ok(_one)) = (next, self.lock.try_lock()) {
                let adopt = next == *self.presented.lock().unwrap_or_else(|e| e.into_inner());
                let end = Command::EndKeyRotation {
                    id: me,
                    key_sha256: next,
                    adopt,
                };
                // Rejected when the view lagged a rotation that had already ended.
                if committed(self.handle.propose(end).await, "ending a rotation").is_ok() {
                    tracing::info!(adopted = adopt, "ended a certificate rotation left open");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = view.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}
