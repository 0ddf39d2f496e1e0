//! `GET /history`: the timeline history in Patroni's shape, one array per promotion, oldest
//! first: `[timeline, lsn, reason, timestamp, new_leader]`, where `timeline` is the one that
//! ended, `lsn` the byte position where it ended (a number, as Patroni gives it), and
//! `timestamp` ISO 8601 in UTC.

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::state::AppState;
use crate::cluster::ClusterState;

pub async fn history(State(state): State<AppState>) -> Json<Value> {
    let view = state.handle.view().borrow().clone();
    Json(Value::Array(rows(&view.state)))
}

/// The history of `state`, each new primary named as the membership names it (its node id
/// when it has been removed since).
pub fn rows(state: &ClusterState) -> Vec<Value> {
    state
        .history
        .iter()
        .map(|s| {
            let at = UNIX_EPOCH + Duration::from_millis(s.at_unix_ms);
            let leader = state.name_of(s.new_primary);
            json!([
                s.timeline,
                s.lsn.0,
                s.reason,
                humantime::format_rfc3339_millis(at).to_string(),
                leader
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NodeId, TimelineSwitch};

    #[test]
    fn each_promotion_is_a_patroni_style_row() {
        let mut state = ClusterState::default();
        state.members.insert(
            NodeId(2),
            crate::cluster::Member {
                id: NodeId(2),
                name: "pg-east".into(),
                peer_addr: String::new(),
                api_addr: String::new(),
                pg_addr: String::new(),
                tags: Default::default(),
            },
        );
        for (timeline, new_primary) in [(1, 2), (2, 7)] {
            state.history.push(TimelineSwitch {
                timeline,
                lsn: "0/3000060".parse().unwrap(),
                reason: "no recovery target specified".into(),
                at_unix_ms: 1_764_992_096_123,
                new_primary: NodeId(new_primary),
                new_timeline: timeline + 1,
            });
        }
        assert_eq!(
            rows(&state),
            [
                json!([
                    1,
                    0x3000060,
                    "no recovery target specified",
                    "2025-12-06T03:34:56.123Z",
                    "pg-east"
                ]),
                json!([
                    2,
                    0x3000060,
                    "no recovery target specified",
                    "2025-12-06T03:34:56.123Z",
                    "7"
                ]),
            ]
        );
    }
}
