//! The synchronous set: the rules wanted for each set of healthy replicas, and the steps
//! from one set to another that keep every acknowledged commit covered.

use super::*;
use crate::cluster::Tags;

fn member(id: u64, nofailover: bool) -> (NodeId, Member) {
    let tags = Tags {
        nofailover,
        ..Tags::default()
    };
    let member = Member {
        id: NodeId(id),
        name: format!("n{id}"),
        peer_addr: String::new(),
        api_addr: String::new(),
        pg_addr: String::new(),
        tags,
    };
    (NodeId(id), member)
}

fn rule(members: &[u64], quorum: u32) -> SyncRule {
    SyncRule {
        members: members.iter().map(|id| NodeId(*id)).collect(),
        quorum,
    }
}

/// (case, mode, strict, count, streaming [(id, lsn)], current, nofailover ids, want)
type Case = (
    &'static str,
    SynchronousMode,
    bool,
    u32,
    Vec<(u64, &'static str)>,
    SyncRule,
    Vec<u64>,
    Option<SyncRule>,
);

#[test]
fn steps_keep_every_acknowledged_commit_covered() {
    let none = SyncRule::none();
    let (a, ab) = (rule(&[2], 1), rule(&[2, 3], 1));
    #[rustfmt::skip]
    // (case, current, wanted, recorded, want)
    type StepCase<'a> = (&'a str, &'a SyncRule, &'a SyncRule, Option<Vec<SyncRule>>, Step);
    let cases: Vec<StepCase> = vec![
        (
            "first rule of a tenure: recorded after none, which blocks failover",
            &none,
            &a,
            None,
            Step::Switch {
                record: Some(vec![none.clone(), a.clone()]),
            },
        ),
        (
            "a change records old and new together",
            &a,
            &ab,
            Some(vec![a.clone()]),
            Step::Switch {
                record: Some(vec![a.clone(), ab.clone()]),
            },
        ),
        (
            "already recorded (a retry after the reload failed): switch only",
            &a,
            &ab,
            Some(vec![a.clone(), ab.clone()]),
            Step::Switch { record: None },
        ),
        (
            "running the wanted rule with older ones recorded: drop them once covered",
            &ab,
            &ab,
            Some(vec![a.clone(), ab.clone()]),
            Step::DropOld,
        ),
        (
            "running and recorded alone: in step",
            &ab,
            &ab,
            Some(vec![ab.clone()]),
            Step::InStep,
        ),
        (
            "no standby and nothing recorded this tenure: failover already blocked",
            &none,
            &none,
            None,
            Step::InStep,
        ),
        (
            "degraded to none: recorded alone once covered",
            &none,
            &none,
            Some(vec![a.clone(), none.clone()]),
            Step::DropOld,
        ),
    ];
    for (case, current, wanted, recorded, want) in cases {
        assert_eq!(
            next_step(current, wanted, recorded.as_deref()),
            want,
            "{case}"
        );
    }
    let flushed: BTreeMap<NodeId, Lsn> = [(NodeId(2), Lsn(100)), (NodeId(3), Lsn(50))]
        .into_iter()
        .collect();
    assert!(covered(&ab, &flushed, Lsn(100)), "one of two at the target");
    assert!(
        !covered(&rule(&[2, 3], 2), &flushed, Lsn(100)),
        "two needed"
    );
    assert!(covered(&none, &flushed, Lsn(1000)), "none needs nobody");
}

#[test]
fn desired_rules() {
    let lsn = |s: &str| s.parse::<Lsn>().unwrap();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("off: no rule", SynchronousMode::Off, false, 1,
            vec![(2, "0/10")], rule(&[], 0), vec![], None),
        ("on: the most advanced standby", SynchronousMode::On, false, 1,
            vec![(2, "0/10"), (3, "0/20")], rule(&[], 0), vec![], Some(rule(&[3], 1))),
        ("on: equal positions, the lower id", SynchronousMode::On, false, 1,
            vec![(2, "0/10"), (3, "0/10")], rule(&[], 0), vec![], Some(rule(&[2], 1))),
        ("on: the current standby is kept while it streams", SynchronousMode::On, false, 1,
            vec![(2, "0/10"), (3, "0/20")], rule(&[2], 1), vec![], Some(rule(&[2], 1))),
        ("on: a current standby that stopped streaming is replaced", SynchronousMode::On,
            false, 1, vec![(3, "0/20")], rule(&[2], 1), vec![], Some(rule(&[3], 1))),
        ("on: two standbys, both confirm", SynchronousMode::On, false, 2,
            vec![(2, "0/10"), (3, "0/20")], rule(&[], 0), vec![], Some(rule(&[2, 3], 2))),
        ("on: asking for two with one streaming gives one", SynchronousMode::On, false, 2,
            vec![(2, "0/10")], rule(&[], 0), vec![], Some(rule(&[2], 1))),
        ("quorum: every streaming standby, one confirms", SynchronousMode::Quorum, false, 1,
            vec![(2, "0/10"), (3, "0/20")], rule(&[], 0), vec![], Some(rule(&[2, 3], 1))),
        ("quorum: count above the standbys is capped", SynchronousMode::Quorum, false, 3,
            vec![(2, "0/10"), (3, "0/20")], rule(&[], 0), vec![], Some(rule(&[2, 3], 2))),
        ("nofailover members are never synchronous", SynchronousMode::Quorum, false, 1,
            vec![(2, "0/10"), (3, "0/20")], rule(&[], 0), vec![3], Some(rule(&[2], 1))),
        ("no standby streams: degraded to none", SynchronousMode::Quorum, false, 1,
            vec![], rule(&[2, 3], 1), vec![], Some(rule(&[], 0))),
        ("no standby streams, strict: wait for any eligible member", SynchronousMode::On,
            true, 1, vec![], rule(&[2], 1), vec![3], Some(rule(&[2], 1))),
        ("strict with no eligible member at all: none", SynchronousMode::Quorum, true, 1,
            vec![], rule(&[], 0), vec![2, 3], Some(rule(&[], 0))),
        ("a streaming non-member is ignored", SynchronousMode::Quorum, false, 1,
            vec![(2, "0/10"), (9, "0/20")], rule(&[], 0), vec![], Some(rule(&[2], 1))),
        ("the primary itself is never listed", SynchronousMode::Quorum, false, 1,
            vec![(1, "0/10"), (2, "0/20")], rule(&[], 0), vec![], Some(rule(&[2], 1))),
    ];
    for (case, mode, strict, count, streaming, current, nofailover, want) in cases {
        let config = DynamicConfig {
            synchronous_mode: mode,
            synchronous_mode_strict: strict,
            synchronous_node_count: count,
            ..DynamicConfig::default()
        };
        let members = (1..=3)
            .map(|id| member(id, nofailover.contains(&id)))
            .collect();
        let streaming = streaming
            .into_iter()
            .map(|(id, at)| (NodeId(id), lsn(at)))
            .collect();
        let got = desired_rule(&config, NodeId(1), &members, &streaming, &current);
        assert_eq!(got, want, "{case}");
    }
}
