//! Which synchronous rule the primary wants PostgreSQL to run (pure; the executor records it
//! in Raft and applies it in the order `cluster::sync` requires).

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{DynamicConfig, Member, NodeId, SyncRule, SynchronousMode};
use crate::postgres::Lsn;

/// The rule the primary `me` should run, from the standbys that stream from it now
/// (`streaming`: member → flushed position). `None` in asynchronous mode.
///
/// - `on`: `synchronous_node_count` standbys, each confirming every commit; the ones already
///   synchronous (`current`) are kept while they stream, so the set does not flap.
/// - `quorum`: every streaming standby, `synchronous_node_count` of them confirming.
/// - No eligible standby streams: `strict` waits for any eligible member (commits block
///   until one is back); otherwise commits are acknowledged by the primary alone and the
///   recorded rule blocks automatic failover until a standby is synchronous again.
///
/// Members tagged `nofailover` (or with `failover_priority` 0) are never synchronous: a
/// commit only they hold could not be promoted.
pub fn desired_rule(
    config: &DynamicConfig,
    me: NodeId,
    members: &BTreeMap<NodeId, Member>,
    streaming: &BTreeMap<NodeId, Lsn>,
    current: &SyncRule,
) -> Option<SyncRule> {
    let eligible = |id: &NodeId| {
        *id != me
            && members
                .get(id)
                .is_some_and(|m| !m.tags.nofailover && m.tags.failover_priority > 0)
    };
    let count = config.synchronous_node_count.max(1) as usize;
    let candidates: Vec<(NodeId, Lsn)> = streaming
        .iter()
        .filter(|(id, _)| eligible(id))
        .map(|(id, lsn)| (*id, *lsn))
        .collect();
    let chosen: BTreeSet<NodeId> = match config.synchronous_mode {
        SynchronousMode::Off => return None,
        SynchronousMode::On => {
            let mut ranked = candidates;
            // Current members first, then the most advanced, then the lowest id.
            ranked.sort_by_key(|(id, lsn)| {
                (!current.members.contains(id), std::cmp::Reverse(*lsn), *id)
            });
            ranked.into_iter().take(count).map(|(id, _)| id).collect()
        }
        SynchronousMode::Quorum => candidates.into_iter().map(|(id, _)| id).collect(),
    };
    if chosen.is_empty() {
        if !config.synchronous_mode_strict {
            return Some(SyncRule::none());
        }
        let all: BTreeSet<NodeId> = members.keys().copied().filter(eligible).collect();
        if all.is_empty() {
            return Some(SyncRule::none());
        }
        return Some(SyncRule {
            members: all,
            quorum: 1,
        });
    }
    let quorum = match config.synchronous_mode {
        SynchronousMode::On => chosen.len(),
        _ => count.min(chosen.len()),
    };
    Some(SyncRule {
        members: chosen,
        quorum: quorum as u32,
    })
}

/// The primary's next step towards running `wanted` with it alone recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// PostgreSQL runs `wanted` and the record says so (or nothing needs recording).
    InStep,
    /// Switch PostgreSQL to `wanted`, after recording `record` if it is `Some`: the rules
    /// of the record plus the one in force and the new one, so every acknowledged commit
    /// stays covered while the switch happens. A tenure's first record also keeps
    /// [`SyncRule::none`], which blocks failover until the new rule covers everything.
    Switch { record: Option<Vec<SyncRule>> },
    /// PostgreSQL runs `wanted` but older rules are still recorded: record `wanted` alone
    /// once `quorum` of its members have flushed past every commit acknowledged before.
    DropOld,
}

/// What to do next, given the rule PostgreSQL runs (`current`), the one wanted and the
/// rules recorded in this tenure (`None`: nothing recorded yet in this epoch).
pub fn next_step(current: &SyncRule, wanted: &SyncRule, recorded: Option<&[SyncRule]>) -> Step {
    if current != wanted {
        let mut rules = recorded.map_or_else(|| vec![SyncRule::none()], <[_]>::to_vec);
        for rule in [current, wanted] {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
        let record = (recorded != Some(rules.as_slice())).then_some(rules);
        return Step::Switch { record };
    }
    match recorded {
        Some(rules) if rules == std::slice::from_ref(wanted) => Step::InStep,
        // Nothing recorded in this tenure already blocks failover (`SyncState::rules_for`).
        None if *wanted == SyncRule::none() => Step::InStep,
        _ => Step::DropOld,
    }
}

/// Whether `quorum` members of `wanted` have flushed to `target` (`flushed`: member →
/// flushed position, as the primary's `pg_stat_replication` shows it).
pub fn covered(wanted: &SyncRule, flushed: &BTreeMap<NodeId, Lsn>, target: Lsn) -> bool {
    let caught_up = wanted
        .members
        .iter()
        .filter(|id| flushed.get(id).is_some_and(|f| *f >= target))
        .count();
    caught_up >= wanted.quorum as usize
}

#[cfg(test)]
mod tests {
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
}
