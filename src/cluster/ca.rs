//! The cluster CA in the replicated state, for `pgquorum ca rotate` (see
//! `crate::ca_rotation`): the CA that replaces the one `init` created, and the rotation's
//! progress.
//!
//! ```text
//!  BeginCaRotation { next }     every member trusts the current CA and `next`
//!  CaMoved { id } × members     each has rotated its node certificate to one from `next`
//!  FinishCaRotation             `next` is the CA; the old one is trusted no more
//! ```

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::command::{CommandResult, Rejection};
use super::member::NodeId;
use super::state::ClusterState;

/// A CA certificate and its private key, PEM, with the hex SHA-256 of the certificate's DER
/// (what join tokens pin; computed by the proposer, as `apply` parses no certificates).
///
/// The key is replicated to every member, as `node join` gives every member the CA key
/// (README, "Who holds the CA key"); `Debug` hides it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct CaRecord {
    pub sha256: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaRecord")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A CA rotation under way: the CA that will replace the current one, and the members whose
/// node certificate it has already signed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CaRotation {
    pub next: CaRecord,
    pub moved: BTreeSet<NodeId>,
}

impl CaRotation {
    /// The current members whose node certificate is still from the old CA.
    pub fn waiting(&self, state: &ClusterState) -> Vec<NodeId> {
        (state.members.keys())
            .filter(|id| !self.moved.contains(id))
            .copied()
            .collect()
    }
}

pub(super) fn begin(state: &mut ClusterState, next: &CaRecord) -> Result<CommandResult, Rejection> {
    match &state.ca_rotation {
        // Asking again for the same CA (a retried proposal) changes nothing.
        Some(rotation) if rotation.next.sha256 == next.sha256 => Ok(CommandResult::Applied),
        Some(rotation) => Err(Rejection::CaRotationInProgress {
            next_sha256: rotation.next.sha256.clone(),
        }),
        None => {
            state.ca_rotation = Some(CaRotation {
                next: next.clone(),
                moved: BTreeSet::new(),
            });
            Ok(CommandResult::Applied)
        }
    }
}

pub(super) fn moved(
    state: &mut ClusterState,
    id: NodeId,
    ca_sha256: &str,
) -> Result<CommandResult, Rejection> {
    if state.member(id).is_none() {
        return Err(Rejection::UnknownMember { id });
    }
    match &mut state.ca_rotation {
        Some(rotation) if rotation.next.sha256 == ca_sha256 => {
            rotation.moved.insert(id);
            Ok(CommandResult::Applied)
        }
        _ => Err(Rejection::NoCaRotation),
    }
}

pub(super) fn finish(
    state: &mut ClusterState,
    ca_sha256: &str,
) -> Result<CommandResult, Rejection> {
    let rotation = match &state.ca_rotation {
        Some(rotation) if rotation.next.sha256 == ca_sha256 => rotation,
        _ => return Err(Rejection::NoCaRotation),
    };
    let waiting = rotation.waiting(state);
    if !waiting.is_empty() {
        return Err(Rejection::CaRotationUnfinished { waiting });
    }
    state.ca = state.ca_rotation.take().map(|rotation| rotation.next);
    // They pin the old CA, which joiners would no longer find.
    state.tokens.clear();
    Ok(CommandResult::Applied)
}

/// Refuses what would bring a certificate of the old CA into a rotation: a member joining
/// (its certificate is signed at join) and a new join token (it pins the CA).
pub(super) fn refuse_during_rotation(state: &ClusterState) -> Result<(), Rejection> {
    match &state.ca_rotation {
        Some(rotation) => Err(Rejection::CaRotationInProgress {
            next_sha256: rotation.next.sha256.clone(),
        }),
        None => Ok(()),
    }
}
