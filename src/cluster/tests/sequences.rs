//! Properties over sequences of commands.

use super::*;

#[test]
fn node_ids_are_never_reused_after_removal() {
    let mut s = state().with_token(token("t", 10));
    let mut seen = vec![NodeId(1)];
    for round in 0..4 {
        let name = format!("db{round}");
        let CommandResult::MemberRegistered { id } = apply(&mut s, &register(&name)) else {
            panic!("round {round}: registration of {name} was refused");
        };
        assert!(!seen.contains(&id), "id {id} was handed out twice");
        seen.push(id);
        assert_eq!(
            apply(&mut s, &Command::RemoveMember { id }),
            CommandResult::Applied
        );
    }
    assert_eq!(seen, [1, 2, 3, 4, 5].map(NodeId));
}

#[test]
fn epoch_strictly_increases_across_acquire_release_and_takeover() {
    let mut s = state().with_member(2).with_member(3);
    let mut epochs = Vec::new();
    let mut grant = |s: &mut ClusterState, command: Command| match apply(s, &command) {
        CommandResult::Lease { lease } => epochs.push(lease.epoch),
        other => panic!("{command:?} was not granted: {other:?}"),
    };
    grant(&mut s, acquire(1, None));
    assert!(!apply(&mut s, &renew(1, 1)).is_rejected());
    grant(&mut s, acquire(2, at(1, 1))); // takeover after ttl without renewal
    assert!(
        apply(&mut s, &renew(1, 1)).is_rejected(),
        "the old holder is fenced"
    );
    assert_eq!(apply(&mut s, &release(2, 2)), CommandResult::Applied);
    grant(&mut s, acquire(2, None)); // same node again after a release
    assert!(!apply(&mut s, &Command::RemoveMember { id: NodeId(2) }).is_rejected());
    grant(&mut s, acquire(3, None)); // holder removed
    grant(&mut s, acquire(3, at(4, 0))); // same holder re-acquires
    assert_eq!(epochs, [1, 2, 3, 4, 5].map(Epoch));
    assert_eq!(s.last_epoch, Epoch(5));
}

/// A small deterministic generator, so the sequence is "random" but reproducible.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn arbitrary_command(rng: &mut Lcg, s: &ClusterState) -> Command {
    // Mostly current members, sometimes removed or never-allocated ids.
    let ids: Vec<u64> = s.members.keys().map(|id| id.0).collect();
    let mut node = || match rng.below(5) {
        0 => rng.below(s.next_node_id + 1),
        _ if ids.is_empty() => 1,
        _ => ids[rng.below(ids.len() as u64) as usize],
    };
    let (a, b) = (node(), node());
    let current = s.lease.map(|l| l.as_ref_point());
    match rng.below(20) {
        0 => Command::RemoveMember { id: NodeId(a) },
        1..=2 => register(&format!("db{}", rng.below(8))),
        3 => Command::CreateToken {
            token: token("t", rng.below(3) as u32),
        },
        4..=8 => acquire(a, if rng.below(3) == 0 { None } else { current }),
        9..=13 => renew(a, s.last_epoch.0 - rng.below(2).min(s.last_epoch.0)),
        14..=15 => release(a, s.last_epoch.0),
        16..=17 => Command::RequestSwitchover {
            switchover: switchover(a, Some(b).filter(|_| rng.below(2) == 0)),
        },
        _ => Command::ClearSwitchover,
    }
}

#[test]
fn apply_is_deterministic_and_keeps_invariants_over_a_long_sequence() {
    let mut rng = Lcg(42);
    let start = || state().with_member(2).with_member(3);
    let (mut a, mut b) = (start(), start());
    let (mut grants, mut registrations) = (0, 0);
    let mut last_granted = Epoch(0);
    for step in 0..2_000 {
        let command = arbitrary_command(&mut rng, &a);
        let before = json(&a);
        let result = apply(&mut a, &command);
        assert_eq!(apply(&mut b, &command), result, "step {step}: {command:?}");
        assert_eq!(
            json(&a),
            json(&b),
            "step {step}: states diverged after {command:?}"
        );
        if result.is_rejected() {
            assert_eq!(
                json(&a),
                before,
                "step {step}: rejected {command:?} changed state"
            );
        }
        if let Some(lease) = a.lease {
            assert!(
                a.member(lease.holder).is_some(),
                "step {step}: holder is not a member"
            );
            assert_eq!(lease.epoch, a.last_epoch, "step {step}");
        }
        registrations += matches!(result, CommandResult::MemberRegistered { .. }) as u32;
        if let CommandResult::Lease { lease } = result {
            if lease.seq == 0 {
                grants += 1;
                assert!(
                    lease.epoch > last_granted,
                    "step {step}: epoch did not grow"
                );
                last_granted = lease.epoch;
            }
        }
        assert!(
            a.members.keys().all(|id| id.0 < a.next_node_id),
            "step {step}"
        );
    }
    assert!(
        grants > 50 && registrations > 5,
        "sequence too tame: {grants} grants, {registrations} registrations"
    );
}
