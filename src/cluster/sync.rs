//! The recorded synchronous set (DESIGN §2, §3): what the primary promises about where its
//! acknowledged commits are, so that a failover never promotes a member that may lack one.
//!
//! A [`SyncRule`] `(members, quorum)` says: *every commit acknowledged under it is on at
//! least `quorum` of `members`* (PostgreSQL's `ANY quorum (members)`). The primary keeps a
//! list of rules in Raft such that every acknowledged commit is covered by at least one of
//! them; while it changes PostgreSQL from one rule to another both are recorded.
//!
//! A candidate may take over only if, for **every** recorded rule, at least
//! `members - quorum + 1` of its members answered with a status taken after the old primary
//! stopped being writable, and the candidate's WAL position is at least that of each of them.
//! Any `quorum` members intersect any `members - quorum + 1`, so for each acknowledged commit
//! some answering member has it, and so does the candidate. A rule with `quorum` 0 (no
//! synchronous standby, "degraded") can never be satisfied: it blocks automatic failover
//! until the primary has recorded a rule that covers everything again.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::lease::Epoch;
use super::member::NodeId;

/// Every commit acknowledged under this rule is on at least `quorum` of `members`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyncRule {
    pub members: BTreeSet<NodeId>,
    pub quorum: u32,
}

impl SyncRule {
    /// No synchronous standby: commits are acknowledged by the primary alone. Recorded, it
    /// blocks failover (nothing is known about where commits are).
    pub fn none() -> SyncRule {
        SyncRule::default()
    }

    /// How many of `members` must answer for a failover to be safe under this rule;
    /// `None` when no number suffices (`quorum` 0 or larger than the set).
    pub fn needed_answers(&self) -> Option<usize> {
        let n = self.members.len();
        let q = self.quorum as usize;
        (q >= 1 && q <= n).then(|| n - q + 1)
    }

    /// PostgreSQL's `synchronous_standby_names` for this rule, each member named by
    /// `name(id)` (its `application_name`); `None` when there is no synchronous standby.
    pub fn standby_names(&self, name: impl Fn(NodeId) -> String) -> Option<String> {
        if self.members.is_empty() || self.quorum == 0 {
            return None;
        }
        let names: Vec<String> = self.members.iter().map(|id| name(*id)).collect();
        Some(format!("ANY {} ({})", self.quorum, names.join(", ")))
    }
}

impl fmt::Display for SyncRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.members.is_empty() || self.quorum == 0 {
            return write!(f, "no synchronous standby");
        }
        let ids: Vec<String> = self.members.iter().map(|id| id.to_string()).collect();
        write!(f, "ANY {} of nodes [{}]", self.quorum, ids.join(", "))
    }
}

/// The rules recorded by the holder of lease `epoch`. Rules recorded in an earlier tenure
/// say nothing about what the current primary has acknowledged since it was promoted: see
/// [`SyncState::rules_for`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyncState {
    pub epoch: Epoch,
    pub rules: Vec<SyncRule>,
}

impl SyncState {
    /// The rules a failover must satisfy when the current (or last) lease epoch is
    /// `current`: the recorded ones, plus [`SyncRule::none`] if they were recorded in an
    /// earlier tenure, because the primary of `current` may have acknowledged commits on
    /// its own since its promotion.
    pub fn rules_for(state: Option<&SyncState>, current: Epoch) -> Vec<SyncRule> {
        match state {
            None => Vec::new(),
            Some(s) if s.epoch == current => s.rules.clone(),
            Some(s) => {
                let mut rules = s.rules.clone();
                if !rules.contains(&SyncRule::none()) {
                    rules.push(SyncRule::none());
                }
                rules
            }
        }
    }
}
