//! The timeline history (Patroni's `/history`): one entry per promotion, recorded by the new
//! primary from the history file PostgreSQL wrote, so that an operator can see when each
//! timeline ended, where, why and who took over.

use serde::{Deserialize, Serialize};

use super::member::NodeId;
use crate::postgres::Lsn;

/// How many entries the replicated state keeps; older ones are dropped first. Enough for
/// years of failovers, small enough for every snapshot.
pub const KEPT: usize = 1000;

/// The end of one timeline and the start of the next.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TimelineSwitch {
    /// The timeline that ended (the parent of `new_timeline`).
    pub timeline: u32,
    /// Where it ended: the first position of `new_timeline`.
    pub lsn: Lsn,
    /// PostgreSQL's reason, as in the history file ("no recovery target specified").
    pub reason: String,
    /// When PostgreSQL wrote the new timeline's history file (Unix milliseconds), as the new
    /// primary's clock says.
    pub at_unix_ms: u64,
    /// The member promoted onto `new_timeline`.
    pub new_primary: NodeId,
    pub new_timeline: u32,
}

/// Adds `switch` to `history` unless an entry for its timeline or a later one is there
/// already (a repeated record, or a stale one); keeps the newest [`KEPT`]. Returns whether
/// it was added.
pub fn record(history: &mut Vec<TimelineSwitch>, switch: &TimelineSwitch) -> bool {
    if history
        .iter()
        .any(|s| s.new_timeline >= switch.new_timeline)
    {
        return false;
    }
    history.push(switch.clone());
    let excess = history.len().saturating_sub(KEPT);
    history.drain(..excess);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(timeline: u32, new_timeline: u32) -> TimelineSwitch {
        TimelineSwitch {
            timeline,
            lsn: Lsn(u64::from(new_timeline) << 24),
            reason: "no recovery target specified".into(),
            at_unix_ms: u64::from(new_timeline),
            new_primary: NodeId(2),
            new_timeline,
        }
    }

    #[test]
    fn a_switch_is_recorded_once_in_timeline_order_and_the_oldest_go_first() {
        let mut history = Vec::new();
        assert!(record(&mut history, &switch(1, 2)));
        assert!(!record(&mut history, &switch(1, 2)), "a repeated record");
        // A reserved timeline may skip IDs (2 -> 4); an older record arriving late is stale.
        assert!(record(&mut history, &switch(2, 4)));
        assert!(
            !record(&mut history, &switch(2, 3)),
            "older than the newest"
        );
        assert_eq!(
            history.iter().map(|s| s.new_timeline).collect::<Vec<_>>(),
            [2, 4]
        );
        for tl in 5..(5 + KEPT as u32) {
            assert!(record(&mut history, &switch(tl - 1, tl)));
        }
        assert_eq!(history.len(), KEPT);
        assert_eq!(history[0].new_timeline, 5, "the two oldest were dropped");
    }
}
