//! The restore rule: every member stands down, then only the runner acts, under the lease.

use super::*;
use crate::cluster::{Restore, RestoreTarget};

/// Restore 4 to latest, run by `runner`, with `stopped` reported.
fn restoring(mut o: Observation, runner: u64, stopped: &[u64]) -> Observation {
    o.restore = Some(Restore {
        id: 4,
        target: RestoreTarget::Latest,
        runner: n(runner),
        remove_old: false,
        set: None,
        requested_unix: 0,
        stopped: stopped.iter().map(|id| n(*id)).collect(),
    });
    o
}

fn stand_down(release: bool) -> Decision {
    D::StandDown {
        restore: 4,
        remove: false,
        release,
    }
}

#[test]
fn a_restore_stops_every_member_then_its_runner_restores_under_the_lease() {
    let all = [1, 2, 3];
    #[rustfmt::skip]
    let cases: Vec<(&str, Observation, Decision, &str)> = vec![
        ("the writable holder stands down (it releases the lease once stopped)",
            restoring(obs(1).primary().lease(mine()), 2, &[]),
            stand_down(true), "restore 4 to latest (the end of the archive) requested: stopping PostgreSQL and moving aside"),
        ("a replica stands down",
            restoring(obs(2).replica_of(1, P).lease(held_by_other(1)), 2, &[]),
            stand_down(false), "moving aside my data directory"),
        ("a member without data still reports",
            restoring(obs(3).data(Missing).lease(held_by_other(1)), 2, &[1]),
            stand_down(false), "requested"),
        ("with --force the data directory is removed",
            { let mut o = restoring(obs(3).lease(free()), 2, &[]); o.restore.as_mut().unwrap().remove_old = true; o },
            D::StandDown { restore: 4, remove: true, release: false }, "removing my data directory"),
        ("the holder that runs the restore keeps its lease",
            restoring(obs(2).primary().lease(mine()), 2, &[]),
            stand_down(false), "requested"),
        ("writable without the lease is fenced first, restore or not",
            restoring(obs(3).primary().lease(held_by_other(1)), 2, &[]),
            D::Fence { follow: Some(n(1)) }, "fencing"),
        ("a stopped member that is not the runner gives up a lease it still holds",
            restoring(obs(1).data(Missing).lease(mine()), 2, &[1]),
            release("restore 4 is under way and n2 restores, not me"), "releasing the lease"),
        ("a stopped member waits for the others",
            restoring(obs(3).data(Missing).lease(free()), 2, &[3]),
            D::Wait, "waiting for n1, n2 to stop"),
        ("a stopped member waits for the runner",
            restoring(obs(3).data(Missing).lease(held_by_other(2)), 2, &all),
            D::Wait, "n2 is restoring to latest"),
        ("the runner waits until every member stopped",
            restoring(obs(2).data(Missing).lease(free()), 2, &[2, 3]),
            D::Wait, "I restore once n1 stopped"),
        ("the runner takes the free lease",
            restoring(obs(2).data(Missing).lease(free()), 2, &all),
            D::AcquireLease { expected: None }, "taking the free lease to restore"),
        ("the runner takes an expired lease",
            restoring(obs(2).data(Missing).lease(expired(1)), 2, &all),
            D::AcquireLease { expected: seen() }, "taking the lease n1 left"),
        ("the runner waits while another still holds the lease",
            restoring(obs(2).data(Missing).lease(held_by_other(1)), 2, &all),
            D::Wait, "waiting for n1 to give up lease epoch 7"),
        ("the runner renews an expiring lease before restoring",
            restoring(obs(2).data(Missing).lease(expiring()), 2, &all),
            D::ReclaimLease, "renewing my lease before restoring"),
        ("the runner restores under a fresh lease",
            restoring(obs(2).data(Missing).lease(mine()), 2, &all),
            D::Restore { restore: 4 }, "every member stopped; restoring to latest"),
        ("a paused cluster restores too (the operator asked)",
            restoring(obs(2).data(Missing).lease(mine()).paused(), 2, &all),
            D::Restore { restore: 4 }, "restoring"),
        ("a witness is not waited for",
            { let mut o = restoring(obs(2).data(Missing).lease(mine()), 2, &[1, 2]);
              o.members.get_mut(&n(3)).unwrap().pg_addr.clear(); o },
            D::Restore { restore: 4 }, "restoring"),
    ];
    check_table(&cases);
}
