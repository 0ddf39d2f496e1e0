//! This member's own record in the cluster state (its addresses, its key pin) and the
//! members' pins the TLS client checks, both kept current from the replicated state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::pg_advertise;
use crate::cluster::{Command, Member};
use crate::config::NodeConfig;
use crate::raft::{self, RaftHandle};
use crate::tls;

/// Keeps this member's record in the cluster state equal to its config: a changed advertise
/// address (or PostgreSQL added to a witness) is proposed once the cluster knows us, and so
/// is this member's key pin if it joined before pins were recorded.
/// How long a member's own key may differ from its pin before it says so: a restarted
/// member's view lags the log for a moment.
const MISMATCH_GRACE: Duration = Duration::from_secs(30);

pub(super) async fn update_member_record(
    handle: RaftHandle,
    config: NodeConfig,
    key_pin: String,
    peers: watch::Receiver<Arc<crate::peers::PeerStatuses>>,
    shutdown: CancellationToken,
) {
    let me = crate::cluster::NodeId(handle.id());
    let mut view = handle.view();
    let (mut pinned, mut updated) = (false, false);
    let started = std::time::Instant::now();
    loop {
        // PinKey only once every other member's binary can apply it (see Command::level).
        let pin = Command::PinKey {
            id: me,
            key_sha256: key_pin.clone(),
        };
        let (current, recorded_pin, all_can_pin) = {
            let view = view.borrow_and_update();
            (
                view.state.member(me).cloned(),
                // The key in rotation counts as this member's own: a rotation interrupted
                // after the switch is ended by `Rotator::finish_interrupted`.
                (view.state.next_keys.get(&me))
                    .filter(|next| **next == key_pin)
                    .or(view.state.keys.get(&me))
                    .cloned(),
                peers.borrow().all_can_apply(&view.state, me, &pin),
            )
        };
        if let Some(member) = current {
            if !pinned {
                match recorded_pin {
                    Some(pin) if pin == key_pin => pinned = true,
                    // Perhaps only until this member has applied the log that a rotation
                    // interrupted by a crash left (see `Rotator::finish_interrupted`).
                    Some(_) if started.elapsed() < MISMATCH_GRACE => {}
                    Some(_) => {
                        tracing::error!(
                            "the cluster has another key pinned for this member than the one in \
                         node.pem: peers will refuse it; restore its state directory or remove \
                         and re-join it"
                        );
                        pinned = true;
                    }
                    None if !all_can_pin => {}
                    None => match handle.propose(pin.clone()).await {
                        Ok(_) => {
                            tracing::info!(
                                "recorded this member's key pin in the cluster (it joined before \
                             pins were recorded)"
                            );
                            pinned = true;
                        }
                        Err(e) => tracing::debug!(error = %e, "recording the key pin; retrying"),
                    },
                }
            }
            if !updated {
                let wanted = Member {
                    peer_addr: config.peer_advertise.clone(),
                    api_addr: config.api_advertise.clone(),
                    pg_addr: pg_advertise(&config),
                    tags: config.tags.clone(),
                    ..member.clone()
                };
                if wanted == member {
                    updated = true;
                } else {
                    match handle
                        .propose(Command::UpdateMember { member: wanted })
                        .await
                    {
                        Ok(_) => {
                            tracing::info!("updated this member's addresses in the cluster");
                            updated = true;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "updating member addresses; retrying")
                        }
                    }
                }
            }
            if pinned && updated {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = view.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The key pins of the cluster state, by node id.
pub(super) fn pins_of(view: &raft::ClusterView) -> BTreeMap<u64, Vec<String>> {
    let state = &view.state;
    (state.keys.keys())
        .filter_map(|&id| Some((id.0, state.accepted_keys(id)?)))
        .collect()
}

/// Keeps `pins` equal to the cluster state's key pins.
pub(super) async fn keep_pins_current(
    mut view: watch::Receiver<Arc<raft::ClusterView>>,
    pins: tls::KeyPins,
    shutdown: CancellationToken,
) {
    loop {
        pins.replace(pins_of(&view.borrow_and_update()));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
    }
}
