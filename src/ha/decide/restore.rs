//! A restore of the whole cluster (`cluster::restore`): while one is under way it takes
//! precedence over every rule but fencing. Each member stops PostgreSQL and puts its data
//! directory away; then the runner alone takes the lease and restores.

use super::*;
use crate::cluster::Restore;

/// What this member does while `restore` is under way.
pub(super) fn restoring(obs: &Observation, restore: &Restore) -> Outcome {
    let id = restore.id;
    let holding = matches!(
        obs.lease_clock,
        LeaseClockView::HeldByMe | LeaseClockView::HeldByMeExpiring
    );
    let runner = restore.runner;
    if !restore.stopped.contains(&obs.me) {
        let put = if restore.remove_old {
            "removing"
        } else {
            "moving aside"
        };
        let text = format!(
            "restore {id} to {} requested: stopping PostgreSQL and {put} my data directory",
            restore.target
        );
        let decision = Decision::StandDown {
            restore: id,
            remove: restore.remove_old,
            release: holding && runner != obs.me,
        };
        return say(obs, decision, text);
    }
    if runner != obs.me {
        if holding {
            let reason = format!(
                "restore {id} is under way and {} restores, not me",
                name(obs, runner)
            );
            let text = format!("{reason}; releasing the lease");
            return say(obs, Decision::ReleaseLease { reason }, text);
        }
        let waiting = restore.waiting_for(&obs.members);
        let text = if waiting.is_empty() {
            format!(
                "restore {id}: {} is restoring to {}; waiting for it to be primary",
                name(obs, runner),
                restore.target
            )
        } else {
            format!(
                "restore {id}: stopped; waiting for {} to stop",
                names(obs, &waiting)
            )
        };
        return say(obs, Decision::Wait, text);
    }
    let waiting = restore.waiting_for(&obs.members);
    if !waiting.is_empty() {
        let text = format!(
            "restore {id}: stopped; I restore once {} stopped",
            names(obs, &waiting)
        );
        return say(obs, Decision::Wait, text);
    }
    match &obs.lease_clock {
        LeaseClockView::HeldByMe => {
            let text = format!(
                "restore {id}: every member stopped; restoring to {} under lease epoch {}",
                restore.target,
                epoch(obs)
            );
            say(obs, Decision::Restore { restore: id }, text)
        }
        LeaseClockView::HeldByMeExpiring => say(
            obs,
            Decision::ReclaimLease,
            format!("restore {id}: renewing my lease before restoring"),
        ),
        LeaseClockView::Free => say(
            obs,
            Decision::AcquireLease { expected: None },
            format!("restore {id}: every member stopped; taking the free lease to restore"),
        ),
        LeaseClockView::Expired { holder, expected } => say(
            obs,
            Decision::AcquireLease {
                expected: Some(*expected),
            },
            format!(
                "restore {id}: every member stopped; taking the lease {} left (epoch {})",
                name(obs, *holder),
                expected.epoch
            ),
        ),
        LeaseClockView::HeldByOther { holder } => say(
            obs,
            Decision::Wait,
            format!(
                "restore {id}: waiting for {} to give up lease epoch {}",
                name(obs, *holder),
                epoch(obs)
            ),
        ),
    }
}

fn names(obs: &Observation, ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| name(obs, *id))
        .collect::<Vec<_>>()
        .join(", ")
}
