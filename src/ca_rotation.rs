//! `pgquorum ca rotate`: the cluster moves to a new CA while it runs, with no restart and
//! no moment in which one member refuses another.
//!
//! ```text
//!  ca rotate           BeginCaRotation { next }   new CA (cert and key) in the replicated state
//!   every member       trusts current + next      peer port, API, PostgreSQL's CA file
//!                      rotates its node cert      signed by next (crate::rotate: confirm that
//!                                                 every other member accepts it, then switch)
//!                      CaMoved { me }
//!  (operator)          gives clients `pgquorum ca export` (both CAs)
//!  ca rotate --finish  FinishCaRotation           refused until every member has moved
//!   every member       next is the CA             ca.pem, ca.key rewritten; API and PostgreSQL
//!                                                 certificates reissued from it; old CA no
//!                                                 longer trusted, its join tokens dropped
//! ```
//!
//! The replicated state, not the files, says which CA a member uses once a rotation has
//! finished (`ClusterState::ca`): a member that was down when it finished, or crashed while
//! rewriting its files, rewrites them from the state at its next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{CaRecord, ClusterState, Command, NodeId};
use crate::identity::{write_atomic, StateDir};
use crate::raft::RaftHandle;
use crate::rotate::{committed, Rotator};
use crate::tls::{self, Authority, ClusterCa, NodeIdentity};

/// The next CA's certificate, beside `ca.pem`, while a rotation runs: clients of this
/// member (`ca export`, the CLI) trust both.
pub const NEXT_CA_FILE: &str = "ca.next.pem";
/// How long a member waits before it retries moving to the next CA after a failure.
const MOVE_RETRY: Duration = Duration::from_secs(10);

/// The CA certificates clients of the member in `state_dir` should trust: `ca.pem` and,
/// during a rotation, `ca.next.pem`.
pub fn trusted_pem_in(state_dir: &Path) -> std::io::Result<String> {
    let mut pem = std::fs::read_to_string(state_dir.join(NodeIdentity::CA_FILE))?;
    match std::fs::read_to_string(state_dir.join(NEXT_CA_FILE)) {
        Ok(next) => {
            pem = format!("{}\n{}", pem.trim_end(), next);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(pem)
}

/// The record of `ca` in the replicated state.
pub fn record_of(ca: &ClusterCa) -> CaRecord {
    CaRecord {
        sha256: ca.sha256_hex(),
        cert_pem: ca.cert_pem().to_string(),
        key_pem: ca.key_pem().expose().clone(),
    }
}

fn from_record(record: &CaRecord, node_validity: Duration) -> anyhow::Result<ClusterCa> {
    let ca = ClusterCa::from_pem(
        record.cert_pem.clone(),
        crate::secret::Secret::new(record.key_pem.clone()),
    )
    .context("loading the CA recorded in the cluster state")?;
    Ok(ca.with_node_validity(node_validity))
}

/// The CAs `state` asks for: its recorded CA (else `initial`, the one of `ca.pem`), and the
/// next one during a rotation. `held` (what is in use) saves parsing what has not changed.
fn wanted(
    state: &ClusterState,
    initial: impl FnOnce() -> anyhow::Result<ClusterCa>,
    held: Option<&Authority>,
    node_validity: Duration,
) -> anyhow::Result<(ClusterCa, Option<ClusterCa>)> {
    let reuse = |sha: &str, ca: Option<ClusterCa>| ca.filter(|ca| ca.sha256_hex() == sha);
    let current = match &state.ca {
        Some(record) => match reuse(&record.sha256, held.map(Authority::current)) {
            Some(ca) => ca,
            None => from_record(record, node_validity)?,
        },
        None => initial()?.with_node_validity(node_validity),
    };
    let next = match &state.ca_rotation {
        Some(rotation) => Some(
            match reuse(&rotation.next.sha256, held.and_then(Authority::next)) {
                Some(ca) => ca,
                None => from_record(&rotation.next, node_validity)?,
            },
        ),
        None => None,
    };
    Ok((current, next))
}

/// Writes the CA files of `state_dir` for `current` and `next`: `ca.key` then `ca.pem` when
/// they hold another CA (only ever after a finished rotation; a crash between the two is
/// mended from the state at the next start), and `ca.next.pem`, or its removal.
fn write_files(
    state_dir: &Path,
    current: &ClusterCa,
    next: Option<&ClusterCa>,
) -> anyhow::Result<()> {
    let ca_path = state_dir.join(NodeIdentity::CA_FILE);
    if std::fs::read_to_string(&ca_path).ok().as_deref() != Some(current.cert_pem()) {
        StateDir::new(state_dir).save_secret("ca.key", current.key_pem().expose())?;
        write_atomic(&ca_path, current.cert_pem().as_bytes(), 0o644)?;
    }
    let next_path = state_dir.join(NEXT_CA_FILE);
    match next {
        Some(next) => write_atomic(&next_path, next.cert_pem().as_bytes(), 0o644)?,
        None => match std::fs::remove_file(&next_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", next_path.display()))
            }
            _ => {}
        },
    }
    Ok(())
}

/// The member's CAs at start: `initial` (it loads `ca.pem` and `ca.key`) unless the stored
/// state records a rotation to another (then the files are not read, since a crash may have
/// left them half rewritten), and the next CA of a rotation under way; the files are brought
/// in line first.
pub fn open(
    state_dir: &Path,
    state: &ClusterState,
    initial: impl FnOnce() -> anyhow::Result<ClusterCa>,
    node_validity: Duration,
) -> anyhow::Result<Arc<Authority>> {
    let (current, next) = wanted(state, initial, None, node_validity)?;
    write_files(state_dir, &current, next.as_ref())?;
    Ok(Authority::new(current, next)?)
}

/// Keeps this member's CAs as the replicated state says, and moves its node certificate to
/// the next CA when a rotation starts (see the module docs). Runs for the daemon's life.
pub struct Follower {
    pub authority: Arc<Authority>,
    pub handle: RaftHandle,
    pub rotator: Arc<Rotator>,
    /// Tells the renewal task to reissue the service certificates now (`daemon::certs`).
    pub renew_now: Arc<Notify>,
    pub state_dir: PathBuf,
    pub node_validity: Duration,
}

impl Follower {
    pub async fn run(self, shutdown: CancellationToken) {
        let me = NodeId(self.handle.id());
        let mut view = self.handle.view();
        let mut retry_at = Instant::now();
        loop {
            let state = view.borrow_and_update().state.clone();
            if let Err(error) = self.follow(&state).await {
                tracing::warn!(error = format!("{error:#}"), "following the cluster CA");
            }
            let next = self.authority.next().map(|ca| ca.sha256_hex());
            if let Some(rotation) = (state.ca_rotation.as_ref())
                .filter(|r| !r.moved.contains(&me) && Some(&r.next.sha256) == next.as_ref())
            {
                if Instant::now() >= retry_at {
                    if let Err(error) = self.move_to_next(me, &rotation.next.sha256).await {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            retry_in = ?MOVE_RETRY,
                            "CA rotation: moving this member's certificate to the new CA"
                        );
                    }
                    // After a success too: this view may not show the move yet.
                    retry_at = Instant::now() + MOVE_RETRY;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = view.changed() => {}
                _ = tokio::time::sleep_until(retry_at.max(Instant::now() + Duration::from_secs(1))) => {}
            }
        }
    }

    /// Moves to the CAs `state` asks for, if they are not the ones in use.
    async fn follow(&self, state: &ClusterState) -> anyhow::Result<()> {
        let in_use = || Ok(self.authority.current());
        let (current, next) = wanted(state, in_use, Some(&self.authority), self.node_validity)?;
        if self.authority.holds(&current, next.as_ref()) {
            return Ok(());
        }
        let (current_sha, next_sha) = (current.sha256_hex(), next.as_ref().map(|c| c.sha256_hex()));
        write_files(&self.state_dir, &current, next.as_ref())?;
        self.authority.set(current, next)?;
        // The node certificate goes out with the CAs trusted now, so that a joiner finds
        // the one its token pins.
        {
            let _no_rotation = self.rotator.lock.lock().await;
            let id = NodeIdentity::load(&self.state_dir)?;
            let chained = NodeIdentity::new(
                self.authority.bundle(),
                id.cert_pem().to_string(),
                id.key_pem().clone(),
            );
            self.rotator
                .slot
                .replace(&tls::node_chain(&chained), chained.key_pem())?;
        }
        self.renew_now.notify_one();
        tracing::info!(
            ca_sha256 = %current_sha,
            next_ca_sha256 = next_sha.as_deref().unwrap_or("none"),
            "now trusting the cluster CA{}",
            if next_sha.is_some() { " and the one replacing it" } else { " alone" }
        );
        Ok(())
    }

    async fn move_to_next(&self, me: NodeId, next_sha256: &str) -> anyhow::Result<()> {
        let rotated = self.rotator.rotate().await?;
        let moved = Command::CaMoved {
            id: me,
            ca_sha256: next_sha256.to_string(),
        };
        committed(
            self.handle.propose(moved).await,
            "recording the move to the new CA",
        )?;
        tracing::info!(key = %rotated.new_key_sha256, "CA rotation: this member presents a certificate of the new CA");
        Ok(())
    }
}

/// Where a CA rotation stands (`GET /admin/ca`).
#[derive(Debug, Serialize)]
pub struct Status {
    /// The CA this member signs its services' certificates with.
    pub ca_sha256: String,
    /// The CA replacing it, while a rotation runs.
    pub next_ca_sha256: Option<String>,
    /// Members already presenting a certificate of the next CA, and those still to.
    pub moved: Vec<String>,
    pub waiting: Vec<String>,
}

/// The rotation's progress as `state` records it and this member's authority holds it.
pub fn status(authority: &Authority, state: &ClusterState) -> Status {
    let rotation = state.ca_rotation.as_ref();
    let names = |ids: Vec<NodeId>| ids.into_iter().map(|id| state.name_of(id)).collect();
    Status {
        ca_sha256: authority.current().sha256_hex(),
        next_ca_sha256: rotation.map(|r| r.next.sha256.clone()),
        moved: rotation.map_or_else(Vec::new, |r| names(r.moved.iter().copied().collect())),
        waiting: rotation.map_or_else(Vec::new, |r| names(r.waiting(state))),
    }
}

/// Starts a rotation to a fresh CA; does nothing if one is already under way (each member
/// carries on with it by itself).
pub async fn start(authority: &Authority, rotator: &Rotator) -> anyhow::Result<()> {
    let handle = &rotator.handle;
    let state = handle.view().borrow().state.clone();
    if state.ca_rotation.is_some() {
        return Ok(());
    }
    if !state.next_keys.is_empty() {
        bail!("a member's certificate rotation is under way; retry in a few seconds");
    }
    let next = authority.current().successor(&state.cluster_id)?;
    let begin = Command::BeginCaRotation {
        next: record_of(&next),
    };
    rotator.wait_until_all_can_apply(&begin).await?;
    committed(handle.propose(begin).await, "starting the CA rotation")?;
    tracing::info!(next_ca_sha256 = %next.sha256_hex(), "CA rotation started");
    Ok(())
}

/// Finishes the rotation under way, once every member has moved.
pub async fn finish(handle: &RaftHandle) -> anyhow::Result<String> {
    let state = handle.view().borrow().state.clone();
    let rotation = (state.ca_rotation.as_ref()).ok_or_else(|| {
        anyhow!("no CA rotation is under way; start one with `pgquorum ca rotate`")
    })?;
    let waiting: Vec<String> = (rotation.waiting(&state).into_iter())
        .map(|id| state.name_of(id))
        .collect();
    if !waiting.is_empty() {
        bail!(
            "members still presenting a certificate of the old CA: {}; each moves by itself \
             once it is up (start the ones that are down, or `pgquorum node remove` the ones \
             that are gone), then finish",
            waiting.join(", ")
        );
    }
    let sha256 = rotation.next.sha256.clone();
    let end = Command::FinishCaRotation {
        ca_sha256: sha256.clone(),
    };
    committed(handle.propose(end).await, "finishing the CA rotation")?;
    tracing::info!(ca_sha256 = %sha256, "CA rotation finished: the old CA is trusted no more");
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::CaRotation;

    const CLUSTER: &str = "c1";

    fn files(dir: &Path) -> (String, String, Option<String>) {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        (
            read("ca.pem").unwrap_or_default(),
            read("ca.key").unwrap_or_default(),
            read(NEXT_CA_FILE),
        )
    }

    fn save(dir: &Path, ca: &ClusterCa) {
        write_atomic(&dir.join("ca.pem"), ca.cert_pem().as_bytes(), 0o644).unwrap();
        write_atomic(&dir.join("ca.key"), ca.key_pem().expose().as_bytes(), 0o600).unwrap();
    }

    fn from_files(dir: &Path) -> impl FnOnce() -> anyhow::Result<ClusterCa> + '_ {
        move || {
            let (cert, key, _) = files(dir);
            Ok(ClusterCa::from_pem(cert, crate::secret::Secret::new(key))?)
        }
    }

    #[test]
    fn the_state_not_the_files_says_which_ca_is_in_use_at_start() {
        let day = Duration::from_secs(86_400);
        let old = ClusterCa::generate(CLUSTER).unwrap();
        let new = old.successor(CLUSTER).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        save(dir, &old);

        // No rotation: the files' CA, and nothing rewritten.
        let state = ClusterState::default();
        let authority = open(dir, &state, from_files(dir), day).unwrap();
        assert_eq!(authority.current().sha256_hex(), old.sha256_hex());
        assert_eq!(files(dir).2, None);

        // A rotation under way: both trusted, the next CA's certificate beside ca.pem.
        let rotating = ClusterState {
            ca_rotation: Some(CaRotation {
                next: record_of(&new),
                moved: Default::default(),
            }),
            ..Default::default()
        };
        let authority = open(dir, &rotating, from_files(dir), day).unwrap();
        assert_eq!(authority.node_issuer().sha256_hex(), new.sha256_hex());
        assert_eq!(authority.bundle().matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(files(dir).2.as_deref(), Some(new.cert_pem()));
        assert_eq!(
            trusted_pem_in(dir)
                .unwrap()
                .matches("BEGIN CERTIFICATE")
                .count(),
            2
        );

        // Finished, and a crash left the new key beside the old certificate: the files are
        // not even read (they no longer make a CA) but rewritten from the state.
        std::fs::write(dir.join("ca.key"), new.key_pem().expose()).unwrap();
        let finished = ClusterState {
            ca: Some(record_of(&new)),
            ..Default::default()
        };
        let unread = || -> anyhow::Result<ClusterCa> { panic!("the files were read") };
        let authority = open(dir, &finished, unread, day).unwrap();
        assert_eq!(authority.current().sha256_hex(), new.sha256_hex());
        assert_eq!(authority.bundle().matches("BEGIN CERTIFICATE").count(), 1);
        let (cert, key, next) = files(dir);
        assert_eq!(
            (cert.as_str(), key.as_str(), next),
            (new.cert_pem(), new.key_pem().expose().as_str(), None)
        );
        ClusterCa::from_pem(cert, crate::secret::Secret::new(key)).expect("a matching pair again");
    }
}
