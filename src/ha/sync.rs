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
