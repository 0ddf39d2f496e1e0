//! The safety invariant over every combination of the inputs that matter to it.

use super::*;

/// Every observation in `all`, once with each of `values` applied by `set`.
fn vary<T: Clone>(
    all: Vec<Observation>,
    values: &[T],
    set: fn(Observation, T) -> Observation,
) -> Vec<Observation> {
    all.into_iter()
        .flat_map(|o| values.iter().map(move |v| set(o.clone(), v.clone())))
        .collect()
}

/// Over every combination of lease clock, PostgreSQL state, data dir, database, pause, down
/// time, holder status and synchronous mode: never writable without the lease, and every
/// sentence names me.
#[test]
fn never_two_primaries() {
    let leases = [free(), mine(), expiring(), held_by_other(2), expired(2)];
    let data_dirs = [
        Missing,
        Foreign,
        Initialised { system_id: DB },
        Initialised { system_id: 99 },
    ];
    let holders = [None, Some(primary(P)), Some(replica(P)), Some(stopped(P))];
    let mut all = vec![obs(3)];
    all = vary(all, &leases, Observation::lease);
    all = vary(all, &[0, 1, 2], |o, pg| match pg {
        0 => o,
        1 => o.replica_of(2, P),
        _ => o.primary(),
    });
    all = vary(all, &data_dirs, Observation::data);
    all = vary(all, &[None, Some(DB)], |o, database| Observation {
        database,
        ..o
    });
    all = vary(all, &[false, true], |o, paused| Observation { paused, ..o });
    all = vary(all, &[0, 5, 10], Observation::down_for);
    all = vary(all, &holders, |o, peer| match peer {
        Some(peer) => o.peer(2, peer),
        None => o,
    });
    all = vary(all, &[SynchronousMode::Off, On], Observation::sync_mode);
    // No restore; one I run, every member stopped; one another runs, nobody stopped yet.
    all = vary(
        all,
        &[None, Some((3, true)), Some((2, false))],
        |mut o, restore| {
            o.restore = restore.map(|(runner, stopped)| crate::cluster::Restore {
                id: 1,
                target: crate::cluster::RestoreTarget::Latest,
                runner: n(runner),
                remove_old: false,
                set: None,
                requested_unix: 0,
                stopped: if stopped {
                    (1..=3).map(n).collect()
                } else {
                    Default::default()
                },
            });
            o
        },
    );
    assert_eq!(all.len(), 5 * 3 * 4 * 2 * 2 * 3 * 4 * 2 * 3);
    for o in &all {
        let out = decide(o);
        if let Err(broken) = check_invariants(o, &out) {
            panic!("{broken}\nsentence: {}\nobservation: {o:#?}", out.sentence);
        }
    }
}
