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
mod tests;
